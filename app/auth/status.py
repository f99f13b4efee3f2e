"""The state of each credential file, for `credentials status` and the start-up log."""

from __future__ import annotations

import time
from dataclasses import dataclass

from app.auth.credentials import API_KEY, OAUTH, CredentialError, CredentialStore
from app.redact import mask_secret

EXPIRING_S = 3600  # "expiring" when less than an hour is left

VALID = "valid"
EXPIRING = "expiring"
EXPIRED = "expired"
NO_REFRESH_TOKEN = "missing refresh token"
INVALID = "invalid"
CLIENT_KEY_ONLY = "client key only"


@dataclass(frozen=True)
class CredentialState:
    domain: str
    state: str
    detail: str

    def line(self) -> str:
        return f"{self.domain}: {self.state} ({self.detail})"


def credential_states(store: CredentialStore, now: float | None = None) -> list[CredentialState]:
    """One state per credential file in the directory, sorted by domain."""
    now = now or time.time()
    states = []
    for domain in store.domains():
        try:
            credential = store.get(domain)
        except CredentialError as err:
            states.append(CredentialState(domain, INVALID, err.message))
            continue
        if credential is None:  # removed while listing
            continue
        account = f"account {credential.account_id or 'unnamed'}"
        if credential.type == API_KEY:
            states.append(CredentialState(domain, VALID,
                                          f"api_key {mask_secret(credential.api_key)}, {account}"))
        elif credential.type == OAUTH:
            states.append(_oauth_state(domain, credential, account, now))
        else:
            states.append(CredentialState(domain, CLIENT_KEY_ONLY,
                                          "callers' own Claude credentials are forwarded"))
    return states


def _oauth_state(domain, credential, account, now) -> CredentialState:
    expires = credential.expires_at
    if expires is None:
        return CredentialState(domain, VALID, f"oauth without expiry, {account}")
    left = expires - now
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
    if not credential.refresh_token:
        state = EXPIRED if left <= 0 else NO_REFRESH_TOKEN
        return CredentialState(domain, state, f"oauth expires {when}, no refresh token, {account}")
    if left <= 0:
        return CredentialState(domain, EXPIRED, f"oauth expired {when}, refreshed on next use, "
                                                f"{account}")
    state = EXPIRING if left < EXPIRING_S else VALID
    return CredentialState(domain, state, f"oauth expires {when}, {account}")
