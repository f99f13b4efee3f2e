"""Claude OAuth: token refresh (one at a time per credential, across greenlets and processes)
and the PKCE login used by `credentials oauth-login`."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import requests

from app.auth.credentials import Credential, CredentialError, CredentialStore
from app.auth.locks import AdvisoryLock, FileLock, LockTimeout
from app.events import OAuthRefreshFailed

log = logging.getLogger(__name__)

FAILURE_BACKOFF_S = 5.0
# A request whose token is still valid waits at most this long (after the refresh began) for a
# refresh; past it, it is sent with the current token while the refresh goes on.
REFRESH_WAIT_S = 2.0
AUTHORIZE_URL = "https://claude.ai/oauth/authorize"
REDIRECT_URI = "https://console.anthropic.com/oauth/code/callback"
SCOPES = "org:create_api_key user:profile user:inference"


class RefreshError(Exception):
    """The token endpoint refused or could not be reached; the message says why."""


def login_hint(domain: str) -> str:
    return f"run `flask --app wsgi credentials oauth-login {domain}` to log in again"


class TokenEndpoint:
    """Calls CLAUDE_OAUTH_TOKEN_URL (refresh and authorization-code grants)."""

    def __init__(self, url: str, client_id: str, timeout: float = 30.0):
        self.url = url
        self.client_id = client_id
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # no netrc credentials or env proxies slipped in

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        return self._post({"grant_type": "refresh_token", "refresh_token": refresh_token,
                           "client_id": self.client_id})

    def exchange_code(self, code: str, state: str, verifier: str) -> dict[str, Any]:
        return self._post({"grant_type": "authorization_code", "code": code, "state": state,
                           "client_id": self.client_id, "redirect_uri": REDIRECT_URI,
                           "code_verifier": verifier})

    def _post(self, payload: dict[str, str]) -> dict[str, Any]:
        try:
            response = self.session.post(self.url, json=payload, timeout=(10, self.timeout))
        except requests.RequestException as err:
            raise RefreshError(f"the token endpoint could not be reached ({type(err).__name__})"
                               ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200:
            detail = ""
            if isinstance(body, dict):
                error = body.get("error")
                detail = body.get("error_description") or (
                    error.get("message") if isinstance(error, dict) else error) or ""
            message = f"the token endpoint answered {response.status_code}" + (
                f": {detail}" if detail else "")
            # An endpoint may quote the token or code it refused: never pass one on to a log.
            for name in ("refresh_token", "code", "code_verifier"):
                if payload.get(name):
                    message = message.replace(payload[name], "[redacted]")
            raise RefreshError(message)
        if not (isinstance(body, dict) and isinstance(body.get("access_token"), str)
                and isinstance(body.get("expires_in"), int | float)):
            raise RefreshError("the token endpoint's answer has no access_token/expires_in")
        return body


def oauth_fields(tokens: dict[str, Any], previous: dict | None = None) -> dict[str, Any]:
    """The file's `oauth` object updated from a token answer, keeping what it does not say."""
    oauth = dict(previous or {})
    oauth["accessToken"] = tokens["access_token"]
    if tokens.get("refresh_token"):
        oauth["refreshToken"] = tokens["refresh_token"]
    oauth["expiresAt"] = int((time.time() + float(tokens["expires_in"])) * 1000)
    if isinstance(tokens.get("scope"), str):
        oauth["scopes"] = tokens["scope"].split()
    return oauth


