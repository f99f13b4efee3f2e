"""The domain of a request (SPEC §4.1): one normalised value used everywhere."""

from __future__ import annotations

import ipaddress


def normalise_domain(host: str | None) -> str:
    """Lower-cased Host without its port, except localhost and IP literals, which keep it."""
    host = _utf8(host or "").strip().lower()
    if not host:
        return "unknown"
    if host.startswith("["):  # bracketed IPv6 literal, maybe with a port
        end = host.find("]")
        return host if end != -1 else "unknown"
    name, sep, port = host.rpartition(":")
    if not sep or not port.isdigit():
        name, port = host, ""
    if ":" in name:  # a bare IPv6 literal without brackets: keep it whole
        return host
    if name == "localhost" or _is_ip(name):
        return host
    return name.rstrip(".")


def _utf8(host: str) -> str:
    """WSGI hands header values over as latin-1: a client that sent its Host in UTF-8 (not
    valid HTTP, but some do) would be recorded as mojibake (`Ã©vil.example`); read it as the
    UTF-8 it was. Anything else is kept as it is."""
    if host.isascii():
        return host
    try:
        return host.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return host


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
