"""A sample as a test fixture: what a client sent, what the upstream answered, what the proxy
should make of it. Pure: no Flask, no files.

    {"format": "claude-nexus-fixture", "version": 1, "name", "source": {"id", "received_at"},
     "request":  {"method", "path", "query", "headers": [[name, value]...], "body"},
     "response": {"status", "headers", "stream", "sse": "event: …\\n\\n…"} or {…, "body"},
     "expected": {"status", "outcome", "request_type", "model", "stream",
                  "usage": {input_tokens, output_tokens, cache_creation_input_tokens,
                            cache_read_input_tokens},
                  "tool_calls": [{"name", "input"}...]}}

Request headers are the ones worth forwarding again: no credential (the test brings its own
key), nothing hop-by-hop or per-hop (Host, Content-Length), nothing masked. Response headers lose
their framing (Content-Length, Transfer-Encoding) and Content-Encoding — the stream and body are
kept decoded — and Set-Cookie. `response_bytes` is the exact body to send back: the SSE text, or
the JSON body in compact form.
"""

from __future__ import annotations

import json
from typing import Any

from app.proxy.headers import HOP_BY_HOP, PER_HOP_REQUEST
from app.redact import SECRET_HEADERS
from app.samples.sample import REDACTED, is_secret_header

FORMAT = "claude-nexus-fixture"
VERSION = 1
USAGE_FIELDS = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
                "cache_read_input_tokens")
_RESPONSE_DROPPED = frozenset({"content-length", "content-encoding"})


class NotReplayable(ValueError):
    """The sample cannot become a fixture (no complete upstream answer to replay)."""


def fixture_of(sample: dict[str, Any], name: str) -> dict[str, Any]:
    """The fixture of a sample; raises NotReplayable when its answer was not complete."""
    response = sample.get("response") or {}
    if sample.get("outcome") != "completed" or response.get("status") is None:
        raise NotReplayable(f"the exchange did not complete (outcome {sample.get('outcome')}, "
                            f"status {sample.get('status')}): there is no whole answer to replay")
    if response.get("truncated"):
        raise NotReplayable("the answer was too large to be kept whole")
    if response.get("stream") and not response.get("events"):
        raise NotReplayable("the stream's events were not kept")
    request = sample.get("request") or {}
    replayed: dict[str, Any] = {"status": response["status"],
                                "headers": response_headers(response.get("headers") or []),
                                "stream": bool(response.get("stream"))}
    if replayed["stream"]:
        replayed["sse"] = "".join(event["raw"] for event in response["events"])
    else:
        replayed["body"] = response.get("body")
    usage = sample.get("usage") if isinstance(sample.get("usage"), dict) else {}
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": name,
        "source": {"id": sample.get("id"), "received_at": sample.get("received_at")},
        "request": {"method": sample.get("method"), "path": sample.get("path"),
                    "query": sample.get("query") or "",
                    "headers": request_headers(request.get("headers") or []),
                    "body": request.get("body")},
        "response": replayed,
        "expected": {
            "status": sample.get("status"),
            "outcome": sample.get("outcome"),
            "request_type": sample.get("request_type"),
            "model": sample.get("model"),
            "stream": bool(sample.get("stream")),
            "usage": {field: usage.get(field) for field in USAGE_FIELDS},
            "tool_calls": [{"name": tool.get("name"), "input": tool.get("input")}
                           for tool in sample.get("tool_uses") or []
                           if isinstance(tool, dict)],
        },
    }


def request_headers(headers: list[list[str]]) -> list[list[str]]:
    """The sample's request headers a replay can send: no credential, nothing per-hop."""
    return [[name, value] for name, value in headers
            if not _secret(name, value)
            and name.lower() not in HOP_BY_HOP and name.lower() not in PER_HOP_REQUEST]


def response_headers(headers: list[list[str]]) -> list[list[str]]:
    """The sample's response headers a fake upstream can send again with the decoded body."""
    return [[name, value] for name, value in headers
            if not _secret(name, value)
            and name.lower() not in HOP_BY_HOP and name.lower() not in _RESPONSE_DROPPED]


def _secret(name: str, value: str) -> bool:
    # A masked value ("Bearer …abcd", "sk-ant-…wxyz", "[redacted]") is of no use to a replay.
    return (name.lower() in SECRET_HEADERS or is_secret_header(name)
            or REDACTED in value or "…" in value)


def body_bytes(body: Any) -> bytes:
    """A fixture body on the wire: text as it is, JSON compact (as the API sends it)."""
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode()
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def response_bytes(fixture: dict[str, Any]) -> bytes:
    """The exact answer body of a fixture: its SSE text, or its body."""
    response = fixture["response"]
    if response.get("stream"):
        return response["sse"].encode()
    return body_bytes(response.get("body"))


def request_bytes(fixture: dict[str, Any]) -> bytes:
    """The request body of a fixture, as sent."""
    return body_bytes(fixture["request"].get("body"))