class TokenRefresher:
    """Keeps OAuth access tokens fresh: one refresh per credential at a time, everywhere.

    Greenlets of a process queue on a per-domain lock; processes on a machine on a file lock;
    with PostgreSQL, processes on other machines on an advisory lock. Whoever gets the lock
    re-reads the file first: another may have refreshed it meanwhile. A failed refresh is not
    retried for 5 s (the same 401 is answered meanwhile) and is published as an event.
    """

    def __init__(self, store: CredentialStore, endpoint: TokenEndpoint,
                 publish: Callable[[Any], None], lock_dsn: str | None = None):
        self.store = store
        self.endpoint = endpoint
        self.publish = publish
        self.lock_dsn = lock_dsn
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._failures: dict[str, tuple[float, str]] = {}
        self._running: dict[str, _BackgroundRefresh] = {}

    def fresh(self, credential: Credential) -> Credential:
        """The credential with a token valid for at least another minute — or, while a refresh
        is slow (a hanging token endpoint), the current token as long as it is still valid.

        A token inside the refresh margin but not expired is refreshed in the background: a
        request waits for that refresh at most REFRESH_WAIT_S after it began, then goes on with
        the current token. Only an expired token makes requests wait for the refresh itself.
        """
        if not credential.needs_refresh():
            return credential
        expires_at = credential.expires_at or 0.0
        if expires_at - time.time() <= REFRESH_WAIT_S:
            return self.refresh(credential.domain)
        failed = self._failures.get(credential.domain)
        if failed and time.monotonic() - failed[0] < FAILURE_BACKOFF_S:
            return credential  # the last refresh failed just now: not again yet
        refresh = self._background(credential.domain)
        remaining = REFRESH_WAIT_S - (time.monotonic() - refresh.started)
        if refresh.done.wait(max(0.0, min(remaining, expires_at - time.time() - 1))) and \
                refresh.result is not None:
            return refresh.result
        return credential  # still valid; the refresh goes on (or failed, and was reported)

    def _background(self, domain: str) -> _BackgroundRefresh:
        """The refresh of `domain` under way, started now when there is none."""
        with self._guard:
            running = self._running.get(domain)
            if running is None or running.done.is_set():
                running = self._running[domain] = _BackgroundRefresh(
                    lambda: self.refresh(domain), f"oauth-refresh-{domain}")
            return running

    def refresh(self, domain: str, force: bool = False) -> Credential:
        """Refresh the domain's token (if still needed once the locks are held)."""
        self._check_backoff(domain)
        with self._local_lock(domain):
            self._check_backoff(domain)  # the greenlet before us may just have failed
            credential = self._current(domain)
            if not force and not credential.needs_refresh():
                return credential  # another greenlet refreshed it while we waited
            try:
                with self._process_locks(domain):
                    credential = self._current(domain)
                    if not force and not credential.needs_refresh():
                        return credential  # another process did
                    return self._refresh_locked(credential)
            except LockTimeout as err:
                raise self._failed(credential, f"another refresh holds the lock ({err})"
                                   ) from None

    def _check_backoff(self, domain: str) -> None:
        failed = self._failures.get(domain)
        if failed and time.monotonic() - failed[0] < FAILURE_BACKOFF_S:
            raise CredentialError(failed[1])

    def _current(self, domain: str) -> Credential:
        credential = self.store.reload(domain)
        if credential is None or credential.type != "oauth":
            raise CredentialError(f"No OAuth credential file for {domain}; {login_hint(domain)}.")
        return credential

    def _refresh_locked(self, credential: Credential) -> Credential:
        if not credential.refresh_token:
            raise self._failed(credential, "the token expired and the file has no refresh token")
        try:
            tokens = self.endpoint.refresh(credential.refresh_token)
        except RefreshError as err:
            raise self._failed(credential, str(err)) from None
        data = dict(credential.data)
        data["oauth"] = oauth_fields(tokens, credential.oauth)
        updated = self.store.write(credential.domain, data)
        self._failures.pop(credential.domain, None)
        log.info("refreshed the OAuth token of %s (valid for %ds)", credential.domain,
                 int(tokens["expires_in"]))
        return updated

    def _failed(self, credential: Credential, reason: str) -> CredentialError:
        message = (f"OAuth refresh for {credential.domain} failed: {reason}. If the refresh "
                   f"token was revoked, {login_hint(credential.domain)}.")
        self._failures[credential.domain] = (time.monotonic(), message)
        log.error("%s", message)
        self.publish(OAuthRefreshFailed(domain=credential.domain,
                                        account_id=credential.account_id, reason=reason))
        return CredentialError(message)

    def _local_lock(self, domain: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(domain, threading.Lock())

    @contextlib.contextmanager
    def _process_locks(self, domain: str):
        with FileLock(self.store.lock_path(domain)):
            if self.lock_dsn:
                with AdvisoryLock(self.lock_dsn, f"oauth-refresh:{domain}"):
                    yield
            else:
                yield


class _BackgroundRefresh:
    """One refresh run off the request path (a greenlet under gevent): its result, or None
    when it failed (`TokenRefresher.refresh` has logged it, published it and set the back-off).
    It ends with the token endpoint's own timeout at the latest."""

    def __init__(self, run: Callable[[], Credential], name: str):
        self.started = time.monotonic()
        self.done = threading.Event()
        self.result: Credential | None = None
        self._run = run
        threading.Thread(target=self._main, name=name, daemon=True).start()

    def _main(self) -> None:
        try:
            self.result = self._run()
        except CredentialError:
            pass  # already reported; requests keep the still-valid token meanwhile
        except Exception:
            log.exception("OAuth refresh failed unexpectedly")
        finally:
            self.done.set()


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge) for the authorization-code flow."""
    verifier = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_url(client_id: str, challenge: str, state: str) -> str:
    """Where the operator logs in with their Claude account."""
    return AUTHORIZE_URL + "?" + urlencode({
        "code": "true", "client_id": client_id, "response_type": "code",
        "redirect_uri": REDIRECT_URI, "scope": SCOPES, "code_challenge": challenge,
        "code_challenge_method": "S256", "state": state})
