"""One rate-limit ledger sample from an upstream answer's headers (SPEC §6.2), a pure module.

Two header families can arrive, alone or together:

* the standard one API-key accounts get: ``anthropic-ratelimit-{requests,tokens,input-tokens,
  output-tokens}-{limit,remaining,reset}``; counts are integers (token counts rounded to the
  nearest thousand by the API) and resets RFC 3339 times;
* the ``anthropic-ratelimit-unified-*`` one Claude subscriptions get: statuses ``allowed`` /
  ``allowed_warning`` / ``rejected``, utilizations as fractions of 1 (``"0.35"``), resets as unix
  epoch seconds, a representative claim (``five_hour``, ``seven_day``, ...), a fallback
  percentage and the overage state.

Only the columns of `RateLimitSample` are typed here; every other header (the input/output
token families, ``unified-reset``, per-window statuses, windows Anthropic adds later) is kept
verbatim in ``headers``, so nothing is lost when the upstream changes its vocabulary.

Parsing never raises: an upstream quirk must not fail the answer it rode on, so a malformed
value only leaves its column None.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

PREFIX = "anthropic-ratelimit-"
UNIFIED = PREFIX + "unified-"

ALLOWED = "allowed"
ALLOWED_WARNING = "allowed_warning"
REJECTED = "rejected"
ALERT_STATUSES = (ALLOWED_WARNING, REJECTED)

# BIGINT's range: a larger count cannot be stored, so it is as good as malformed.
_BIGINT_MAX = 2**63 - 1
# ASCII only and no underscores: int() and float() accept "1_000" and non-ASCII digits,
# which no HTTP server sends on purpose.
_INTEGER = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
# Epoch values this large can only be milliseconds (1e11 s is the year 5138).
_EPOCH_MS_FROM = 1e11

# column -> (header suffix after the prefix, parser name); the order is the column order.
_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("unified_status", "unified-status", "enum"),
    ("unified_5h_utilization", "unified-5h-utilization", "fraction"),
    ("unified_5h_reset", "unified-5h-reset", "time"),
    ("unified_7d_utilization", "unified-7d-utilization", "fraction"),
    ("unified_7d_reset", "unified-7d-reset", "time"),
    ("unified_representative_claim", "unified-representative-claim", "enum"),
    ("unified_fallback_percentage", "unified-fallback-percentage", "fraction"),
    ("unified_overage_status", "unified-overage-status", "enum"),
    ("requests_remaining", "requests-remaining", "count"),
    ("requests_limit", "requests-limit", "count"),
    # The combined tokens family; input-/output-tokens have no columns and stay in `headers`.
    ("tokens_remaining", "tokens-remaining", "count"),
    ("tokens_limit", "tokens-limit", "count"),
)


def parse_ratelimit_headers(headers: Iterable[tuple[str, str]]) -> dict[str, Any] | None:
    """The `RateLimitSample` columns the answer's headers fill, or None without any.

    ``headers`` holds every ``anthropic-ratelimit-*`` pair in the order received, names
    lower-cased, as ``[name, value]`` lists: that is what the JSON column reads back, so a
    stored sample compares equal to a fresh one. When a name repeats, the first value wins
    for its column (as ``Headers.get`` does); all of them stay in ``headers``.

    Utilizations and the fallback percentage are kept as reported: the API sends fractions of
    1, but a value above 1 (a percentage, or a window overrun) is stored unchanged rather than
    guessed at; only a negative or non-finite one is dropped.
    """
    raw: list[list[str]] = []
    first: dict[str, str] = {}
    for name, value in headers:
        name, value = _text(name), _text(value)
        if name is None or value is None:
            continue
        name = name.strip().lower()
        if not name.startswith(PREFIX):
            continue
        raw.append([name, value])
        first.setdefault(name[len(PREFIX):], value)
    if not raw:
        return None
    sample: dict[str, Any] = {"headers": raw}
    for column, suffix, kind in _COLUMNS:
        value = first.get(suffix)
        sample[column] = None if value is None else _PARSERS[kind](value)
    return sample


def alert_level(sample: Any, previous: Any = None) -> str | None:
    """``allowed_warning`` / ``rejected`` when the unified status just became that, else None.

    Alerting on the transition only (not on every warning answer) keeps one alert per episode;
    with no previous sample the first warning or rejection still counts as a change. Samples
    are the dicts `parse_ratelimit_headers` returns, or `RateLimitSample` rows.
    """
    status = _status(sample)
    if status not in ALERT_STATUSES or status == _status(previous):
        return None
    return status


def _status(sample: Any) -> str | None:
    if sample is None:
        return None
    if isinstance(sample, Mapping):
        status = sample.get("unified_status")
    else:
        status = getattr(sample, "unified_status", None)
    return _enum(status) if isinstance(status, str) else None


def _text(value: Any) -> str | None:
    # Raw transports (httpx's .raw, h11) hand headers over as bytes; HTTP says latin-1.
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin-1")
    return value if isinstance(value, str) else None


def _enum(value: str) -> str | None:
    # Enumerations are compared (alerts, dashboards), so case and padding must not matter.
    value = value.strip().lower()
    return value or None


def _count(value: str) -> int | None:
    value = value.strip()
    if not _INTEGER.fullmatch(value):
        return None
    number = int(value)
    return number if number <= _BIGINT_MAX else None


def _fraction(value: str) -> float | None:
    value = value.strip()
    if not _DECIMAL.fullmatch(value):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def _time(value: str) -> datetime | None:
    """Unix epoch seconds (the unified family), tolerating milliseconds and RFC 3339."""
    value = value.strip()
    try:
        if _DECIMAL.fullmatch(value):
            seconds = float(value)
            if seconds >= _EPOCH_MS_FROM:
                seconds /= 1000
            return datetime.fromtimestamp(seconds, UTC) if seconds > 0 else None
        # Python 3.11's fromisoformat reads RFC 3339, "Z" included; naive times are UTC.
        moment = datetime.fromisoformat(value)
    except (ValueError, OverflowError, OSError):
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


_PARSERS = {"enum": _enum, "count": _count, "fraction": _fraction, "time": _time}
