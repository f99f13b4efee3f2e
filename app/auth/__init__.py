"""Credentials and authentication: credential files, OAuth refresh, client keys (SPEC §4)."""

from __future__ import annotations

import logging

from flask import Flask

from app.auth.access import Access
from app.auth.credentials import CredentialStore
from app.auth.oauth import TokenEndpoint, TokenRefresher
from app.auth.status import credential_states

log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    """Create the process's credential store, token refresher and access rules."""
    settings = app.config["NEXUS_SETTINGS"]
    store = CredentialStore(settings.credentials_dir)
    endpoint = TokenEndpoint(settings.claude_oauth_token_url, settings.claude_oauth_client_id)
    refresher = TokenRefresher(store, endpoint, app.extensions["nexus.events"].publish,
                               lock_dsn=_postgres_dsn(settings.database_url))
    app.extensions["nexus.access"] = Access(store, refresher, settings.enable_client_auth)


def log_credential_states(app: Flask) -> None:
    """One line per credential file, when a server starts (not on every CLI command)."""
    store = app.extensions["nexus.access"].store
    states = credential_states(store)
    if not states:
        log.info("credentials: no files in %s; every domain is in passthrough mode",
                 store.directory.resolve())
    for state in states:
        log.info("credentials: %s", state.line())


def _postgres_dsn(database_url: str) -> str | None:
    """Refreshes also lock in PostgreSQL when processes on several machines share it."""
    if database_url.startswith(("postgres://", "postgresql://")):
        return database_url
    return None
