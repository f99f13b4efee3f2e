"""Masking the raw events of a stream, including secrets the stream splits across events.

A streamed answer spells its text in pieces: a key the model repeats (or writes into a tool
call's input) arrives as `…"text":"sk-ant-oat01-abc"…` in one event and `…"def0123"…` in the
next, and masking each event alone would leave the tail. So the deltas of each content block
(`text_delta`, `input_json_delta`, `thinking_delta`) are joined, masked as one text, and the
masked text is spread back over the same events: characters outside a masked region stay in
their event, a masked region's replacement goes to the event where it starts. Only the events
that change are re-serialised; each event then also goes through `mask_text` on its own.
Pure: no Flask.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from app.proxy.sse import SSEDecoder
from app.redact import mask_text

DELTA_FIELDS = {"text_delta": "text", "input_json_delta": "partial_json",
                "thinking_delta": "thinking"}


@dataclass(slots=True)
class _Delta:
    event: str | None
    data: dict
    field: str
    value: str


def masked_events(chunks: Iterable[tuple[float, bytes]]) -> list[dict]:
    """`[{offset_ms, raw}]` of a stream's events, every secret masked."""
    texts = [raw.decode("utf-8", "replace") for _, raw in chunks]
    deltas = [_delta(raw) for _, raw in chunks]
    blocks: dict[object, list[int]] = {}
    for position, delta in enumerate(deltas):
        if delta is not None:
            blocks.setdefault(delta.data.get("index"), []).append(position)
    for positions in blocks.values():
        values = [deltas[p].value for p in positions]
        spread = spread_masked(values)
        for position, value, new in zip(positions, values, spread, strict=True):
            if new != value:
                texts[position] = _rebuilt(deltas[position], new)
    return [{"offset_ms": at_ms, "raw": mask_text(text)}
            for (at_ms, _), text in zip(chunks, texts, strict=True)]


def spread_masked(pieces: list[str]) -> list[str]:
    """The pieces of a text, masked as one text: their concatenation is the masked whole."""
    joined = "".join(pieces)
    masked = mask_text(joined)
    if masked == joined:
        return pieces
    regions = _regions(joined)
    out, start = [], 0
    for piece in pieces:
        out.append(_masked_piece(joined, regions, start, start + len(piece)))
        start += len(piece)
    if "".join(out) != masked:  # a secret spanning lines: one region for the whole change
        out, start = [], 0
        for piece in pieces:
            out.append(_masked_piece(joined, [_region(joined, masked, 0)], start,
                                     start + len(piece)))
            start += len(piece)
    return out


def _regions(joined: str) -> list[tuple[int, int, str]]:
    """(start, end, replacement) of each changed part, found line by line."""
    regions, offset = [], 0
    for line in joined.splitlines(keepends=True):
        masked = mask_text(line)
        if masked != line:
            regions.append(_region(line, masked, offset))
        offset += len(line)
    return regions


def _region(text: str, masked: str, offset: int) -> tuple[int, int, str]:
    """The part of `text` that masking changed (common prefix and suffix trimmed)."""
    prefix = 0
    limit = min(len(text), len(masked))
    while prefix < limit and text[prefix] == masked[prefix]:
        prefix += 1
    suffix = 0
    while (suffix < limit - prefix
           and text[len(text) - 1 - suffix] == masked[len(masked) - 1 - suffix]):
        suffix += 1
    return offset + prefix, offset + len(text) - suffix, masked[prefix:len(masked) - suffix]


def _masked_piece(joined: str, regions: list[tuple[int, int, str]], start: int,
                  end: int) -> str:
    parts, cursor = [], start
    for region_start, region_end, replacement in regions:
        if region_end <= start and region_start < start or region_start >= end:
            continue
        parts.append(joined[cursor:max(region_start, cursor)])
        if start <= region_start < end:
            parts.append(replacement)
        cursor = max(cursor, min(region_end, end))
    parts.append(joined[cursor:end])
    return "".join(parts)


def _delta(raw: bytes) -> _Delta | None:
    decoder = SSEDecoder()
    events = decoder.feed(raw) + decoder.flush()
    if len(events) != 1:
        return None
    try:
        data = json.loads(events[0].data)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("type") != "content_block_delta":
        return None
    delta = data.get("delta")
    if not isinstance(delta, dict):
        return None
    field = DELTA_FIELDS.get(delta.get("type"))
    value = delta.get(field) if field else None
    return _Delta(events[0].event, data, field, value) if isinstance(value, str) else None


def _rebuilt(delta: _Delta, value: str) -> str:
    data = {**delta.data, "delta": {**delta.data["delta"], delta.field: value}}
    name = f"event: {delta.event}\n" if delta.event else ""
    return f"{name}data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"
