"""Retries before the first byte (SPEC §3.4), through a real proxy process."""

from __future__ import annotations

import json

import requests

from tests.fakes.upstream import ErrorReply, Reply, Reset, Stall
from tests.support import free_port

BODY = {"model": "claude-opus-4-8", "max_tokens": 32,
        "messages": [{"role": "user", "content": "Hi"}]}
HEADERS = {"x-api-key": "sk-ant-api03-retrytest-0000000000", "anthropic-version": "2023-06-01"}


def post(proxy, body=BODY, **kwargs):
    return requests.post(proxy.url + "/v1/messages", json=body, headers=HEADERS, timeout=60,
                         **kwargs)


def test_529_twice_then_200(proxy, upstream):
    upstream.script(ErrorReply(529), ErrorReply(529), Reply())
    response = post(proxy)
    assert response.status_code == 200
    assert response.json()["content"][0]["type"] == "text"
    assert len(upstream.received) == 3
    record = proxy.exchange(response.headers["x-nexus-request-id"])
    assert record["attempts"] == 3
    assert record["status"] == 200


def test_429_retry_after_is_honoured(proxy, upstream):
    upstream.script(ErrorReply(429, retry_after=1), Reply())
    response = post(proxy)
    assert response.status_code == 200
    first, second = upstream.received
    assert second.received_at - first.received_at >= 1.0


def test_streaming_request_is_retried_too(proxy, upstream):
    upstream.script(ErrorReply(503), Reply())
    response = post(proxy, body={**BODY, "stream": True})
    assert response.status_code == 200
    assert response.content == upstream.received[1].response_body


def test_exhausted_retries_return_the_last_upstream_answer(proxy, upstream):
    upstream.script(ErrorReply(529), ErrorReply(529),
                    ErrorReply(529, message="Still overloaded", headers=[("x-custom", "last")]))
    response = post(proxy)
    last = upstream.received[2]
    assert len(upstream.received) == 3
    assert response.status_code == 529
    assert response.content == last.response_body
    assert response.json()["error"] == {"type": "overloaded_error", "message": "Still overloaded"}
    for name, value in last.response_headers:
        if name.lower() not in ("connection", "transfer-encoding", "date"):
            assert response.headers[name] == value, name


def test_x_should_retry_false_stops_retries(proxy, upstream):
    upstream.script(ErrorReply(529, should_retry=False), Reply())
    response = post(proxy)
    assert response.status_code == 529
    assert len(upstream.received) == 1


def test_client_errors_are_not_retried(proxy, upstream):
    upstream.script(ErrorReply(400, message="messages: field required"))
    response = post(proxy)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "messages: field required"
    assert len(upstream.received) == 1


def test_reset_before_headers_is_retried(proxy, upstream):
    upstream.script(Reset(), Reply())
    response = post(proxy)
    assert response.status_code == 200
    assert len(upstream.received) == 2


def test_unreachable_upstream_is_502(start_proxy):
    proxy = start_proxy(f"http://127.0.0.1:{free_port()}", UPSTREAM_MAX_RETRIES="1")
    response = post(proxy)
    assert response.status_code == 502
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    record = proxy.exchange(response.headers["x-nexus-request-id"])
    assert record["attempts"] == 2
    health = requests.get(proxy.url + "/health", timeout=5).json()
    assert health["status"] == "degraded"
    assert health["upstream"]["last_seen"]["reachable"] is False


def test_silent_upstream_is_504(start_proxy, upstream):
    proxy = start_proxy(CLAUDE_API_TIMEOUT="0.5", UPSTREAM_MAX_RETRIES="0")
    upstream.script(Stall(3))
    response = post(proxy)
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "timeout_error"
    assert json.loads(response.content)["type"] == "error"
