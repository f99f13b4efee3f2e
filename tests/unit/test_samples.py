"""Test samples: an ended Exchange as a sample (no secret left), a sample as a fixture, the
samples folder, and the collector writing files off the request path."""

from __future__ import annotations

import gzip
import json
import os
from datetime import UTC, datetime

import pytest

from app.errors import UpstreamError
from app.events import EventBus
from app.proxy.exchange import Attempt, Exchange
from app.samples.collector import SampleCollector
from app.samples.files import (
    SampleError,
    find_sample,
    load_sample,
    sample_paths,
    write_json,
    write_sample,
)
from app.samples.fixture import (
    NotReplayable,
    fixture_of,
    request_bytes,
    request_headers,
    response_bytes,
)
from app.samples.sample import FORMAT, file_name, mask_query, masked, sample_of
from app.samples.stream import masked_events, spread_masked

KEY = "sk-ant-api03-unitsecret-abcdefghijklmnop"
PROMPT_KEY = "sk-ant-oat01-pasted-into-the-prompt-QRST"
TOKEN = "opaque-bearer-token-0123456789"
COOKIE = "sid=cookie-secret-abc"
SECRETS = (KEY, PROMPT_KEY, TOKEN, COOKIE, "unitsecret", "pasted-into", "cookie-secret")

START = b'event: message_start\ndata: {"type":"message_start"}\n\n'
DELTA = f'event: content_block_delta\ndata: {{"text":"echo {PROMPT_KEY}"}}\n\n'.encode()
STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def exchange(**fields) -> Exchange:
    x = Exchange(method="POST", path="/v1/messages", query="beta=true",
                 domain="team.example.com", publish=lambda event: None)
    x.id = "1a2b3c4d-0000-4000-8000-000000000001"
    x.received_at = datetime(2026, 11, 29, 16, 30, 0, 123456, tzinfo=UTC)
    for name, value in fields.items():
        setattr(x, name, value)
    return x


def request_fields(stream: bool) -> dict:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 256, "stream": stream,
            "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": f"my key is {PROMPT_KEY}"}]}
    return dict(
        account_id="acc_1", auth_mode="passthrough", model="claude-sonnet-4-5", stream=stream,
        request_type="inference",
        request_headers=[("Host", "team.example.com"), ("x-api-key", KEY),
                         ("Authorization", f"Bearer {TOKEN}"), ("Cookie", COOKIE),
                         ("Content-Length", "123"), ("Connection", "keep-alive"),
                         ("anthropic-version", "2023-06-01"), ("x-goog-api-key", "plainsecret1"),
                         ("x-claude-code-session-id", "sess-1"), ("user-agent", "claude-cli/2")],
        request_body=json.dumps(body).encode())


def streamed() -> Exchange:
    x = exchange(
        **request_fields(True), upstream_status=200,
        response_headers=[("content-type", "text/event-stream; charset=utf-8"),
                          ("Transfer-Encoding", "chunked"), ("set-cookie", "a=b"),
                          ("request-id", "req_1"),
                          ("anthropic-ratelimit-tokens-limit", "2400000")],
        response={"id": "msg_1", "type": "message", "model": "claude-sonnet-4-5", "content": [
            {"type": "text", "text": f"echo {PROMPT_KEY}"},
            {"type": "tool_use", "id": "tu_1", "name": "Bash", "input": {"command": "ls"}}]},
        usage={"input_tokens": 10, "output_tokens": 20, "cache_creation_input_tokens": 30,
               "cache_read_input_tokens": 40},
        tool_uses=[{"id": "tu_1", "name": "Bash", "input": {"command": "ls"}}],
        chunks=[(1.5, START), (2.25, DELTA), (3.0, STOP)],
        first_byte_ms=1.0, first_token_ms=2.25,
        attempts=[Attempt(1, 0.5, 3.0, 529, None, 0.5), Attempt(2, 4.0, 10.0, 200)])
    x.complete()
    return x


def plain(body: bytes, headers: list | None = None, **fields) -> Exchange:
    x = exchange(**request_fields(False), upstream_status=200,
                 response_headers=headers or [("content-type", "application/json")],
                 response_body=body, **fields)
    x.complete()
    return x


def no_secret(document) -> None:
    text = json.dumps(document, ensure_ascii=False)
    for secret in SECRETS:
        assert secret not in text


# ------------------------------------------------------------------ sample


