"""Masking of secrets before anything is stored or logged (SPEC §3.2)."""

from __future__ import annotations

import re
from collections.abc import Iterable

SECRET_HEADERS = frozenset({"authorization", "x-api-key", "cookie", "set-cookie",
                            "proxy-authorization", "x-dashboard-key"})

# Anthropic keys and OAuth tokens: sk-ant-api03-…, sk-ant-oat01-…, sk-ant-ort01-…
_ANTHROPIC_SECRET = re.compile(r"sk-ant-[A-Za-z0-9_\-]+")


def mask_secret(secret: str) -> str:
    """`sk-ant-…` plus the last four characters: enough to tell keys apart, never to use one."""
    tail = secret[-4:] if len(secret) >= 12 else ""
    return f"sk-ant-…{tail}"


def mask_text(text: str) -> str:
    """Replace every Anthropic key or token inside a string."""
    if "sk-ant-" not in text:
        return text
    return _ANTHROPIC_SECRET.sub(lambda m: mask_secret(m.group(0)), text)


def mask_header_value(name: str, value: str) -> str:
    """A header value as it may be stored: credentials reduced to their scheme and last 4."""
    if name.lower() not in SECRET_HEADERS:
        return mask_text(value)
    scheme, sep, token = value.partition(" ")
    if sep and name.lower() in ("authorization", "proxy-authorization"):
        return f"{scheme} {_mask_token(token)}"
    if name.lower() in ("cookie", "set-cookie"):
        return "[redacted]"
    return _mask_token(value)


def _mask_token(token: str) -> str:
    if token.startswith("sk-ant-"):
        return mask_secret(token)
    return f"…{token[-4:]}" if len(token) >= 12 else "[redacted]"


def redact_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Headers with every secret masked."""
    return [(name, mask_header_value(name, value)) for name, value in headers]
