"""Operations CLI: `flask --app wsgi <group> <command>` (SPEC §9.1).

Every failure is one line (click's `Error: …`) and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import secrets
import time

import click
from flask import Flask, current_app

from app.auth.credentials import CredentialError
from app.auth.oauth import RefreshError, authorize_url, oauth_fields, pkce_pair
from app.auth.status import INVALID, credential_states
from app.commandline import Group
from app.domain import normalise_domain
from app.redact import mask_secret

credentials = Group("credentials", help="Inspect and manage per-domain credential files.")
keys = Group("keys", help="Client keys callers present when ENABLE_CLIENT_AUTH is on.")


def _access():
    return current_app.extensions["nexus.access"]


@credentials.command("status")
def credentials_status() -> None:
    """Print each domain's credential state (valid, expiring, expired, invalid, ...)."""
    store = _access().store
    states = credential_states(store)
    click.echo(f"Credential files in {store.directory.resolve()}:")
    if not states:
        click.echo("  none: every domain is in passthrough mode (clients send their own key)")
    for state in states:
        click.echo(f"  {state.line()}")
    if any(state.state == INVALID for state in states):
        raise SystemExit(1)


@credentials.command("oauth-login")
@click.argument("domain")
@click.option("--account-id", help="Account name to record (default: kept, or the login's).")
def oauth_login(domain: str, account_id: str | None) -> None:
    """Log in with a Claude Pro/Max account and store its OAuth tokens for DOMAIN."""
    domain = normalise_domain(domain)  # as a request's Host would be
    access = _access()
    path = _checked_path(domain)
    endpoint = access.refresher.endpoint
    verifier, challenge = pkce_pair()
    state = secrets.token_urlsafe(16)
    click.echo("Open this URL, log in, and paste the code shown at the end:\n")
    click.echo(authorize_url(endpoint.client_id, challenge, state) + "\n")
    pasted = click.prompt("Code", hide_input=False).strip()
    code, _, pasted_state = pasted.partition("#")
    if pasted_state and pasted_state != state:
        raise click.ClickException("The pasted code belongs to another login attempt; start "
                                   "again.")
    try:
        tokens = endpoint.exchange_code(code, pasted_state or state, verifier)
    except RefreshError as err:
        raise click.ClickException(f"Login failed: {err}.") from None

    def change(data: dict) -> dict:
        data["type"] = "oauth"
        data.pop("api_key", None)
        data["oauth"] = oauth_fields(tokens, data.get("oauth"))
        data["oauth"].setdefault("isMax", True)
        login_account = (tokens.get("account") or {}).get("uuid")
        data["accountId"] = account_id or data.get("accountId") or login_account or domain
        return data

    credential = _update(domain, change)
    click.echo(f"Saved OAuth credentials for {domain} in {path} (account "
               f"{credential.account_id}, token {mask_secret(credential.access_token)}).")


@credentials.command("oauth-refresh")
@click.argument("domain")
def oauth_refresh(domain: str) -> None:
    """Refresh DOMAIN's OAuth token now, whatever its expiry."""
    domain = normalise_domain(domain)  # as a request's Host would be
    _checked_path(domain)
    try:
        credential = _access().refresher.refresh(domain, force=True)
    except CredentialError as err:
        raise click.ClickException(err.message) from None
    expires = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(credential.expires_at or 0))
    click.echo(f"Refreshed {domain}: token {mask_secret(credential.access_token)} valid until "
               f"{expires}.")


@keys.command("generate")
@click.argument("domain")
@click.option("--force", is_flag=True, help="Replace an existing client key.")
def keys_generate(domain: str, force: bool) -> None:
    """Create a client key for DOMAIN and write it into the domain's credential file."""
    domain = normalise_domain(domain)  # as a request's Host would be
    path = _checked_path(domain)
    key = "cnp_live_" + secrets.token_urlsafe(32)

    def change(data: dict) -> dict:
        if data.get("client_api_key") and not force:
            raise click.ClickException(f"{path} already has a client key; use --force to "
                                       "replace it (callers using the old key will get 401).")
        data["client_api_key"] = key
        return data

    _update(domain, change)
    click.echo(f"Client key for {domain} (written to {path}; shown only now):\n{key}")


def _checked_path(domain: str):
    try:
        return _access().store.path_for(domain)
    except CredentialError as err:
        raise click.ClickException(err.message) from None


def _update(domain: str, change):
    try:
        return _access().store.update(domain, change)
    except CredentialError as err:
        raise click.ClickException(err.message) from None
    except OSError as err:
        raise click.ClickException(f"Cannot write the credential file: {err}") from None


def init_app(app: Flask) -> None:
    app.cli.add_command(credentials)
    app.cli.add_command(keys)