def test_a_stream_as_a_sample():
    x = streamed()
    sample = sample_of(x)
    no_secret(sample)
    assert json.loads(json.dumps(sample)) == sample  # JSON-able as it is
    assert (sample["format"], sample["version"], sample["id"]) == (FORMAT, 1, x.id)
    assert sample["received_at"] == "2026-11-29T16:30:00.123456Z"
    assert (sample["method"], sample["path"], sample["query"]) == ("POST", "/v1/messages",
                                                                  "beta=true")
    assert (sample["status"], sample["outcome"], sample["error"]) == (200, "completed", None)
    assert (sample["request_type"], sample["model"], sample["stream"]) == (
        "inference", "claude-sonnet-4-5", True)
    headers = dict(sample["request"]["headers"])
    assert headers["x-api-key"] == "sk-ant-…mnop"
    assert headers["Authorization"] == "Bearer …6789"
    assert headers["Cookie"] == "[redacted]"
    assert headers["x-goog-api-key"] == "[redacted]"
    assert headers["x-claude-code-session-id"] == "sess-1"  # not a credential
    body = sample["request"]["body"]
    assert body["messages"][0]["content"] == "my key is sk-ant-…QRST"
    assert body["max_tokens"] == 256 and body["tools"][0]["input_schema"] == {"type": "object"}
    response = sample["response"]
    assert (response["status"], response["stream"], response["truncated"]) == (200, True, False)
    assert dict(response["headers"])["set-cookie"] == "[redacted]"
    assert dict(response["headers"])["anthropic-ratelimit-tokens-limit"] == "2400000"
    assert response["body"]["content"][0]["text"] == "echo sk-ant-…QRST"
    assert [e["offset_ms"] for e in response["events"]] == [1.5, 2.25, 3.0]
    assert "".join(e["raw"] for e in response["events"]) == (
        START + DELTA + STOP).decode().replace(PROMPT_KEY, "sk-ant-…QRST")
    assert sample["timing"] == {"duration_ms": x.duration_ms, "first_byte_ms": 1.0,
                                "first_token_ms": 2.25}
    assert sample["usage"]["cache_read_input_tokens"] == 40
    assert sample["tool_uses"] == [{"id": "tu_1", "name": "Bash", "input": {"command": "ls"}}]
    assert sample["attempts"][0] == {"number": 1, "started_ms": 0.5, "duration_ms": 3.0,
                                     "status": 529, "error": None, "retry_delay_s": 0.5}


def test_a_json_answer_as_a_sample():
    message = {"id": "msg_2", "type": "message", "content": [{"type": "text", "text": "hi"}]}
    x = plain(json.dumps(message).encode(), response=message, usage={"input_tokens": 3})
    sample = sample_of(x)
    no_secret(sample)
    assert sample["stream"] is False and sample["response"]["stream"] is False
    assert sample["response"]["body"] == message and sample["response"]["events"] == []


def test_a_compressed_or_text_answer_is_kept_decoded():
    gz = plain(gzip.compress(b'{"type":"error","error":{"type":"x","message":"' + KEY.encode()
                             + b'"}}'),
               headers=[("content-type", "application/json"), ("content-encoding", "gzip")])
    assert sample_of(gz)["response"]["body"] == {
        "type": "error", "error": {"type": "x", "message": "sk-ant-…mnop"}}
    html = plain(b"<html>bad gateway</html>", headers=[("content-type", "text/html")])
    assert sample_of(html)["response"]["body"] == "<html>bad gateway</html>"


def test_a_failed_exchange_records_its_error():
    x = exchange(**request_fields(False))
    x.fail(UpstreamError(f"cannot reach upstream with {KEY}"))
    sample = sample_of(x)
    no_secret(sample)
    assert sample["outcome"] == "failed" and sample["status"] == 502
    assert sample["response"]["status"] is None
    assert "sk-ant-…mnop" in sample["error"]["message"]


def test_secret_json_keys_and_query_values_are_masked():
    assert masked({"api_key": "k1", "refresh_token": "r1", "max_tokens": 5,
                   "properties": {"api_key": {"type": "string"}}}) == {
        "api_key": "[redacted]", "refresh_token": "[redacted]", "max_tokens": 5,
        "properties": {"api_key": {"type": "string"}}}
    assert mask_query("beta=true") == "beta=true"
    assert mask_query("beta=true&key=abc123&access_token=zz") == \
        "beta=true&key=%5Bredacted%5D&access_token=%5Bredacted%5D"
    assert KEY not in mask_query(f"q={KEY}")


def test_file_name():
    sample = sample_of(streamed())
    assert file_name(sample) == "20261129T163000Z_inference_claude-sonnet-4-5_1a2b3c4d.json"
    assert file_name({"id": "abcdef012345", "received_at": "2026-01-02T03:04:05Z",
                      "model": "a/b c"}) == "20260102T030405Z_other_a-b-c_abcdef01.json"


# ------------------------------------------------------------------ fixture


def test_a_stream_as_a_fixture():
    sample = sample_of(streamed())
    fixture = fixture_of(sample, "one")
    no_secret(fixture)
    assert fixture["name"] == "one" and fixture["source"]["id"] == sample["id"]
    request = fixture["request"]
    assert (request["method"], request["path"], request["query"]) == ("POST", "/v1/messages",
                                                                      "beta=true")
    assert [name for name, _ in request["headers"]] == [
        "anthropic-version", "x-claude-code-session-id", "user-agent"]
    assert json.loads(request_bytes(fixture)) == sample["request"]["body"]
    response = fixture["response"]
    assert (response["status"], response["stream"]) == (200, True)
    assert "body" not in response
    assert response_bytes(fixture) == (START + DELTA + STOP).replace(
        PROMPT_KEY.encode(), "sk-ant-…QRST".encode())
    assert [name for name, _ in response["headers"]] == [
        "content-type", "request-id", "anthropic-ratelimit-tokens-limit"]
    assert fixture["expected"] == {
        "status": 200, "outcome": "completed", "request_type": "inference",
        "model": "claude-sonnet-4-5", "stream": True,
        "usage": {"input_tokens": 10, "output_tokens": 20, "cache_creation_input_tokens": 30,
                  "cache_read_input_tokens": 40},
        "tool_calls": [{"name": "Bash", "input": {"command": "ls"}}]}


def test_a_json_answer_as_a_fixture():
    message = {"id": "msg_2", "type": "message", "content": [{"type": "text", "text": "hé"}]}
    x = plain(json.dumps(message).encode(), response=message,
              headers=[("content-type", "application/json"), ("Content-Length", "99"),
                       ("content-encoding", "gzip")],
              usage={"input_tokens": 3, "output_tokens": 4})
    fixture = fixture_of(sample_of(x), "two")
    assert fixture["response"]["body"] == message and "sse" not in fixture["response"]
    assert fixture["response"]["headers"] == [["content-type", "application/json"]]
    assert response_bytes(fixture) == json.dumps(message, ensure_ascii=False,
                                                 separators=(",", ":")).encode()
    assert fixture["expected"]["usage"] == {"input_tokens": 3, "output_tokens": 4,
                                            "cache_creation_input_tokens": None,
                                            "cache_read_input_tokens": None}
    assert fixture["expected"]["stream"] is False and fixture["expected"]["tool_calls"] == []


def test_incomplete_exchanges_are_not_replayable():
    failed = exchange(**request_fields(False))
    failed.fail(UpstreamError("down"))
    with pytest.raises(NotReplayable, match="did not complete"):
        fixture_of(sample_of(failed), "x")
    gone = streamed()
    gone.ended = None
    gone.disconnect()
    with pytest.raises(NotReplayable):
        fixture_of(sample_of(gone), "x")
    truncated = plain(b"{", response_body_truncated=True)
    with pytest.raises(NotReplayable, match="too large"):
        fixture_of(sample_of(truncated), "x")


def test_masked_header_values_are_not_forwarded():
    assert request_headers([["x-custom", "Bearer …abcd"], ["x-other", "fine"],
                            ["x-key-ish", "sk-ant-…wxyz"]]) == [["x-other", "fine"]]


# ------------------------------------------------------------------ folder


def test_write_find_and_load(tmp_path):
    folder = tmp_path / "samples"
    sample = sample_of(streamed())
    path = write_sample(folder, sample)
    assert path.name == file_name(sample)
    assert os.listdir(folder) == [path.name]  # no temp file left behind
    assert load_sample(path) == sample
    assert '["x-api-key", "sk-ant-…mnop"]' in path.read_text()  # a header pair on one line
    other = dict(sample, id="1a2b3c4e-ffff-4000-8000-000000000002",
                 received_at="2026-11-29T16:31:00Z")
    second = write_sample(folder, other)
    assert sample_paths(folder) == [second, path]  # newest first
    assert find_sample(folder, path.name) == path
    assert find_sample(folder, path.stem) == path
    assert find_sample(folder, "20261129T1631") == second
    assert find_sample(folder, "1a2b3c4d") == path
    assert find_sample(folder, "1a2b3c4e-ffff") == second
    assert find_sample(folder, str(path)) == path
    with pytest.raises(SampleError, match="matches 2 samples"):
        find_sample(folder, "1a2b3c4")
    with pytest.raises(SampleError, match="No sample 'nope'"):
        find_sample(folder, "nope")


def test_folder_errors_are_one_line(tmp_path):
    with pytest.raises(SampleError, match="does not exist"):
        sample_paths(tmp_path / "missing")
    with pytest.raises(SampleError, match="No samples in"):
        sample_paths(tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SampleError, match="not valid JSON"):
        load_sample(tmp_path / "bad.json")
    write_json(tmp_path / "other.json", {"format": "something else"})
    with pytest.raises(SampleError, match="not a test sample"):
        load_sample(tmp_path / "other.json")
    with pytest.raises(SampleError, match="Cannot read"):
        load_sample(tmp_path / "absent.json")


# ------------------------------------------------------------------ collector


def test_the_collector_writes_each_ended_exchange(tmp_path):
    bus = EventBus()
    collector = SampleCollector(tmp_path / "samples")
    collector.subscribe(bus)
    collector.start()
    first = exchange(**request_fields(False), publish=bus.publish, upstream_status=200)
    first.complete()
    collector.stop()
    [path] = sample_paths(tmp_path / "samples")
    assert load_sample(path)["id"] == first.id
    assert collector.metrics()["written"] == 1
    late = exchange(publish=bus.publish)
    late.complete()  # after stop: counted, never written
    assert collector.metrics()["dropped"] == 1


def test_the_collector_queue_is_bounded_and_stop_flushes(tmp_path):
    collector = SampleCollector(tmp_path, queue_max=2)
    ended = []
    for n in range(3):
        x = exchange(upstream_status=200)
        x.id = f"0000000{n}-0000-4000-8000-000000000000"
        x.complete()
        ended.append(x)
        collector.enqueue(x)
    assert collector.metrics()["queued"] == 2 and collector.dropped == 1
    collector.stop()  # never started: writes the queue in the caller
    assert sorted(load_sample(p)["id"] for p in sample_paths(tmp_path)) == [
        ended[0].id, ended[1].id]


def test_a_write_failure_is_counted_not_raised(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    collector = SampleCollector(blocker / "samples")  # a folder under a file: cannot exist
    x = exchange(upstream_status=200)
    x.complete()
    collector.enqueue(x)
    collector.stop()
    assert collector.metrics()["failed"] == 1 and "last_error" in collector.metrics()


# ------------------------------------------------------------------ stream masking


def delta_event(index: int, kind: str, field: str, value: str) -> bytes:
    data = {"type": "content_block_delta", "index": index, "delta": {"type": kind, field: value}}
    return f"event: content_block_delta\ndata: {json.dumps(data)}\n\n".encode()


def test_a_secret_split_across_events_is_masked():
    key = "sk-ant-api03-split-across-three-events-WXYZ"
    tool_input = json.dumps({"command": f"export KEY={key}"})
    chunks = [(1.0, START),
              (2.0, delta_event(0, "text_delta", "text", "your key is " + key[:10])),
              (3.0, delta_event(0, "text_delta", "text", key[10:25])),
              (4.0, delta_event(0, "text_delta", "text", key[25:] + ", keep it safe")),
              (5.0, delta_event(1, "input_json_delta", "partial_json", tool_input[:30])),
              (6.0, delta_event(1, "input_json_delta", "partial_json", tool_input[30:])),
              (7.0, STOP)]
    x = streamed()
    x.chunks = chunks
    events = sample_of(x)["response"]["events"]
    raw = "".join(e["raw"] for e in events)
    for part in ("split-across", "three-events", "api03-split"):
        assert part not in raw
    assert [e["offset_ms"] for e in events] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert events[0]["raw"] == START.decode() and events[-1]["raw"] == STOP.decode()
    texts = [json.loads(e["raw"].split("data: ", 1)[1])["delta"] for e in events[1:6]]
    assert "".join(t["text"] for t in texts[:3]) == "your key is sk-ant-…WXYZ, keep it safe"
    # What masking kept stays where it was; the replacement goes where the key began.
    assert [t["text"] for t in texts[:3]] == ["your key is sk-ant-…", "", "WXYZ, keep it safe"]
    assert json.loads("".join(t["partial_json"] for t in texts[3:])) == {
        "command": "export KEY=sk-ant-…WXYZ"}


def test_spread_masked_keeps_untouched_pieces():
    assert spread_masked(["a", "b"]) == ["a", "b"]
    key = "sk-ant-oat01-abcdefghijklmnop"
    pieces = ["first line\nkey ", key[:8], key[8:], "\nlast ", "line"]
    out = spread_masked(pieces)
    assert "".join(out) == "first line\nkey sk-ant-…mnop\nlast line"
    assert out[0] == "first line\nkey " and out[3:] == ["\nlast ", "line"]


def test_odd_events_pass_through_masked():
    odd = [(1.0, b"data: [1,2]\n\n"), (2.0, b": ping\n\n"),
           (3.0, b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":5}\n\n'),
           (4.0, f"data: not json {KEY}\n\n".encode())]
    assert [e["raw"] for e in masked_events(odd)] == [
        "data: [1,2]\n\n", ": ping\n\n",
        'event: content_block_delta\ndata: {"type":"content_block_delta","delta":5}\n\n',
        "data: not json sk-ant-…mnop\n\n"]
