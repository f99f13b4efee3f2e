"""What one request adds to the hourly usage roll-ups (`usage_hourly`, `usage_tool_hourly`).

Pure: request rows in (as `app.storage.rows.request_row` builds them, or as the spool gives
them back), sums out. The sink adds the sums of the rows it actually inserted, so a row
replayed from the spool is never counted twice. The same definitions are spelled in SQL by
`migrations/0003_usage_rollups.py` (the backfill) and by the read side for partial hours.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

# Integer counters, then float sums: the column order of `usage_hourly` after its key.
COUNTERS = (
    "request_count", "error_count", "disconnected_count", "input_tokens", "output_tokens",
    "cache_creation_input_tokens", "cache_creation_5m_tokens", "cache_creation_1h_tokens",
    "cache_read_input_tokens", "cost_microusd", "cost_flagged_count", "tool_call_count",
    "duration_count", "first_token_count",
)
SUMS = ("duration_ms_sum", "first_token_ms_sum")
COLUMNS = COUNTERS + SUMS
TOKENS = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
          "cache_creation_5m_tokens", "cache_creation_1h_tokens", "cache_read_input_tokens")

DISCONNECTED = "client_disconnected"

HourKey = tuple[datetime, str, str, str]    # hour (naive UTC), domain, account_id, model
ToolKey = tuple[datetime, str, str, str]    # hour, domain, account_id, tool name


@dataclass(frozen=True, slots=True)
class Contribution:
    """One request's share of its hour: the key, a value per column of COLUMNS, its tools."""

    key: HourKey
    values: tuple[float, ...]
    tools: tuple[str, ...]


def hour_of(moment: datetime) -> datetime:
    """The start of the UTC hour holding `moment`, naive (as the database stores it)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.replace(minute=0, second=0, microsecond=0)


def is_error(status: Any, outcome: Any) -> bool:
    """A failed exchange, or an HTTP error answer (4xx/5xx) the client received in full."""
    if outcome == "failed":
        return True
    if outcome == DISCONNECTED:
        return False
    code = str(status or "")
    return len(code) == 3 and code.isdigit() and "400" <= code < "600"


def contribution(row: dict[str, Any]) -> Contribution:
    """What `row` (a `requests` row) adds to its hour."""
    received = row["received_at"]
    if isinstance(received, str):  # cannot happen from the writer; cheap to accept
        received = datetime.fromisoformat(received)
    key = (hour_of(received), row["domain"], row.get("account_id") or "", row.get("model") or "")
    duration, first_token = row.get("duration_ms"), row.get("first_token_ms")
    values = {
        "request_count": 1,
        "error_count": int(is_error(row.get("status"), row.get("outcome"))),
        "disconnected_count": int(row.get("outcome") == DISCONNECTED),
        **{name: row.get(name) or 0 for name in TOKENS},
        "cost_microusd": microdollars(row.get("cost_usd")),
        "cost_flagged_count": int(bool(row.get("cost_flagged"))),
        "tool_call_count": row.get("tool_call_count") or 0,
        "duration_count": int(duration is not None),
        "first_token_count": int(first_token is not None),
        "duration_ms_sum": duration or 0.0,
        "first_token_ms_sum": first_token or 0.0,
    }
    tools = tuple(name for name in row.get("tool_names") or () if isinstance(name, str))
    return Contribution(key, tuple(values[name] for name in COLUMNS), tools)


def add_up(contributions: Iterable[Contribution]
           ) -> tuple[dict[HourKey, list[float]], dict[ToolKey, int]]:
    """The sums per hour key and per (hour, domain, account, tool), keys in sorted order so
    that concurrent writers lock the same rows in the same order."""
    hours: dict[HourKey, list[float]] = {}
    tools: dict[ToolKey, int] = {}
    for part in contributions:
        sums = hours.get(part.key)
        if sums is None:
            hours[part.key] = list(part.values)
        else:
            for index, value in enumerate(part.values):
                sums[index] += value
        hour, domain, account, _ = part.key
        for name in part.tools:
            tool_key = (hour, domain, account, name)
            tools[tool_key] = tools.get(tool_key, 0) + 1
    return dict(sorted(hours.items())), dict(sorted(tools.items()))


def microdollars(cost: Any) -> int:
    """A stored cost (Decimal, or its text after a spool round trip) in whole micro-dollars."""
    if cost is None:
        return 0
    try:
        return int((Decimal(str(cost)) * 1_000_000).to_integral_value())
    except (InvalidOperation, ValueError):
        return 0
