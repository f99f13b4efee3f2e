"""Masking the events of one stream, including the secrets a stream splits across events.

A streamed answer spells its text in pieces: a key the model repeats (or writes into a tool
call's input) arrives as `…"text":"sk-ant-api03-AB"…` in one event and `…"CD0123…"…` in the
next, and masking each event alone would leave the tail. So the deltas of each content block
(`text_delta`, `input_json_delta`, `thinking_delta`) are joined and masked as one text, and
the masked text is spread back over the same events: characters outside a masked region stay
in their event, a masked region's replacement goes to the event where it starts, so no event
keeps a piece of the secret. Only the events that change are re-serialised. Then each event
is masked alone (`mask_text`), as every stored string is. The join comes first: a piece masked
alone (`sk-ant-api0` becomes `sk-ant-…`) would no longer show what it was part of.

Used by the batch writer for `request_chunks` (app/storage/rows.py) and by the samples
(app/samples/stream.py). Pure: no Flask, no database.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from app.proxy.sse import SSEDecoder
from app.redact import mask_text, mask_texts

DELTA_FIELDS = {"text_delta": "text", "input_json_delta": "partial_json",
                "thinking_delta": "thinking"}

# A delta event exactly as the Messages API frames it: read with one match, where a generic
# SSE and JSON parse costs several times more (a stream has hundreds of them). Anything else
# that may be a delta (another key order, spacing, line ends) takes the generic parse.
_API_DELTA = re.compile(
    r'(?P<head>(?:event: content_block_delta\n)?data: \{"type":"content_block_delta",'
    r'"index":(?P<index>\d+),"delta":\{"type":"(?P<kind>text_delta|input_json_delta'
    r'|thinking_delta)","(?P<field>text|partial_json|thinking)":")'
    r'(?P<literal>[^"\\]*(?:\\.[^"\\]*)*)(?P<tail>"\}\}\n\n)')


@dataclass(slots=True)
class _Delta:
    """One delta event: its block and text, and how to write the event with another text."""

    block: object
    value: str
    head: str = ""            # the event's text around the value's JSON literal (fast path)
    tail: str = ""
    event: str | None = None  # else the event's name and data, to re-serialise
    data: dict | None = None
    field: str = ""

    def rebuilt(self, value: str) -> str:
        literal = json.dumps(value, ensure_ascii=False)
        if self.data is None:
            return f"{self.head}{literal[1:-1]}{self.tail}"
        data = {**self.data, "delta": {**self.data["delta"], self.field: value}}
        name = f"event: {self.event}\n" if self.event else ""
        return f"{name}data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n"


def mask_events(texts: list[str]) -> list[str]:
    """A stream's events (decoded text, in order), every secret masked: each event as
    `mask_text` masks it, and each content block's deltas as one text."""
    texts = list(texts)
    blocks: dict[object, list[tuple[int, _Delta]]] = {}
    for position, text in enumerate(texts):
        if "content_block_delta" in text:
            delta = _delta(text)
            if delta is not None:
                blocks.setdefault(delta.block, []).append((position, delta))
    for deltas in blocks.values():
        if len(deltas) < 2:
            continue  # one piece: masked with its event below
        values = [delta.value for _, delta in deltas]
        for (position, delta), value, new in zip(deltas, values, spread_masked(values),
                                                 strict=True):
            if new != value:
                texts[position] = delta.rebuilt(new)
    return mask_texts(texts)


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


def _delta(text: str) -> _Delta | None:
    """The delta an event carries, or None (not a content_block_delta, or unreadable)."""
    match = _API_DELTA.fullmatch(text)
    if match is not None:
        literal = match["literal"]
        try:
            value = literal if literal.isprintable() and "\\" not in literal \
                else json.loads(f'"{literal}"')
        except ValueError:
            return None
        return _Delta(int(match["index"]), value, head=text[:match.end("head")],
                      tail=match["tail"])
    decoder = SSEDecoder()
    events = decoder.feed(text.encode("utf-8", "surrogatepass")) + decoder.flush()
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
    if not isinstance(value, str):
        return None
    block = data.get("index")
    block = block if isinstance(block, int | str | None) else repr(block)  # a dict key
    return _Delta(block, value, event=events[0].event, data=data, field=field)
