"""Credential files (SPEC §4.2): `CREDENTIALS_DIR/<domain>.credentials.json`, the original
project's format, re-read whenever a file changes on disk."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.auth.locks import FileLock
from app.errors import AuthenticationFailed

SUFFIX = ".credentials.json"
API_KEY = "api_key"
OAUTH = "oauth"
REFRESH_MARGIN_S = 60  # refresh an OAuth token this long before it expires


class CredentialError(AuthenticationFailed):
    """A credential file exists but cannot be used; the message tells the operator what to do."""


@dataclass(frozen=True)
class Credential:
    """One domain's credential file, parsed. `data` is the whole file, kept for rewrites."""

    domain: str
    path: Path
    type: str | None            # "api_key", "oauth", or None for a client-key-only file
    account_id: str | None
    api_key: str | None
    oauth: dict | None
    client_api_key: str | None
    slack: dict | None
    data: dict

    @property
    def access_token(self) -> str | None:
        return (self.oauth or {}).get("accessToken")

    @property
    def refresh_token(self) -> str | None:
        return (self.oauth or {}).get("refreshToken")

    @property
    def expires_at(self) -> float | None:
        """Expiry of the OAuth access token, in epoch seconds (files hold milliseconds)."""
        value = (self.oauth or {}).get("expiresAt")
        return value / 1000 if isinstance(value, int | float) else None

    def needs_refresh(self, now: float | None = None) -> bool:
        expires = self.expires_at
        return self.type == OAUTH and expires is not None and \
            expires - (now or time.time()) <= REFRESH_MARGIN_S


def check_domain_name(domain: str) -> None:
    """Refuse a domain that would name a file outside the credentials directory."""
    if (not domain or domain.startswith(".") or any(c in domain for c in "/\\\x00")
            or ".." in domain or len(domain) > 255):
        raise CredentialError(f"Invalid domain {domain!r} for a credential file.")


def parse_credential(domain: str, path: Path, text: str) -> Credential:
    """Parse and check a credential file's text; raises CredentialError saying what to fix."""
    try:
        data = json.loads(text)
    except ValueError as err:
        raise CredentialError(f"Credential file {path} is not valid JSON ({err}); fix or remove "
                              "it.") from None
    if not isinstance(data, dict):
        raise CredentialError(f"Credential file {path} must hold a JSON object; fix or remove it.")
    kind = data.get("type")
    if kind is None:
        kind = API_KEY if data.get("api_key") else OAUTH if data.get("oauth") else None
    if kind not in (API_KEY, OAUTH, None):
        raise CredentialError(f"Credential file {path} has type {kind!r}; use \"api_key\" or "
                              "\"oauth\".")
    if kind == API_KEY and not isinstance(data.get("api_key"), str):
        raise CredentialError(f"Credential file {path} is of type api_key but has no "
                              "\"api_key\"; add the key or change the type.")
    oauth = data.get("oauth")
    if kind == OAUTH and not (isinstance(oauth, dict) and isinstance(oauth.get("accessToken"),
                                                                      str)):
        raise CredentialError(f"Credential file {path} is of type oauth but has no "
                              "oauth.accessToken; run `flask --app wsgi credentials oauth-login "
                              f"{domain}`.")
    client_key = data.get("client_api_key")
    slack = data.get("slack")
    return Credential(
        domain=domain, path=path, type=kind,
        account_id=data.get("accountId") if isinstance(data.get("accountId"), str) else None,
        api_key=data.get("api_key") if kind == API_KEY else None,
        oauth=oauth if kind == OAUTH else None,
        client_api_key=client_key if isinstance(client_key, str) and client_key else None,
        slack=slack if isinstance(slack, dict) else None,
        data=data,
    )


class CredentialStore:
    """Reads credential files on demand, caching each until its modification time changes."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self._cache: dict[str, tuple[tuple[int, int, int], Credential | CredentialError]] = {}
        self._lock = threading.Lock()

    def path_for(self, domain: str) -> Path:
        check_domain_name(domain)
        return self.directory / f"{domain}{SUFFIX}"

    def lock_path(self, domain: str) -> Path:
        """The lock file every writer of the domain's file holds (refresh, CLI)."""
        check_domain_name(domain)
        return self.directory / f".{domain}.lock"

    def update(self, domain: str, change: Callable[[dict], dict]) -> Credential:
        """Rewrite the domain's file under its lock: `change` gets the current data (or {})."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with FileLock(self.lock_path(domain)):
            path = self.path_for(domain)
            data: dict = {}
            if path.exists():
                current = self.reload(domain)
                data = dict(current.data) if current is not None else {}
            return self.write(domain, change(data))

    def get(self, domain: str) -> Credential | None:
        """The domain's credential, None without a file; raises CredentialError if unusable."""
        path = self.path_for(domain)
        try:
            stat = path.stat()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise CredentialError(f"Credential file {path} cannot be read ({err.strerror}); "
                                  "check its permissions.") from None
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)  # a rename changes the inode
        cached = self._cache.get(domain)
        if cached is None or cached[0] != stamp:
            cached = (stamp, self._load(domain, path))
            with self._lock:
                self._cache[domain] = cached
        if isinstance(cached[1], CredentialError):
            raise cached[1]
        return cached[1]

    def reload(self, domain: str) -> Credential | None:
        """Read the file again whatever the cache says (after taking a refresh lock)."""
        with self._lock:
            self._cache.pop(domain, None)
        return self.get(domain)

    def _load(self, domain: str, path: Path) -> Credential | CredentialError:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            return CredentialError(f"Credential file {path} cannot be read ({err}); check it.")
        try:
            return parse_credential(domain, path, text)
        except CredentialError as err:
            return err

    def domains(self) -> list[str]:
        """Every domain with a credential file, sorted."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name[: -len(SUFFIX)] for p in self.directory.glob(f"*{SUFFIX}"))

    def write(self, domain: str, data: dict[str, Any]) -> Credential:
        """Replace the domain's file atomically (temp file + rename), readable by owner only."""
        path = self.path_for(domain)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{domain}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, indent=2)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temp, 0o600)
            os.replace(temp, path)
        except BaseException:
            try:
                os.unlink(temp)
            except FileNotFoundError:
                pass
            raise
        return self.reload(domain)
