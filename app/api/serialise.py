"""Rows as the JSON API shows them: names are the columns, times ISO-8601 UTC with `Z`.

Conversions: `status` is a number when it is an HTTP code (else the text, such as
`client_disconnected`); `cost_usd` a float; bodies are parsed back into JSON when they hold a
JSON object or array (anything else stays the stored text, so a string value always means
"not JSON"); a stream chunk gets its SSE event name and parsed data beside its raw text.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from app.proxy.sse import SSEDecoder
from app.storage.models import Request, RequestChunk

BODY_FIELDS = ("request_body", "response_body")


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
    except ValueError:  # a truncated or non-JSON body: shown as stored
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
