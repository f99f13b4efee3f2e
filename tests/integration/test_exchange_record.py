"""The Exchange record the proxy builds (what storage will write), checked in-process:
the rebuilt message equals the upstream's, usage is folded, one terminal event each."""

from __future__ import annotations

import collections
import gzip
import json

import requests

from app.events import ExchangeEnded
from tests.fakes.upstream import (
    ErrorReply,
    RawReply,
    Reply,
    StreamFailure,
    build_message,
    server_tool_blocks,
    text_block,
    thinking_block,
    tool_use_block,
)

KEY = "sk-ant-api03-recordtest-abcdefghijkl"
BODY = {"model": "claude-opus-4-5", "max_tokens": 1024, "tools": [{"name": "Bash"}],
        "system": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        "messages": [{"role": "user", "content": "Run it"}]}


def post(inproc, body, **headers):
    return requests.post(inproc.url + "/v1/messages?beta=true", json=body, timeout=30,
                         headers={"x-api-key": KEY, "anthropic-version": "2023-06-01",
                                  "x-claude-code-session-id": "sess-1", **headers})


def test_streamed_message_is_rebuilt(inproc, upstream):
    reply = Reply(content=[thinking_block("Plan: run ls."), text_block("Running."),
                           tool_use_block("Bash", {"command": "ls -la", "n": [1, 2]}),
                           *server_tool_blocks("docs")],
                  stop_reason="tool_use", usage={"cache_read_input_tokens": 120})
    upstream.script(reply)
    response = post(inproc, {**BODY, "stream": True})
    assert response.status_code == 200
    exchange = inproc.ended_for(response.headers["x-nexus-request-id"]).exchange
    received = upstream.received[0]
    assert exchange.response == build_message(received.json, reply)
    assert exchange.usage == received.usage
    assert exchange.usage["cache_read_input_tokens"] == 120
    assert [t["name"] for t in exchange.tool_uses] == ["Bash"]
    assert exchange.tool_uses[0]["input"] == {"command": "ls -la", "n": [1, 2]}
    assert exchange.request_type == "inference"
    assert exchange.session_id == "sess-1"
    assert exchange.query == "beta=true"
    assert exchange.status == 200 and exchange.error_type is None
    assert exchange.first_byte_ms is not None and exchange.first_token_ms is not None
    assert b"".join(raw for _, raw in exchange.chunks) == received.response_body
    offsets = [at for at, _ in exchange.chunks]
    assert offsets == sorted(offsets)


def test_json_and_gzip_bodies_are_read_for_the_record(inproc, upstream):
    reply = Reply(content=[text_block("zipped")], compress="gzip")
    upstream.script(reply)
    response = requests.post(inproc.url + "/v1/messages", json=BODY, timeout=30, stream=True,
                             headers={"x-api-key": KEY, "accept-encoding": "gzip"})
    raw = response.raw.read(decode_content=False)
    assert response.headers["content-encoding"] == "gzip"
    exchange = inproc.ended_for(response.headers["x-nexus-request-id"]).exchange
    assert gzip.decompress(raw) == upstream.received[0].response_body  # relayed as sent
    assert exchange.response["content"] == [{"type": "text", "text": "zipped"}]
    assert exchange.usage == upstream.received[0].usage


def test_upstream_error_answer_is_recorded(inproc, upstream):
    upstream.script(ErrorReply(400, message="max_tokens: too large"))
    response = post(inproc, BODY)
    exchange = inproc.ended_for(response.headers["x-nexus-request-id"]).exchange
    assert exchange.status == 400
    assert exchange.error_type == "invalid_request_error"
    assert exchange.error_message == "max_tokens: too large"


def test_one_start_and_one_terminal_event_per_exchange(inproc, upstream):
    upstream.script(Reply(), ErrorReply(529), ErrorReply(529), ErrorReply(529),
                    StreamFailure(after_events=2, mode="reset"))
    ids = [
        post(inproc, BODY),                                  # completed
        post(inproc, BODY),                                  # 529 after retries
        requests.post(inproc.url + "/v1/messages", data=b"{", timeout=10),  # invalid JSON
        post(inproc, {**BODY, "stream": True}),              # failed mid-stream
        requests.get(inproc.url + "/v1/models", timeout=10,  # light row
                     headers={"x-api-key": KEY}),
        requests.get(inproc.url + "/v1/models", timeout=10),  # no credentials: 401
    ]
    ids = [r.headers["x-nexus-request-id"] for r in ids]
    for request_id in ids:
        inproc.ended_for(request_id)
    started = collections.Counter(e.exchange.id for e in inproc.started)
    ended = collections.Counter(e.exchange.id for e in inproc.ended)
    assert set(started) == set(ended) == set(ids)
    assert set(started.values()) == set(ended.values()) == {1}
    kinds = {e.exchange.id: type(e).__name__ for e in inproc.ended}
    assert [kinds[i] for i in ids] == ["ExchangeCompleted", "ExchangeCompleted",
                                       "ExchangeFailed", "ExchangeFailed", "ExchangeCompleted",
                                       "ExchangeFailed"]


def test_bodiless_answers_complete(inproc, upstream):
    upstream.script(RawReply(204, [("request-id", "req_empty")], b""),
                    RawReply(200, [("content-type", "application/json"),
                                   ("content-length", "0")], b""))
    deleted = requests.delete(inproc.url + "/v1/files/file_123", timeout=10,
                              headers={"x-api-key": KEY})
    head = requests.head(inproc.url + "/v1/models", timeout=10, headers={"x-api-key": KEY})
    assert deleted.status_code == 204 and deleted.headers["request-id"] == "req_empty"
    assert head.status_code == 200 and head.content == b""
    for response in (deleted, head):
        ended = inproc.ended_for(response.headers["x-nexus-request-id"])
        assert type(ended).__name__ == "ExchangeCompleted"
    assert [r.method for r in upstream.received] == ["DELETE", "HEAD"]


def test_the_parsed_body_is_let_go_once_the_terminal_event_is_out(inproc, upstream):
    """Subscribers of the terminal event see the parsed body; the exchange then keeps only its
    bytes (it may wait in the writer's queue, and a parsed body is thousands of objects)."""
    seen = []
    inproc.app.extensions["nexus.events"].subscribe(
        ExchangeEnded, lambda event: seen.append(event.exchange.request_json))
    upstream.script(Reply())
    response = post(inproc, BODY)
    exchange = inproc.ended_for(response.headers["x-nexus-request-id"]).exchange
    assert seen == [BODY]
    assert exchange.request_json is None
    assert json.loads(exchange.request_body) == BODY
