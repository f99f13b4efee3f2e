"""Who may call, and with which Claude credential the request goes upstream (SPEC §4.3).

Three modes: passthrough (no credential file: the client's own key or OAuth token is forwarded),
domain credential (the file's key or token replaces the client's), and client auth on top of
either (`ENABLE_CLIENT_AUTH`: callers present the domain's `client_api_key`, which never leaves
the proxy).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from app.auth.credentials import API_KEY, OAUTH, Credential, CredentialStore
from app.auth.oauth import TokenRefresher
from app.errors import AuthenticationFailed
from app.proxy.headers import OAUTH_BETA, header_value

PASSTHROUGH = "passthrough"
DOMAIN_CREDENTIAL = "domain_credential"


@dataclass
class Authorisation:
    """How to change the request's credentials on the way upstream."""

    mode: str
    account_id: str | None
    drop_client_credentials: bool = False
    credential_headers: list[tuple[str, str]] = field(default_factory=list)
    add_betas: list[str] = field(default_factory=list)


def presented_key(headers: list[tuple[str, str]]) -> str | None:
    """The credential a client sent: `x-api-key`, else an `Authorization: Bearer` token."""
    key = header_value(headers, "x-api-key")
    if key:
        return key.strip()
    authorization = header_value(headers, "authorization") or ""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def account_from_body(body: Any) -> str | None:
    """Claude Code's account: `metadata.user_id` is a JSON string holding `account_uuid`."""
    if not isinstance(body, dict) or not isinstance(body.get("metadata"), dict):
        return None
    user_id = body["metadata"].get("user_id")
    if not isinstance(user_id, str) or not user_id.startswith("{"):
        return None
    try:
        account = json.loads(user_id).get("account_uuid")
    except (ValueError, AttributeError):
        return None
    return account if isinstance(account, str) and account else None


def key_account(key: str) -> str:
    """A stable account name for a key, revealing nothing of it."""
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:8]


class Access:
    """Decides each request's Authorisation from the domain's credential file and settings."""

    def __init__(self, store: CredentialStore, refresher: TokenRefresher, client_auth: bool):
        self.store = store
        self.refresher = refresher
        self.client_auth = client_auth

    def admit(self, domain: str, headers: list[tuple[str, str]]) -> Credential | None:
        """Check the caller (client auth) before the body is read; returns the credential."""
        credential = self.store.get(domain)
        if not self.client_auth:
            return credential
        path = self.store.path_for(domain)
        if credential is None or not credential.client_api_key:
            raise AuthenticationFailed(
                f"Client authentication is on and {path} has no client_api_key; run "
                f"`flask --app wsgi keys generate {domain}` and give the key to your clients.")
        given = presented_key(headers)
        if not given:
            raise AuthenticationFailed(
                "This proxy requires a client key: send the domain's client_api_key as "
                "x-api-key or Authorization: Bearer.")
        if not hmac.compare_digest(given.encode(), credential.client_api_key.encode()):
            raise AuthenticationFailed("Invalid client key for this domain.")
        return credential

    def authorise(self, domain: str, headers: list[tuple[str, str]], body: Any,
                  credential: Credential | None) -> Authorisation:
        """The upstream credential for this request (refreshing an OAuth token if due)."""
        if credential is not None and credential.type == API_KEY:
            return Authorisation(DOMAIN_CREDENTIAL, credential.account_id,
                                 drop_client_credentials=True,
                                 credential_headers=[("x-api-key", credential.api_key)])
        if credential is not None and credential.type == OAUTH:
            credential = self.refresher.fresh(credential)
            return Authorisation(DOMAIN_CREDENTIAL, credential.account_id,
                                 drop_client_credentials=True,
                                 credential_headers=[("Authorization",
                                                      f"Bearer {credential.access_token}")],
                                 add_betas=[OAUTH_BETA])
        if self.client_auth:
            # The client's key was the proxy's client key: it must not go upstream, and the
            # file holds no Claude credential to use instead.
            raise AuthenticationFailed(
                f"{self.store.path_for(domain)} has a client_api_key but no Claude credential; "
                "add an api_key or run `flask --app wsgi credentials oauth-login "
                f"{domain}`.")
        key = presented_key(headers)
        if not key:
            raise AuthenticationFailed(
                "No credentials: send your Anthropic API key as x-api-key (or an OAuth token as "
                f"Authorization: Bearer), or create {self.store.path_for(domain)} so that the "
                "proxy supplies one.")
        return Authorisation(PASSTHROUGH, account_from_body(body) or key_account(key))
