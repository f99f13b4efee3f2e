"""Streams that end badly: client hang-ups close the upstream, upstream failures end the
client's stream with a clean `event: error`."""

from __future__ import annotations

import json
import socket
import time

import anthropic
import pytest
import requests

from tests.fakes.upstream import Reply, StreamFailure, text_block

BODY = {"model": "claude-opus-4-8", "max_tokens": 256, "stream": True,
        "messages": [{"role": "user", "content": "Tell me a long story"}]}
LONG = Reply(content=[text_block("word " * 400)])


def raw_stream_request(proxy) -> socket.socket:
    body = json.dumps(BODY).encode()
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Type: application/json\r\nx-api-key: sk-ant-api03-disconnect\r\n"
                 b"anthropic-version: 2023-06-01\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed early"
        data += chunk
    return data


@pytest.mark.parametrize("event_delay", [0.2, 5.0], ids=["steady", "silent-upstream"])
def test_client_disconnect_closes_upstream_within_a_second(proxy, upstream, event_delay):
    upstream.script(Reply(content=[text_block("word " * 400)], event_delay_s=event_delay))
    sock = raw_stream_request(proxy)
    head = read_until(sock, b"event: message_start")
    request_id = head.split(b"x-nexus-request-id: ")[1].split(b"\r\n")[0].decode()
    sock.close()
    closed = time.monotonic()
    received = upstream.wait_for(1)[0]
    assert received.wait_finished(timeout=3)
    assert received.closed_at is not None
    assert received.closed_at - closed < 1.0
    assert not received.completed
    record = proxy.exchange(request_id)
    assert record["status"] == "client_disconnected"
    assert record["outcome"] == "ExchangeDisconnected"


def events_of(data: bytes) -> list[tuple[str, dict]]:
    out = []
    for block in data.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        out.append((lines.get("event"), json.loads(lines["data"])))
    return out


@pytest.mark.parametrize("mode, error_type", [
    ("reset", "api_error"), ("eof", "api_error"), ("partial", "api_error"),
])
def test_upstream_failure_mid_stream_ends_with_error_event(proxy, upstream, mode, error_type):
    upstream.script(StreamFailure(after_events=4, mode=mode))
    response = requests.post(proxy.url + "/v1/messages", json=BODY, timeout=30,
                             headers={"x-api-key": "sk-ant-api03-midstream"})
    data = response.content
    sent = upstream.received[0].response_body
    events = events_of(data)
    assert events[-1] == ("error", {"type": "error", "error": {
        "type": error_type, "message": events[-1][1]["error"]["message"]}})
    relayed = data[: data.rindex(b"event: error")]
    # whole upstream events only, byte for byte; a half event is never passed on
    assert sent.startswith(relayed)
    assert relayed.endswith(b"\n\n")
    assert len(events) == 5
    record = proxy.exchange(response.headers["x-nexus-request-id"])
    assert record["outcome"] == "ExchangeFailed"
    assert record["error_type"] == error_type


def test_upstream_error_event_is_passed_through_alone(proxy, upstream):
    upstream.script(StreamFailure(after_events=3, mode="error_event"))
    response = requests.post(proxy.url + "/v1/messages", json=BODY, timeout=30,
                             headers={"x-api-key": "sk-ant-api03-midstream"})
    assert response.content == upstream.received[0].response_body
    assert response.content.count(b"event: error") == 1
    record = proxy.exchange(response.headers["x-nexus-request-id"])
    assert record["error_type"] == "overloaded_error"


def test_silence_inside_stream_times_out(start_proxy, upstream):
    proxy = start_proxy(CLAUDE_API_TIMEOUT="0.5")
    upstream.script(StreamFailure(after_events=3, mode="stall", stall_s=5))
    response = requests.post(proxy.url + "/v1/messages", json=BODY, timeout=30,
                             headers={"x-api-key": "sk-ant-api03-midstream"})
    events = events_of(response.content)
    assert events[-1][0] == "error"
    assert events[-1][1]["error"]["type"] == "timeout_error"


def test_sdk_sees_mid_stream_failure_as_an_error(proxy, upstream):
    upstream.script(StreamFailure(after_events=4, mode="reset"))
    client = anthropic.Anthropic(base_url=proxy.url, api_key="sk-ant-api03-x", max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as info:
        with client.messages.stream(model="claude-opus-4-8", max_tokens=64,
                                    messages=[{"role": "user", "content": "Hi"}]) as stream:
            for _ in stream:
                pass
    assert "upstream" in str(info.value).lower()


def test_client_gone_while_waiting_for_a_json_answer_closes_upstream(proxy, upstream):
    upstream.script(Reply(delay_s=5))  # the upstream "thinks" before any header
    mark = len(proxy.lines)
    body = json.dumps({**BODY, "stream": False}).encode()
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"x-api-key: sk-ant-api03-waiting\r\n"
                 + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    received = upstream.wait_for(1)[0]
    sock.close()
    closed = time.monotonic()
    assert received.wait_finished(timeout=6)
    assert received.closed_at is not None and received.closed_at - closed < 1.0
    assert not received.completed
    proxy.wait_record(mark, outcome="ExchangeDisconnected", status="client_disconnected")


def test_body_cut_short_is_never_forwarded(proxy, upstream):
    mark = len(proxy.lines)
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"Content-Length: 1000\r\n\r\n" + b'{"model": "claude-opus-4-8", ')
    time.sleep(0.2)
    sock.close()
    record = proxy.wait_record(mark, outcome="ExchangeDisconnected")
    assert record["status"] == "client_disconnected"
    assert "before the whole body arrived (1000 bytes announced)" in record["msg"]
    assert upstream.received == []

