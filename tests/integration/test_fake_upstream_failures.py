"""The fake upstream fails like the real Messages API, as seen by the official SDK:
error replies, broken streams, resets and stalls, framing and compression, client
disconnects, many concurrent streams, and the exact log of what it received.

The SDK talks straight to the fake (no proxy in between): if the SDK parses what
the fake sends, the proxy's tests can trust the fake as a stand-in for the API.
"""

from __future__ import annotations

import gzip
import http.client
import json
import resource
import socket
import threading
import time

import anthropic
import httpx2
import pytest

from tests.fakes.upstream import (
    DEFAULT_TEXT,
    ErrorReply,
    RawReply,
    Reply,
    Reset,
    Stall,
    StreamFailure,
    build_sse,
    fold_sse,
    text_block,
)
from tests.integration.upstream_requests import (
    ARGS,
    raw_request,
)

# ----------------------------------------------------------------------------- errors

# `fake` and `client` are the fixtures of tests/integration/upstream_requests.py.
pytestmark = pytest.mark.usefixtures("fresh_fake")


@pytest.mark.parametrize(
    ("status", "exc_type", "error_type"),
    [
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
        (400, anthropic.BadRequestError, "invalid_request_error"),
    ],
)
def test_error_reply_raises_matching_sdk_exception(fake, client, status, exc_type, error_type):
    fake.script(ErrorReply(status, retry_after=7, should_retry=False))
    with pytest.raises(exc_type) as caught:
        client.messages.create(**ARGS)
    err = caught.value
    assert err.status_code == status and err.type == error_type
    assert err.body["type"] == "error" and err.body["error"]["message"]
    assert err.body["request_id"] == err.request_id == err.response.headers["request-id"]
    assert err.response.headers["retry-after"] == "7"
    assert err.response.headers["x-should-retry"] == "false"


def test_sdk_retries_follow_error_headers(fake, client):
    retrying = client.with_options(max_retries=2)
    fake.script(ErrorReply(529, should_retry=False))
    with pytest.raises(anthropic.OverloadedError):
        retrying.messages.create(**ARGS)
    assert len(fake.received) == 1  # x-should-retry: false stops the SDK

    fake.reset()
    fake.script(ErrorReply(529, retry_after=0.05))
    assert retrying.messages.create(**ARGS).content[0].text == DEFAULT_TEXT
    assert [r.header("x-stainless-retry-count") for r in fake.wait_for(2)] == ["0", "1"]


def test_raw_reply_sends_exact_bytes(fake, client):
    fake.script(RawReply(502, [("Content-Type", "text/html")], b"<html>Bad gateway</html>"))
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(**ARGS)
    assert caught.value.status_code == 502 and caught.value.body == "<html>Bad gateway</html>"


# ----------------------------------------------------------------------------- failures


def test_mid_stream_error_event_raises_api_error(fake, client):
    fake.script(StreamFailure(after_events=4, mode="error_event"))
    with pytest.raises(anthropic.APIStatusError) as caught:
        with client.messages.stream(**ARGS) as stream:
            stream.until_done()
    # The HTTP status was already 200, so the SDK raises the base class with it.
    assert caught.value.type == "overloaded_error" and caught.value.status_code == 200
    body = fake.received[0].response_body
    assert body.endswith(
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
        b'"message":"Overloaded"}}\n\n'
    )


def test_mid_stream_reset_raises_connection_error(fake, client):
    fake.script(StreamFailure(after_events=4, mode="reset"))
    # SDK 2.14 surfaces body-read failures as raw httpx2 errors, not APIConnectionError.
    with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
        with client.messages.stream(**ARGS) as stream:
            stream.until_done()
    rec = fake.received[0]
    assert rec.wait_finished() and not rec.completed
    assert rec.usage["output_tokens"] == 1  # only message_start's usage went out


def test_eof_without_message_stop_goes_unnoticed_by_the_sdk(fake, client):
    fake.script(StreamFailure(after_events=5, mode="eof"))
    with client.messages.stream(**ARGS) as stream:
        stream.until_done()
        assert stream.current_message_snapshot.stop_reason is None


def test_reset_before_response_is_a_connection_error(fake, client):
    fake.script(Reset())
    with pytest.raises(anthropic.APIConnectionError):
        client.messages.create(**ARGS)
    assert fake.received[0].status is None


def test_stall_times_out_the_client_and_the_fake_sees_it_leave(fake, client):
    fake.script(Stall(5))
    with pytest.raises(anthropic.APITimeoutError):
        client.messages.create(**ARGS, timeout=0.3)
    rec = fake.received[0]
    assert rec.wait_finished(2) and rec.closed_at is not None and rec.status is None


# ----------------------------------------------------------------------------- framing


