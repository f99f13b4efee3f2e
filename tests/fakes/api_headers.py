"""The response headers the real API sends: common, rate-limit and unified (subscription).

``merge_headers`` applies a behaviour's own ``headers`` over the generated ones.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import secrets
import time
from collections.abc import Mapping

from tests.fakes.behaviours import Headers
from tests.fakes.messages import random_id

ORGANIZATION_ID = "4f6c9a2e-8b1d-4c7e-9f3a-2d5b8e1c6a90"


def _rfc3339(seconds_from_now: float) -> str:
    moment = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds_from_now)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def common_headers(request_id: str, *, json_body: bool) -> list[tuple[str, str]]:
    """Headers on every API response (after the framing headers)."""
    headers = [
        ("request-id", request_id),
        ("strict-transport-security", "max-age=31536000; includeSubDomains; preload"),
        ("anthropic-organization-id", ORGANIZATION_ID),
        ("via", "1.1 google"),
        ("cf-cache-status", "DYNAMIC"),
        ("X-Robots-Tag", "none"),
    ]
    if json_body:
        # Cloudflare's bot-management cookie: present on the real API's JSON responses.
        now_ms = int(time.time() * 1000)
        headers.append(
            (
                "Set-Cookie",
                f"_cfuvid={random_id('', 43)}-{now_ms}-0.0.1.1-604800000; path=/; "
                "domain=.api.anthropic.com; HttpOnly; Secure; SameSite=None",
            )
        )
    headers += [("Server", "cloudflare"), ("CF-RAY", f"{secrets.token_hex(8)}-SJC")]
    return headers


def ratelimit_headers(input_tokens: int = 0, output_tokens: int = 0, *, exhausted: bool = False):
    """The standard API-key rate-limit families (limit / remaining / reset)."""
    limits = {"input-tokens": 2_000_000, "output-tokens": 400_000, "requests": 4_000}
    used = {"input-tokens": input_tokens, "output-tokens": output_tokens, "requests": 1}
    headers: list[tuple[str, str]] = []
    for family in ("input-tokens", "output-tokens", "requests"):
        remaining = 0 if exhausted else limits[family] - used[family]
        headers += [
            (f"anthropic-ratelimit-{family}-limit", str(limits[family])),
            (f"anthropic-ratelimit-{family}-remaining", str(remaining)),
            (f"anthropic-ratelimit-{family}-reset", _rfc3339(1 if family == "requests" else 0)),
        ]
    total = limits["input-tokens"] + limits["output-tokens"]
    remaining = 0 if exhausted else total - input_tokens - output_tokens
    # The combined family is rounded to the nearest thousand by the real API.
    headers += [
        ("anthropic-ratelimit-tokens-limit", str(total)),
        ("anthropic-ratelimit-tokens-remaining", str(round(remaining, -3))),
        ("anthropic-ratelimit-tokens-reset", _rfc3339(0)),
    ]
    return headers


def unified_headers(overrides: Mapping[str, str] | None = None) -> list[tuple[str, str]]:
    """The subscription (OAuth) ``anthropic-ratelimit-unified-*`` family.

    Resets are unix epoch seconds, utilizations fractions of 1. ``overrides`` uses
    the suffixes as keys, e.g. ``{"status": "rejected", "5h-utilization": "1.0"}``.
    """
    now = int(time.time())
    reset_5h = now - now % 3600 + 3 * 3600
    reset_7d = now - now % 86400 + 5 * 86400
    values = {
        "status": "allowed",
        "5h-status": "allowed",
        "5h-reset": str(reset_5h),
        "5h-utilization": "0.12",
        "7d-status": "allowed",
        "7d-reset": str(reset_7d),
        "7d-utilization": "0.34",
        "representative-claim": "five_hour",
        "fallback-percentage": "0.5",
        "reset": str(reset_5h),
        "overage-status": "rejected",
        "overage-disabled-reason": "org_level_disabled",
    }
    values.update(overrides or {})
    return [(f"anthropic-ratelimit-unified-{key}", str(v)) for key, v in values.items()]


def merge_headers(base: list[tuple[str, str]], extra: Headers | None) -> list[tuple[str, str]]:
    """Apply ``extra`` over ``base``: same-named headers are replaced, None removes."""
    if not extra:
        return list(base)
    items = list(extra.items()) if isinstance(extra, Mapping) else list(extra)
    names = {name.lower() for name, _ in items}
    merged = [(k, v) for k, v in base if k.lower() not in names]
    merged += [(k, str(v)) for k, v in items if v is not None]
    return merged


def http_date() -> str:
    return email.utils.formatdate(usegmt=True)
