"""Who may read the JSON API (SPEC §7.1, before dashboard logins exist).

- `DASHBOARD_API_KEY` set: every caller, loopback included, presents it as
  `Authorization: Bearer <key>` or `X-Dashboard-Key: <key>`; compared in constant time.
- Unset: only loopback clients (127.0.0.0/8, ::1) are answered — the laptop case.

The client address is the socket's peer. Behind a reverse proxy that is the proxy's own address,
so a local reverse proxy would make everyone "loopback": set the key there. X-Forwarded-For is
deliberately not read — any client can send it.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping

from app.errors import AuthenticationFailed

KEY_HEADER = "X-Dashboard-Key"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="claude-nexus"'}


def check(remote_addr: str | None, headers: Mapping[str, str], key: str | None) -> None:
    """Return when the caller may read `/api/*`, else raise AuthenticationFailed (401)."""
    if key is None:
        if is_loopback(remote_addr):
            return
        raise AuthenticationFailed(
            "The JSON API answers only local (loopback) clients while DASHBOARD_API_KEY is "
            "unset. Set DASHBOARD_API_KEY on the server, then send it as 'Authorization: "
            f"Bearer <key>' or '{KEY_HEADER}: <key>'.", headers=dict(CHALLENGE))
    presented = presented_keys(headers)
    if not presented:
        raise AuthenticationFailed(
            f"Missing key: send DASHBOARD_API_KEY as 'Authorization: Bearer <key>' or "
            f"'{KEY_HEADER}: <key>'.", headers=dict(CHALLENGE))
    expected = key.encode()
    # Every presented key is compared (no early exit), so timing tells nothing about which.
    matches = [hmac.compare_digest(candidate.encode(), expected) for candidate in presented]
    if not any(matches):
        raise AuthenticationFailed("Invalid key: it does not match DASHBOARD_API_KEY.",
                                   headers=dict(CHALLENGE))


def presented_keys(headers: Mapping[str, str]) -> list[str]:
    """The keys a caller sent: an `Authorization: Bearer` token and/or `X-Dashboard-Key`."""
    keys = []
    scheme, _, token = (headers.get("Authorization") or "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        keys.append(token.strip())
    direct = (headers.get(KEY_HEADER) or "").strip()
    if direct:
        keys.append(direct)
    return keys


def is_loopback(remote_addr: str | None) -> bool:
    """True for 127.0.0.0/8 and ::1, also when written as an IPv4-mapped IPv6 address (a
    dual-stack socket's view of 127.0.0.1). An unknown address (a Unix socket) is not."""
    try:
        address = ipaddress.ip_address((remote_addr or "").strip())
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback
