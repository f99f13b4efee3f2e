"""The fake upstream behaves like the real Messages API, as seen by the official SDK.

The SDK talks straight to the fake (no proxy in between): if the SDK parses what
the fake sends, the proxy's tests can trust the fake as a stand-in for the API.
"""

from __future__ import annotations

import gzip
import http.client
import json
import re
import resource
import socket
import threading
import time
from collections.abc import Iterator

import anthropic
import httpx2
import pytest

from tests.fakes.replies import MODELS, PING_EVENT, compact_json, split_text
from tests.fakes.upstream import (
    DEFAULT_TEXT,
    ErrorReply,
    FakeUpstream,
    RawReply,
    Reply,
    Reset,
    Stall,
    StreamFailure,
    build_message,
    build_sse,
    count_input_tokens,
    fold_sse,
    redacted_thinking_block,
    server_tool_blocks,
    text_block,
    thinking_block,
    tool_use_block,
)

MODEL = "claude-sonnet-4-6"  # not on SDK 2.14's deprecation list (4.5 models warn)
PROMPT = [{"role": "user", "content": "Hello there"}]
ARGS = {"model": MODEL, "max_tokens": 256, "messages": PROMPT}


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture(autouse=True)
def _fresh(fake: FakeUpstream) -> None:
    fake.reset()


@pytest.fixture(scope="module")
def client(fake: FakeUpstream) -> Iterator[anthropic.Anthropic]:
    sdk = anthropic.Anthropic(base_url=fake.base_url, api_key="sk-ant-api03-test", max_retries=0)
    yield sdk
    sdk.close()


def raw_request(
    fake: FakeUpstream, method: str, path: str, body: bytes = b"", headers: dict | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    try:
        conn.request(method, path, body, headers or {})
        resp = conn.getresponse()
        return resp, resp.read()
    finally:
        conn.close()


# ----------------------------------------------------------------------------- create


def test_create_returns_default_text_with_realistic_envelope(fake, client):
    raw = client.messages.with_raw_response.create(**ARGS)
    message = raw.parse()
    rec = fake.wait_for(1)[0]

    assert message.content[0].text == DEFAULT_TEXT
    assert message.stop_reason == "end_turn"
    assert message.model == MODEL
    assert re.fullmatch(r"msg_01[0-9A-Za-z]{22}", message.id)
    assert message.usage.input_tokens == count_input_tokens(rec.json)
    assert message.usage.output_tokens == len(DEFAULT_TEXT) // 4
    assert message.usage.cache_creation.ephemeral_5m_input_tokens == 0
    assert message.usage.service_tier == "standard"
    assert message.to_dict() == build_message(rec.json)
    assert rec.usage == message.usage.to_dict()
    assert rec.status == 200 and rec.completed and rec.closed_at is None

    headers = raw.headers
    assert re.fullmatch(r"req_011C[0-9A-Za-z]{20}", headers["request-id"])
    assert raw.request_id == headers["request-id"]
    assert headers["content-type"] == "application/json"
    assert headers["set-cookie"].startswith("_cfuvid=")
    for family in ("requests", "input-tokens", "output-tokens", "tokens"):
        for part in ("limit", "remaining", "reset"):
            assert f"anthropic-ratelimit-{family}-{part}" in headers
    for name in ("anthropic-organization-id", "server", "via", "cf-ray", "date"):
        assert headers[name]
    assert headers["x-robots-tag"] == "none"


def test_create_with_thinking_returns_thinking_then_text(fake, client):
    message = client.messages.create(
        **{**ARGS, "max_tokens": 2048}, thinking={"type": "enabled", "budget_tokens": 1024}
    )
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking and message.content[0].signature
    assert message.content[1].text == DEFAULT_TEXT


def test_create_with_adaptive_thinking_also_thinks(fake, client):
    message = client.messages.create(**ARGS, thinking={"type": "adaptive"})
    assert [block.type for block in message.content] == ["thinking", "text"]


def test_create_tool_use_parses_input(fake, client):
    tool = tool_use_block("get_weather", {"city": "Paris", "units": ["c", "f"], "days": 3})
    fake.script(Reply(content=[text_block("Let me check."), tool], stop_reason="tool_use"))

    message = client.messages.create(**ARGS)

    assert message.stop_reason == "tool_use"
    block = message.content[1]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input == {"city": "Paris", "units": ["c", "f"], "days": 3}
    assert re.fullmatch(r"toolu_01[0-9A-Za-z]{22}", block.id)


def test_usage_override_merges_and_keeps_cache_breakdown(fake, client):
    fake.script(Reply(usage={"cache_read_input_tokens": 900, "cache_creation_input_tokens": 40}))
    usage = client.messages.create(**ARGS).usage
    assert usage.cache_read_input_tokens == 900
    assert usage.cache_creation_input_tokens == 40
    assert usage.cache_creation.ephemeral_5m_input_tokens == 40
    assert usage.input_tokens == count_input_tokens(fake.received[0].json)


# ----------------------------------------------------------------------------- stream

CONTENTS = {
    "text": [text_block("Streaming is fun, and this sentence is split into several deltas.")],
    "thinking": [thinking_block("First I consider the question carefully."), text_block("Yes.")],
    "redacted": [redacted_thinking_block(), text_block("Done.")],
    "tool_use": [
        text_block("Checking."),
        tool_use_block("lookup", {"q": 'naïve "quote"', "n": [1, 2.5, None], "nested": {"a": {}}}),
        tool_use_block("no_args", {}),
    ],
    "server_tool": [*server_tool_blocks("current python version"), text_block("It is 3.14.")],
}


@pytest.mark.parametrize("kind", CONTENTS)
def test_stream_final_message_and_wire_bytes_match_builders(fake, client, kind):
    stop_reason = "tool_use" if kind == "tool_use" else "end_turn"
    reply = Reply(content=CONTENTS[kind], stop_reason=stop_reason)
    fake.script(reply)

    with client.messages.stream(**ARGS) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    rec = fake.received[0]
    assert rec.wait_finished()

    expected = build_message(rec.json, reply)
    assert final.to_dict() == expected
    assert rec.response_body == b"".join(build_sse(rec.json, reply))
    assert fold_sse(rec.response_body) == expected
    assert rec.usage == expected["usage"] and rec.completed
    assert events[0] == "message_start" and events[-1] == "message_stop"
    if kind == "server_tool":
        assert final.usage.server_tool_use.web_search_requests == 1


def test_stream_text_arrives_in_several_deltas(fake, client):
    text = "One two three four five six seven eight nine ten eleven twelve."
    fake.script(Reply(content=[text_block(text)]))
    with client.messages.stream(**ARGS) as stream:
        pieces = list(stream.text_stream)
    assert pieces == split_text(text) and len(pieces) > 3
    assert "".join(pieces) == text


def test_stream_tool_input_arrives_as_partial_json_pieces(fake, client):
    tool = tool_use_block("search", {"query": "weather in Paris tomorrow", "limit": 5})
    fake.script(Reply(content=[tool], stop_reason="tool_use"))
    with client.messages.stream(**ARGS) as stream:
        pieces = [
            event.delta.partial_json
            for event in stream
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta"
        ]
        final = stream.get_final_message()
    assert pieces[0] == ""  # the real API opens every tool input with an empty fragment
    assert len(pieces) > 3
    assert json.loads("".join(pieces)) == tool["input"] == final.content[0].input


def test_sse_wire_format_is_the_real_apis(fake, client):
    with client.messages.stream(**ARGS) as stream:
        stream.until_done()
        headers = stream.response.headers
    body = fake.received[0].response_body

    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    assert headers["transfer-encoding"] == "chunked"
    assert "set-cookie" not in headers

    raw_events = body.split(b"\n\n")[:-1]
    assert body.endswith(b"\n\n")
    names = []
    for raw in raw_events:
        match = re.fullmatch(rb"event: (\w+)\ndata: (.+)", raw)
        assert match, raw
        name, data = match.group(1).decode(), match.group(2).decode()
        names.append(name)
        if name != "ping":  # ping alone is sent as `{"type": "ping"}`, with a space
            assert data == compact_json(json.loads(data))
    assert raw_events[2] + b"\n\n" == PING_EVENT
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * len(split_text(DEFAULT_TEXT)),
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]

    start = json.loads(raw_events[0].split(b"data: ", 1)[1])["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert list(start["usage"]) == [
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "cache_creation",
        "output_tokens",
        "service_tier",
        "inference_geo",
    ]
    assert start["usage"]["output_tokens"] == 1
    delta = json.loads(raw_events[-2].split(b"data: ", 1)[1])
    assert delta["delta"] == {
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "stop_details": None,
    }
    assert set(delta["usage"]) == {
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "output_tokens",
    }


# ----------------------------------------------------------------------------- other routes


def test_count_tokens_matches_messages_input_tokens(fake, client):
    counted = client.messages.count_tokens(model=MODEL, messages=PROMPT)
    created = client.messages.create(**ARGS)
    assert counted.input_tokens == created.usage.input_tokens
    assert counted.input_tokens == count_input_tokens({"messages": PROMPT})
    assert fake.received[0].path == "/v1/messages/count_tokens"


def test_models_list_paginates_like_the_api(fake, client):
    ids = [row[0] for row in MODELS]
    page = client.models.list(limit=2)
    assert [m.id for m in page.data] == ids[:2]
    assert page.has_more and page.first_id == ids[0] and page.last_id == ids[1]
    assert [m.id for m in client.models.list(limit=2)] == ids  # follows after_id
    assert [m.id for m in client.models.list(before_id=ids[3], limit=2).data] == ids[1:3]
    assert client.models.retrieve(MODEL).display_name == "Claude Sonnet 4.6"
    assert "after_id=" in fake.received[2].query


def test_unknown_path_is_a_real_shaped_404(fake):
    resp, body = raw_request(fake, "GET", "/v1/nothing-here")
    payload = json.loads(body)
    assert resp.status == 404
    assert payload["type"] == "error" and payload["error"]["type"] == "not_found_error"
    assert payload["request_id"] == resp.getheader("request-id")


# ----------------------------------------------------------------------------- errors


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


def test_unified_headers_carry_the_subscription_family(fake, client):
    fake.script(Reply(unified=True))
    headers = client.messages.with_raw_response.create(**ARGS).headers
    prefix = "anthropic-ratelimit-unified-"
    assert headers[prefix + "status"] == "allowed"
    assert headers[prefix + "representative-claim"] == "five_hour"
    for window in ("5h", "7d"):
        assert 0 <= float(headers[f"{prefix}{window}-utilization"]) <= 1
        assert int(headers[f"{prefix}{window}-reset"]) > time.time()
    assert int(headers[prefix + "reset"]) > time.time()
    assert float(headers[prefix + "fallback-percentage"]) == 0.5
    assert headers[prefix + "overage-status"]
