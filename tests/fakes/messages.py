"""Pure builders for the fake Anthropic upstream's messages (no sockets, no threads).

Everything the fake server writes is built here and in its sibling modules (``sse``,
``errors``, ``models``, ``api_headers``), so tests can compute the exact expected
message / SSE bytes for a request without running a server:

* content-block helpers return blocks in the non-streaming message shape;
* ``build_message`` turns (request JSON, Reply) into the message, with ids derived
  from the request and a deterministic usage (``count_input_tokens``).

Shapes follow captures of api.anthropic.com (2025-2026): ``model`` first in message
objects, ``stop_details: null``, ``caller: {"type": "direct"}`` on tool_use blocks.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import secrets
import string
from collections.abc import Iterable, Mapping
from typing import Any

from tests.fakes.behaviours import Reply

DEFAULT_MODEL = "claude-sonnet-4-6"
DEFAULT_TEXT = "Hello! I am the fake upstream."
DEFAULT_THINKING = "The user greeted me. A short, friendly greeting is the right answer."

_B62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


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
