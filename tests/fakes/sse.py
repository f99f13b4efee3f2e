"""The fake upstream's event streams: ``build_sse`` turns (request JSON, Reply) into the
events of ``build_message``'s message, and ``fold_sse`` folds a stream back into it.

Shapes follow captures of api.anthropic.com (2025-2026): compact JSON per SSE
``data:`` line, a leading empty ``input_json_delta``, and a ``ping`` right after the
first ``content_block_start``.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from tests.fakes.behaviours import Reply
from tests.fakes.messages import build_message, compact_json

TEXT_DELTA_CHARS = 12  # upper bound on the text of one text/thinking delta
# partial_json pieces cycle through these lengths so splits land on varied
# boundaries (inside keys, strings, escapes), as the real API's do.
JSON_PIECE_LENGTHS = (5, 11, 3, 8, 13)

# Usage keys that only appear in message_start (message_delta never repeats them).
_START_ONLY_USAGE = ("cache_creation", "service_tier", "inference_geo")
_DELTA_USAGE = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def sse_event(name: str, data: Mapping[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else compact_json(data)
    return f"event: {name}\ndata: {payload}\n\n".encode()


# The real API formats ping's data with a space (`{"type": "ping"}`), unlike every other event.
PING_EVENT = sse_event("ping", '{"type": "ping"}')
MID_STREAM_ERROR = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def split_text(text: str, max_chars: int = TEXT_DELTA_CHARS) -> list[str]:
    """Split text into delta-sized pieces at word boundaries (long words are cut)."""
    pieces: list[str] = []
    current = ""
    for token in re.findall(r"\S+\s*|\s+", text):
        while len(token) > max_chars:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(token[:max_chars])
            token = token[max_chars:]
        if current and len(current) + len(token) > max_chars:
            pieces.append(current)
            current = ""
        current += token
    if current:
        pieces.append(current)
    return pieces


def split_json(raw: str) -> list[str]:
    pieces, pos, i = [], 0, 0
    while pos < len(raw):
        size = JSON_PIECE_LENGTHS[i % len(JSON_PIECE_LENGTHS)]
        pieces.append(raw[pos : pos + size])
        pos += size
        i += 1
    return pieces


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    event = {"type": "content_block_delta", "index": index, "delta": delta}
    return sse_event("content_block_delta", event)


def _block_events(index: int, block: dict[str, Any]) -> tuple[bytes, list[bytes]]:
    """(content_block_start event, the deltas and the content_block_stop) for one block."""
    kind = block.get("type")
    deltas: list[bytes] = []
    if kind == "text":
        start = {**block, "text": ""}
        deltas = [
            _delta(index, {"type": "text_delta", "text": t}) for t in split_text(block["text"])
        ]
    elif kind == "thinking":
        start = {**block, "thinking": "", "signature": ""}
        deltas = [
            _delta(index, {"type": "thinking_delta", "thinking": t})
            for t in split_text(block["thinking"])
        ]
        deltas.append(_delta(index, {"type": "signature_delta", "signature": block["signature"]}))
    elif kind in ("tool_use", "server_tool_use"):
        start = {**block, "input": {}}
        # The real API opens every tool input with an empty fragment; a tool
        # without arguments gets only that one.
        raw = json.dumps(block["input"], ensure_ascii=False) if block["input"] else ""
        deltas = [
            _delta(index, {"type": "input_json_delta", "partial_json": piece})
            for piece in ["", *split_json(raw)]
        ]
    else:  # redacted_thinking, web_search_tool_result, ...: whole in the start event
        start = block
    opened = sse_event(
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": start},
    )
    closed = sse_event("content_block_stop", {"type": "content_block_stop", "index": index})
    return opened, [*deltas, closed]


def start_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """The usage message_start reports: everything but output (1) and per-response extras."""
    keys = (*_DELTA_USAGE, "cache_creation", "output_tokens", "service_tier", "inference_geo")
    out = {key: usage[key] for key in keys if key in usage}
    out["output_tokens"] = 1
    return out


def delta_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """The cumulative usage message_delta reports (no cache TTL breakdown / tier)."""
    out = {key: usage[key] for key in _DELTA_USAGE if key in usage}
    out["output_tokens"] = usage["output_tokens"]
    for key, value in usage.items():
        if key not in out and key not in _START_ONLY_USAGE:
            out[key] = value
    return out


def build_sse(
    request_json: Mapping[str, Any] | bytes | str | None, reply: Reply | None = None
) -> list[bytes]:
    """The event stream for this request and Reply, one bytes object per event."""
    message = build_message(request_json, reply)
    usage = message["usage"]
    head = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    head["usage"] = start_usage(usage)
    events = [sse_event("message_start", {"type": "message_start", "message": head})]
    for index, block in enumerate(message["content"]):
        opened, rest = _block_events(index, block)
        events.append(opened)
        if index == 0:
            events.append(PING_EVENT)
        events.extend(rest)
    if not message["content"]:
        events.append(PING_EVENT)
    delta = {
        "stop_reason": message["stop_reason"],
        "stop_sequence": message["stop_sequence"],
        "stop_details": None,
    }
    closing = {"type": "message_delta", "delta": delta, "usage": delta_usage(usage)}
    events.append(sse_event("message_delta", closing))
    events.append(sse_event("message_stop", {"type": "message_stop"}))
    return events


def parse_sse(data: bytes | Iterable[bytes]) -> list[tuple[str | None, Any]]:
    """Parse SSE bytes into (event name, parsed data) pairs (data stays a str if not JSON)."""
    raw = data if isinstance(data, bytes) else b"".join(data)
    out: list[tuple[str | None, Any]] = []
    for chunk in re.split(rb"\r?\n\r?\n", raw):
        name, lines = None, []
        for line in chunk.decode().splitlines():
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "data":
                lines.append(value)
        if name is None and not lines:
            continue
        text = "\n".join(lines)
        try:
            out.append((name, json.loads(text)))
        except ValueError:
            out.append((name, text))
    return out


def fold_sse(data: bytes | Iterable[bytes]) -> dict[str, Any]:
    """Fold an event stream back into the message, as a client accumulator does."""
    message: dict[str, Any] | None = None
    partial_json: dict[int, str] = {}
    for name, event in parse_sse(data):
        if name == "error":
            raise ValueError(f"stream carried an error event: {event}")
        if not isinstance(event, dict) or name == "ping":
            continue
        kind = event.get("type")
        if kind == "message_start":
            message = copy.deepcopy(event["message"])
            continue
        if message is None:
            raise ValueError(f"{kind} before message_start")
        if kind == "content_block_start":
            message["content"].append(copy.deepcopy(event["content_block"]))
        elif kind == "content_block_delta":
            block, delta = message["content"][event["index"]], event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            elif delta["type"] == "input_json_delta":
                index = event["index"]
                partial_json[index] = partial_json.get(index, "") + delta["partial_json"]
            elif delta["type"] == "citations_delta":
                block.setdefault("citations", []).append(delta["citation"])
        elif kind == "message_delta":
            message.update(event["delta"])
            message["usage"].update(event["usage"])
    if message is None:
        raise ValueError("no message_start in stream")
    for index, raw in partial_json.items():
        if raw:
            message["content"][index]["input"] = json.loads(raw)
    return message
