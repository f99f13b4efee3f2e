"""Rows as the JSON API shows them: names are the columns, times ISO-8601 UTC with `Z`.

Usage figures (`Group` counts) show `cost_usd` in dollars rounded to the micro-dollar, and
`total_tokens` = input + output + cache creation + cache read; an unknown account or model is
null.

Conversions: `status` is a number when it is an HTTP code (else the text, such as
`client_disconnected`); `cost_usd` a float; bodies are parsed back into JSON when they hold a
JSON object or array (anything else stays the stored text, so a string value always means
"not JSON"); a stream chunk gets its SSE event name and parsed data beside its raw text.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from app.proxy.sse import SSEDecoder
from app.storage.conversation_queries import BranchSummary, ConversationDetail
from app.storage.models import RateLimitSample, Request, RequestChunk
from app.storage.usage import WINDOW_HOURS, AccountUsage, Group, merge, none_last, total
from app.usage.rollup import TOKENS

BODY_FIELDS = ("request_body", "response_body")
CONVERSATION_FIELDS = ("id", "domain", "account_id", "session_id", "title", "first_request_id",
                       "created_at", "last_request_at", "request_count", "message_count",
                       "branch_count", "subtask_count", "compact_count", "input_tokens",
                       "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def timestamp(value: datetime | None) -> str | None:
    """Fixed-width UTC with microseconds: the stored precision, and sortable as text."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def summary(row: dict[str, Any]) -> dict[str, Any]:
    """A list item, from the dict of `queries.SUMMARY_FIELDS`."""
    return {name: _value(name, value) for name, value in row.items()}


def detail(row: Request) -> dict[str, Any]:
    """Every column of one exchange, bodies and headers included."""
    out = {}
    for field in row._meta.sorted_fields:
        value = getattr(row, field.name)
        out[field.name] = _body(value) if field.name in BODY_FIELDS else _value(field.name, value)
    return out


def chunk(row: RequestChunk) -> dict[str, Any]:
    """One stored SSE event: its name, its data (parsed when JSON) and the text as stored."""
    name, data = _parse_event(row.data)
    return {"seq": row.seq, "offset_ms": row.offset_ms, "event": name, "data": data,
            "raw": row.data}


def _value(name: str, value: Any) -> Any:
    if isinstance(value, datetime):
        return timestamp(value)
    if isinstance(value, Decimal):
        return float(value)
    if name == "status" and isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def _body(text: str | None) -> Any:
    if not text or text.lstrip()[:1] not in ("{", "["):
        return text
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # truncated, not JSON, or nested past the parser
        return text


def _parse_event(text: str) -> tuple[str | None, Any]:
    # The relay's own decoder, so the API reads events exactly as the proxy framed them.
    decoder = SSEDecoder()
    events = decoder.feed(text.encode()) + decoder.flush()
    if not events:  # a comment or keep-alive only
        return None, None
    event = events[0]
    try:
        return event.event, json.loads(event.data)
    except ValueError:
        return event.event, event.data


def figures(counts: dict[str, Any]) -> dict[str, Any]:
    """The usage counters every usage answer shows for a group of requests."""
    tokens = {name: counts[name] for name in TOKENS}
    return {"request_count": counts["request_count"], "error_count": counts["error_count"],
            **tokens, "total_tokens": total_tokens(counts),
            "cost_usd": round(counts["cost_microusd"] / 1_000_000, 6),
            "tool_call_count": counts["tool_call_count"]}


def total_tokens(counts: dict[str, Any]) -> int:
    # The 5m/1h split is part of cache creation, not added again.
    return (counts["input_tokens"] + counts["output_tokens"]
            + counts["cache_creation_input_tokens"] + counts["cache_read_input_tokens"])


def window(group: Group, hours: int, now: datetime, token_limit: int | None) -> dict[str, Any]:
    """A rolling window's figures: the range, the counters, when its oldest request leaves it
    and how much of the output-token limit it used."""
    leaves = group.oldest + timedelta(hours=hours) if group.oldest else None
    used = None
    if token_limit:
        used = round(group.counts["output_tokens"] / token_limit * 100, 2)
    return {"hours": hours, "since": timestamp(now - timedelta(hours=hours)),
            "until": timestamp(now), **figures(group.counts),
            "oldest_request_at": timestamp(group.oldest), "oldest_leaves_at": timestamp(leaves),
            "token_limit": token_limit, "used_percent": used}


def per_model(groups: list[Group]) -> list[dict[str, Any]]:
    """Figures of groups keyed by model alone, by model name (an unknown model last)."""
    ordered = sorted(groups, key=lambda group: none_last(group.key[0]))
    return [{"model": group.key[0], **figures(group.counts)} for group in ordered]


def daily(groups: list[Group]) -> list[dict[str, Any]]:
    """Groups keyed by (date, model), by date then model."""
    ordered = sorted(groups, key=lambda group: (group.key[0], none_last(group.key[1])))
    return [{"date": group.key[0].isoformat(), "model": group.key[1], **figures(group.counts)}
            for group in ordered]


def tool_days(rows: list[tuple]) -> list[dict[str, Any]]:
    """(date, account_id, tool_name, call_count) rows, by date, account then tool name."""
    ordered = sorted(rows, key=lambda row: (row[0], none_last(row[1]), row[2]))
    return [{"date": day.isoformat(), "account_id": account, "tool_name": name,
             "call_count": calls} for day, account, name, calls in ordered]


def tool_totals(rows: list[tuple]) -> list[dict[str, Any]]:
    """Calls per tool name over all rows, most used first."""
    calls: dict[str, int] = {}
    for _, _, name, count in rows:
        calls[name] = calls.get(name, 0) + count
    ordered = sorted(calls.items(), key=lambda item: (-item[1], item[0]))
    return [{"tool_name": name, "call_count": count} for name, count in ordered]


def account(item: AccountUsage, now: datetime, token_limit: int | None) -> dict[str, Any]:
    """One account: its window over all domains, per domain, and its latest ledger sample."""
    return {"account_id": item.account_id, "last_request_at": timestamp(item.last_request_at),
            "window": window(item.window, WINDOW_HOURS, now, token_limit),
            "domains": [{"domain": domain, "window": window(group, WINDOW_HOURS, now, token_limit)}
                        for domain, group in item.domains.items()],
            "ratelimit": ratelimit(item.sample)}


def stats(groups: list[Group], since: datetime, until: datetime) -> dict[str, Any]:
    """Overview figures of a range from its (domain, account_id, model) groups."""
    counts = total(groups).counts
    shown = figures(counts)
    requests = counts["request_count"]
    keys = {name: {group.key[i] for group in groups if group.key[i] is not None}
            for i, name in enumerate(("domain", "account", "model"))}
    return {
        "since": timestamp(since), "until": timestamp(until),
        "request_count": requests, "error_count": counts["error_count"],
        "disconnected_count": counts["disconnected_count"],
        "error_rate": counts["error_count"] / requests if requests else 0,
        **{name: shown[name] for name in (*TOKENS, "total_tokens", "cost_usd")},
        "cost_flagged_count": counts["cost_flagged_count"],
        "tool_call_count": counts["tool_call_count"],
        "avg_duration_ms": _average(counts["duration_ms_sum"], counts["duration_count"]),
        "avg_first_token_ms": _average(counts["first_token_ms_sum"],
                                       counts["first_token_count"]),
        "account_count": len(keys["account"]), "domain_count": len(keys["domain"]),
        "model_count": len(keys["model"]),
        "by_model": breakdown(groups, 2, "model"),
        "by_account": breakdown(groups, 1, "account_id"),
        "by_domain": breakdown(groups, 0, "domain"),
    }


def breakdown(groups: list[Group], index: int, name: str) -> list[dict[str, Any]]:
    """The groups added up by one key (`index` in their key), busiest first."""
    merged = merge(groups, key=lambda group: group.key[index])
    items = [{name: key, **figures(group.counts)} for key, group in merged.items()]
    return sorted(items, key=lambda item: (-item["request_count"], none_last(item[name])))


def ratelimit(sample: RateLimitSample | None) -> dict[str, Any] | None:
    """One ledger sample with every column (its raw headers as stored pairs)."""
    if sample is None:
        return None
    return {field.name: _value(field.name, getattr(sample, field.name))
            for field in sample._meta.sorted_fields}


def _average(summed: float, count: int) -> float | None:
    return round(summed / count, 2) if count else None


def conversation(row: dict[str, Any]) -> dict[str, Any]:
    """A conversation's row (dict of its columns): its figures as kept by the writer, with
    `total_tokens` and `cost_usd` (dollars, from whole micro-dollars) in place of
    `cost_microusd`."""
    out = {name: _value(name, row[name]) for name in CONVERSATION_FIELDS}
    out["total_tokens"] = total_tokens(row)
    out["cost_usd"] = round((row["cost_microusd"] or 0) / 1_000_000, 6)
    return out


def conversation_detail(found: ConversationDetail) -> dict[str, Any]:
    """One conversation with its requests in received order and its branches."""
    return {**conversation(found.conversation),
            "requests": [conversation_request(row) for row in found.requests],
            "requests_truncated": found.requests_truncated,
            "branches": [branch(item) for item in found.branches]}


def conversation_request(row: dict[str, Any]) -> dict[str, Any]:
    """A request as one step of a conversation (`created_at` is its `received_at`)."""
    out = {name: _value(name, value) for name, value in row.items()}
    out["created_at"] = out["received_at"]
    return out


def branch(item: BranchSummary) -> dict[str, Any]:
    """A branch of a conversation: its kind, size, ends and fork point."""
    return {"branch_id": item.branch_id, "kind": item.kind, "request_count": item.request_count,
            "first_request_id": item.first_request_id, "last_request_id": item.last_request_id,
            "parent_request_id": item.parent_request_id,
            "created_at": timestamp(item.created_at),
            "last_request_at": timestamp(item.last_request_at), "is_subtask": item.is_subtask}