@pytest.mark.parametrize("framing", ["close", "length", "chunked"])
@pytest.mark.parametrize("compress", [None, "gzip"])
def test_framing_and_gzip_parse_in_the_sdk(fake, client, framing, compress):
    reply = Reply(framing=framing, compress=compress)
    fake.script(reply, reply)
    raw = client.messages.with_raw_response.create(**ARGS)
    assert raw.parse().content[0].text == DEFAULT_TEXT
    with client.messages.stream(**ARGS) as stream:
        assert stream.get_final_text() == DEFAULT_TEXT
        headers = stream.response.headers
    assert headers.get("content-encoding") == compress
    if framing == "close":
        assert "content-length" not in headers and "transfer-encoding" not in headers
        assert headers["connection"] == "close"
    rec = fake.received[1]
    assert rec.response_body == b"".join(build_sse(rec.json, rec.behaviour))


def test_gzip_only_when_the_client_accepts_it(fake):
    body = json.dumps(ARGS).encode()
    fake.script(Reply(compress="gzip"), Reply(compress="gzip"))
    resp, data = raw_request(fake, "POST", "/v1/messages", body, {"Accept-Encoding": "gzip"})
    assert resp.getheader("Content-Encoding") == "gzip"
    assert json.loads(gzip.decompress(data))["content"][0]["text"] == DEFAULT_TEXT
    resp, data = raw_request(fake, "POST", "/v1/messages", body, {"Accept-Encoding": "identity"})
    assert resp.getheader("Content-Encoding") is None and json.loads(data)["type"] == "message"


def test_closed_at_is_set_when_the_client_disconnects_mid_stream(fake):
    fake.script(Reply(event_delay_s=0.2))
    body = json.dumps({**ARGS, "stream": True}).encode()
    sock = socket.create_connection(("127.0.0.1", fake.port), timeout=5)
    sock.sendall(
        b"POST /v1/messages HTTP/1.1\r\nHost: fake\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    received = b""
    while b"event: message_start" not in received:
        received += sock.recv(65536)
    sock.close()
    closed = time.monotonic()

    rec = fake.received[0]
    assert rec.wait_finished(2)
    assert rec.closed_at is not None and rec.closed_at - closed < 1.0
    assert not rec.completed
    assert b"message_stop" not in rec.response_body


def test_serves_500_concurrent_streams(fake):
    clients = 500
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * clients + 200  # both ends of every connection live in this process
    if soft < needed:
        if hard != resource.RLIM_INFINITY and hard < needed:
            pytest.skip(f"needs {needed} file descriptors, hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    # Each reply waits 0.5 s before its headers: served one at a time this would
    # take minutes, so finishing in seconds proves the streams overlapped.
    fake.script(*[Reply(delay_s=0.5, event_delay_s=0.01)] * clients)
    body = json.dumps({**ARGS, "stream": True}).encode()
    texts, errors = [], []

    def stream_once() -> None:
        try:
            _, data = raw_request(fake, "POST", "/v1/messages", body)
            texts.append(fold_sse(data)["content"][0]["text"])
        except Exception as exc:  # collected and asserted on below
            errors.append(repr(exc))

    started = time.monotonic()
    threads = [threading.Thread(target=stream_once) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert texts == [DEFAULT_TEXT] * clients
    assert time.monotonic() - started < 10


# ----------------------------------------------------------------------------- recording


def test_received_keeps_the_request_exactly(fake):
    body = b'{"model":"m","max_tokens":5,"messages":[]}'
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    conn.putrequest("POST", "/v1/messages?beta=true&x=%20y", skip_accept_encoding=True)
    for name, value in [("X-Mixed-Case", "1"), ("x-api-key", "sk-ant-secret"), ("X-Dup", "a")]:
        conn.putheader(name, value)
    conn.putheader("X-Dup", "b")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    conn.send(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    assert conn.getresponse().read()
    conn.close()

    rec = fake.wait_for(1)[0]
    assert rec.method == "POST"
    assert rec.raw_path == "/v1/messages?beta=true&x=%20y"
    assert rec.path == "/v1/messages" and rec.query == "beta=true&x=%20y"
    assert [h for h in rec.headers if h[0].lower().startswith("x-")] == [
        ("X-Mixed-Case", "1"),
        ("x-api-key", "sk-ant-secret"),
        ("X-Dup", "a"),
        ("X-Dup", "b"),
    ]
    assert rec.body == body and rec.json == json.loads(body)
    assert rec.received_at <= time.monotonic()


def test_script_is_fifo_then_default_and_keep_alive_survives(fake):
    fake.script(ErrorReply(529), Reply(content=[text_block("second")]))
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=5)
    statuses = []
    for _ in range(3):
        conn.request("POST", "/v1/messages", json.dumps(ARGS))
        resp = conn.getresponse()
        statuses.append((resp.status, json.loads(resp.read()).get("content")))
    conn.close()
    assert statuses == [
        (529, None),
        (200, [{"type": "text", "text": "second"}]),
        (200, [{"type": "text", "text": DEFAULT_TEXT}]),
    ]
    assert len(fake.received) == 3

