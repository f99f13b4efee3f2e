"""Pure builders for the fake Anthropic upstream (no sockets, no threads).

Everything the fake server writes is built here, so tests can compute the exact
expected message / SSE bytes for a request without running a server:

* behaviours (``Reply``, ``ErrorReply``, ``Reset``, ``Stall``, ``StreamFailure``,
  ``RawReply``) are plain dataclasses;
* content-block helpers return blocks in the non-streaming message shape;
* ``build_message`` / ``build_sse`` turn (request JSON, Reply) into the message
  and its event stream, and ``fold_sse`` folds a stream back into the message;
* the ``*_headers`` helpers produce the response headers the real API sends.

Shapes follow captures of api.anthropic.com (2025-2026): compact JSON per SSE
``data:`` line, ``model`` first in message objects, ``stop_details: null``,
``caller: {"type": "direct"}`` on tool_use blocks, a leading empty
``input_json_delta``, and a ``ping`` right after the first ``content_block_start``.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import email.utils
import hashlib
import json
import re
import secrets
import string
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_MODEL = "claude-sonnet-4-6"
DEFAULT_TEXT = "Hello! I am the fake upstream."
DEFAULT_THINKING = "The user greeted me. A short, friendly greeting is the right answer."
ORGANIZATION_ID = "4f6c9a2e-8b1d-4c7e-9f3a-2d5b8e1c6a90"

TEXT_DELTA_CHARS = 12  # upper bound on the text of one text/thinking delta
# partial_json pieces cycle through these lengths so splits land on varied
# boundaries (inside keys, strings, escapes), as the real API's do.
JSON_PIECE_LENGTHS = (5, 11, 3, 8, 13)

HeaderValue = str | int | float | None
Headers = Mapping[str, HeaderValue] | Sequence[tuple[str, HeaderValue]]

_B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase

# Usage keys that only appear in message_start (message_delta never repeats them).
_START_ONLY_USAGE = ("cache_creation", "service_tier", "inference_geo")
_DELTA_USAGE = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
ERROR_MESSAGES = {
    "invalid_request_error": "Invalid request.",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low to access the Anthropic API.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not Found",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": (
        "This request would exceed the rate limit for your organization of 4,000 requests "
        "per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits."
    ),
    "api_error": "Internal server error",
    "timeout_error": "Request timed out",
    "overloaded_error": "Overloaded",
}

# (id, display_name, created, max_input_tokens, max_tokens, deprecated), newest
# first like the API. The 4.5 Sonnet/Opus snapshots are deprecated per SDK 2.14's table.
_1M = 1_000_000
MODELS = (
    ("claude-opus-4-7", "Claude Opus 4.7", "2026-04-16", _1M, 128_000, None),
    ("claude-opus-4-6", "Claude Opus 4.6", "2026-02-05", _1M, 128_000, None),
    ("claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-17", _1M, 64_000, None),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-15", 200_000, 64_000, None),
    ("claude-opus-4-5-20251101", "Claude Opus 4.5", "2025-11-24", 200_000, 64_000, "2026-07-22"),
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29", _1M, 64_000, "2026-05-29"),
)


# --------------------------------------------------------------------------- behaviours


@dataclass
class Reply:
    """A success: a message (JSON) or its event stream (SSE), per the request's ``stream``.

    ``message_id`` pins the message id; when None it is derived from the request and
    the content, so ``build_message``/``build_sse`` reproduce what the server sent.
    """

    content: list[dict[str, Any]] | None = None
    stop_reason: str | None = "end_turn"
    model: str | None = None
    usage: dict[str, Any] | None = None
    headers: Headers | None = None
    delay_s: float = 0.0
    event_delay_s: float = 0.0
    framing: str = "chunked"  # "chunked" | "length" | "close"
    compress: str | None = None  # "gzip"
    unified: bool | Mapping[str, str] = False  # a mapping overrides unified header values
    message_id: str | None = None
    stop_sequence: str | None = None


@dataclass
class ErrorReply:
    """An Anthropic error response: ``{"type":"error","error":{...},"request_id":...}``."""

    status: int = 529
    error_type: str | None = None
    message: str | None = None
    headers: Headers | None = None
    retry_after: float | int | None = None
    should_retry: bool | None = None
    delay_s: float = 0.0


@dataclass
class Reset:
    """Read the request, then RST the connection before any response byte."""


@dataclass
class Stall:
    """Read the request and send nothing for ``seconds``, then close (FIN)."""

    seconds: float = 30.0


@dataclass
class StreamFailure:
    """Start a normal SSE stream, break it after ``after_events`` complete events.

    mode: "reset" (RST), "eof" (clean end without message_stop), "stall" (silence
    for ``stall_s`` then FIN), "error_event" (mid-stream ``event: error`` then a
    clean end), "partial" (half of the next event, then RST).
    """

    after_events: int = 3
    mode: str = "reset"
    stall_s: float = 30.0


@dataclass
class RawReply:
    """Exactly these bytes. Content-Length is added only if neither it nor
    Transfer-Encoding is among ``headers``; with ``Transfer-Encoding: chunked``
    the body is chunked by the server."""

    status: int = 200
    headers: Headers | None = None
    body: bytes = b""


Behaviour = Reply | ErrorReply | Reset | Stall | StreamFailure | RawReply


# --------------------------------------------------------------------------- ids


def random_id(prefix: str, length: int = 22) -> str:
    return prefix + "".join(secrets.choice(_B62) for _ in range(length))


def new_request_id() -> str:
    return random_id("req_011C", 20)


def _b62_digest(*parts: Any, length: int = 22) -> str:
    number = int.from_bytes(hashlib.sha256(compact_json(list(parts)).encode()).digest(), "big")
    out = []
    for _ in range(length):
        number, digit = divmod(number, 62)
        out.append(_B62[digit])
    return "".join(out)


def _signature_for(thinking: str) -> str:
    digest = hashlib.sha512(thinking.encode()).digest()
    return base64.b64encode(b"\x12\x9a\x01\n@" + digest + digest[:32]).decode()


# --------------------------------------------------------------------------- blocks


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def thinking_block(thinking: str, signature: str | None = None) -> dict[str, Any]:
    sig = signature if signature is not None else _signature_for(thinking)
    return {"type": "thinking", "thinking": thinking, "signature": sig}


def redacted_thinking_block(data: str | None = None) -> dict[str, Any]:
    if data is None:
        data = "EmwKAhgBEgy" + base64.b64encode(hashlib.sha256(b"redacted").digest()).decode()
    return {"type": "redacted_thinking", "data": data}


def tool_use_block(name: str, input: dict[str, Any], id: str | None = None) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": id or random_id("toolu_01"),
        "name": name,
        "input": input,
        "caller": {"type": "direct"},
    }


def server_tool_blocks(query: str, results: list[dict[str, Any]] | None = None) -> list[dict]:
    """A web_search ``server_tool_use`` block and its ``web_search_tool_result``."""
    tool_id = random_id("srvtoolu_01")
    if results is None:
        slug = re.sub(r"[^a-z0-9]+", "-", query.lower()).strip("-") or "search"
        results = [
            {
                "type": "web_search_result",
                "title": f"{query} - Example Reference",
                "url": f"https://example.com/{slug}",
                "encrypted_content": "Et8QCioIExgCIiQ" + _b62_digest(query, length=40),
                "page_age": "March 12, 2026",
            }
        ]
    return [
        {"type": "server_tool_use", "id": tool_id, "name": "web_search", "input": {"query": query}},
        {
            "type": "web_search_tool_result",
            "tool_use_id": tool_id,
            "content": results,
            "caller": {"type": "direct"},
        },
    ]


def text_of_deltas(n: int) -> str:
    """A text that ``build_sse`` streams as exactly ``n`` text deltas."""
    return "".join(f"token{i:05d} " for i in range(n))  # 11-12 chars: one per delta


# --------------------------------------------------------------------------- tokens


def compact_json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _as_request(request_json: Mapping[str, Any] | bytes | str | None) -> dict[str, Any]:
    if request_json is None:
        return {}
    if isinstance(request_json, bytes | str):
        return json.loads(request_json)
    return dict(request_json)


def count_input_tokens(request_json: Mapping[str, Any] | bytes | str | None) -> int:
    """Deterministic input-token count: the compact JSON of the prompt fields // 4.

    Only ``system``/``messages``/``tools`` count, so the same prompt costs the same
    whether streamed, non-streamed or sent to count_tokens (as with the real API).
    """
    req = _as_request(request_json)
    prompt = {key: req[key] for key in ("system", "messages", "tools") if key in req}
    return max(1, len(compact_json(prompt).encode()) // 4)


def count_output_tokens(content: Iterable[Mapping[str, Any]]) -> int:
    chars = 0
    for block in content:
        chars += len(block.get("text", "")) + len(block.get("thinking", ""))
        if block.get("type") in ("tool_use", "server_tool_use"):
            chars += len(json.dumps(block.get("input", {}), ensure_ascii=False))
    return max(1, chars // 4)


def thinking_requested(request_json: Mapping[str, Any]) -> bool:
    thinking = request_json.get("thinking")
    return isinstance(thinking, Mapping) and thinking.get("type") in ("enabled", "adaptive")


# --------------------------------------------------------------------------- messages


def resolve_content(request_json: Mapping[str, Any], reply: Reply) -> list[dict[str, Any]]:
    if reply.content is not None:
        return copy.deepcopy(list(reply.content))
    blocks = [thinking_block(DEFAULT_THINKING)] if thinking_requested(request_json) else []
    return [*blocks, text_block(DEFAULT_TEXT)]


def build_usage(
    request_json: Mapping[str, Any], content: list[dict[str, Any]], override: Mapping | None
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": count_input_tokens(request_json),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
        "output_tokens": count_output_tokens(content),
    }
    searches = sum(
        1 for b in content if b.get("type") == "server_tool_use" and b.get("name") == "web_search"
    )
    fetches = sum(
        1 for b in content if b.get("type") == "server_tool_use" and b.get("name") == "web_fetch"
    )
    if searches or fetches:
        usage["server_tool_use"] = {"web_search_requests": searches, "web_fetch_requests": fetches}
    usage["service_tier"] = "standard"
    usage["inference_geo"] = "not_available"
    if override:
        override = copy.deepcopy(dict(override))
        # Keep the TTL breakdown consistent with an overridden cache-creation total.
        if "cache_creation_input_tokens" in override and "cache_creation" not in override:
            usage["cache_creation"] = {
                "ephemeral_5m_input_tokens": override["cache_creation_input_tokens"],
                "ephemeral_1h_input_tokens": 0,
            }
        usage.update(override)
    return usage


def build_message(
    request_json: Mapping[str, Any] | bytes | str | None, reply: Reply | None = None
) -> dict[str, Any]:
    """The non-streaming message the fake returns for this request and Reply."""
    req = _as_request(request_json)
    reply = reply or Reply()
    content = resolve_content(req, reply)
    return {
        "model": reply.model or req.get("model") or DEFAULT_MODEL,
        "id": reply.message_id or "msg_01" + _b62_digest(req, content, reply.stop_reason),
        "type": "message",
        "role": "assistant",
        "content": content,
        "stop_reason": reply.stop_reason,
        "stop_sequence": reply.stop_sequence,
        "stop_details": None,
        "usage": build_usage(req, content, reply.usage),
    }


# --------------------------------------------------------------------------- SSE


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


# --------------------------------------------------------------------------- bodies


def error_body(error_type: str, message: str, request_id: str) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": request_id,
    }


def models_page(query: Mapping[str, str]) -> dict[str, Any]:
    """The ``GET /v1/models`` page for parsed query params; ValueError on a bad limit."""
    models = [_model_dict(row) for row in MODELS]
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        raise ValueError("limit: Input should be an integer between 1 and 1000")
    ids = [m["id"] for m in models]
    if query.get("after_id"):
        start = ids.index(query["after_id"]) + 1 if query["after_id"] in ids else len(ids)
        page, has_more = models[start : start + limit], start + limit < len(ids)
    elif query.get("before_id"):
        end = ids.index(query["before_id"]) if query["before_id"] in ids else 0
        page, has_more = models[max(0, end - limit) : end], end - limit > 0
    else:
        page, has_more = models[:limit], limit < len(ids)
    return {
        "data": page,
        "has_more": has_more,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }


def model_info(model_id: str) -> dict[str, Any] | None:
    return next((_model_dict(row) for row in MODELS if row[0] == model_id), None)


def _model_dict(row: tuple[str, str, str, int, int, str | None]) -> dict[str, Any]:
    model_id, name, created, max_input, max_tokens, deprecated_at = row
    return {
        "type": "model",
        "id": model_id,
        "display_name": name,
        "created_at": f"{created}T00:00:00Z",
        "lifecycle": "deprecated" if deprecated_at else "active",
        "deprecated_at": f"{deprecated_at}T00:00:00Z" if deprecated_at else None,
        "max_input_tokens": max_input,
        "max_tokens": max_tokens,
    }


# --------------------------------------------------------------------------- headers


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
