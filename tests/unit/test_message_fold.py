"""Tests for stream folding (app.proxy.message_fold): messages, usage, tool input, errors."""

from __future__ import annotations

import json
import random

import pytest

from app.proxy.sse import SSEEvent, error_event_bytes, event_boundary
from tests.unit.sse_streams import (
    CACHED_USAGE,
    MESSAGE_STOP,
    OVERLOADED,
    PING,
    START_USAGE,
    STREAMS,
    TEXT_BLOCK,
    TEXT_MESSAGE,
    TEXT_STREAM,
    TIME_ID,
    TOOL_ID,
    TOOL_INPUT,
    block_start,
    block_stop,
    decode,
    delta,
    ev,
    expected,
    feed_all,
    fold,
    message_delta,
    message_start,
    texts,
)

# --- folding the real-API-shaped streams ---------------------------------------------------


@pytest.mark.parametrize("name", STREAMS)
def test_stream_folds_to_the_non_streaming_message(name):
    stream, want = STREAMS[name]
    events, decoder = decode([stream])
    folder = fold(events, at_ms=100.0)
    assert folder.message == want
    assert folder.problems == []
    assert folder.usage == want["usage"]
    assert folder.stop_reason == want["stop_reason"]
    assert folder.complete is (name not in ("error_mid_stream", "no_message_stop"))
    assert folder.error == (OVERLOADED if name == "error_mid_stream" else None)
    assert folder.event_count == len(events) == stream.count(b"\n\n")
    assert folder.first_content_ms == 100.0 + [e.event for e in events].index("content_block_delta")
    assert b"".join(e.raw for e in events) == stream
    assert decoder.pending_bytes == 0
    assert not any("_partial_json" in b for b in folder.message["content"])


def test_tool_uses_lists_client_tool_calls_in_order():
    folder = fold(decode([STREAMS["tool_use"][0]])[0])
    assert folder.tool_uses == [{"id": TOOL_ID, "name": "get_weather", "input": TOOL_INPUT},
                                {"id": TIME_ID, "name": "get_time", "input": {}}]
    assert fold(decode([STREAMS["web_search"][0]])[0]).tool_uses == []


def test_message_snapshot_mid_stream_is_not_changed_by_later_events():
    events, _ = decode([TEXT_STREAM])
    folder = fold(events[:5])  # message_start, block start, ping, two text deltas
    snapshot = folder.message
    assert snapshot["content"] == [{"type": "text", "text": "Hello, wörld"}]
    assert snapshot["stop_reason"] is None and folder.message is snapshot
    for event in events[5:]:
        folder.feed(event)
    assert snapshot["content"] == [{"type": "text", "text": "Hello, wörld"}]
    assert folder.message == TEXT_MESSAGE


def test_snapshot_taken_at_block_start_is_not_changed_by_signature_delta():
    events, _ = decode([STREAMS["thinking"][0]])
    folder = fold(events[:2])
    snapshot = folder.message
    for event in events[2:]:
        folder.feed(event)
    assert snapshot["content"] == [{"type": "thinking", "thinking": ""}]
    assert folder.message == STREAMS["thinking"][1]


def test_message_delta_carries_other_top_level_fields():
    container = {"id": "container_011CZ", "expires_at": "2025-05-23T21:13:31.749448Z"}
    folder = feed_all(
        message_start(), block_start(0, TEXT_BLOCK), texts(0, "ok"), block_stop(0),
        ev("message_delta", {"type": "message_delta", "usage": {"output_tokens": 3},
                             "delta": {"stop_reason": "refusal", "stop_sequence": None,
                                       "container": container, "stop_details": None,
                                       "type": "bogus", "content": []}}),
        message_delta("refusal", {"output_tokens": 4}), MESSAGE_STOP)
    assert folder.message == {**expected([{"type": "text", "text": "ok"}], "refusal",
                                         {**START_USAGE, "output_tokens": 4}),
                              "container": container}
    assert folder.problems == []


def test_events_after_message_stop_are_recorded_but_applied():
    folder = feed_all(TEXT_STREAM, PING, message_delta("end_turn", {"output_tokens": 16}))
    assert folder.complete and folder.usage["output_tokens"] == 16
    assert folder.problems == ["message_delta after message_stop"]


def test_open_tool_use_block_in_a_truncated_stream_shows_the_input_so_far():
    stream = STREAMS["tool_use"][0]
    folder = fold(decode([stream[: event_boundary(stream[: stream.index(b"5e3}")])]])[0])
    block = folder.message["content"][1]
    assert block["input"] == {}
    assert block["_partial_json"].startswith('{"location": "San Francisco')
    assert not folder.complete and folder.problems == []


def test_usage_is_cumulative_after_each_message_delta():
    events, _ = decode([STREAMS["cumulative_usage"][0]])
    folder = fold(events[: [e.event for e in events].index("message_delta") + 1])
    assert folder.usage == {**CACHED_USAGE, "output_tokens": 40,
                            "server_tool_use": {"web_search_requests": 1, "web_fetch_requests": 1}}
    assert folder.stop_reason is None


def test_many_small_deltas_fold_to_the_joined_text():
    parts = [f"w{i} " for i in range(5000)]
    stream = message_start() + block_start(0, TEXT_BLOCK) + texts(0, *parts)
    folder = fold(decode([stream])[0])
    assert folder.message["content"] == [{"type": "text", "text": "".join(parts)}]


# --- folding malformed or unexpected input -------------------------------------------------


def test_events_before_message_start_and_unknown_indexes_are_recorded():
    folder = feed_all(delta(0, "text_delta", text="early"), block_start(0, TEXT_BLOCK))
    assert folder.message is None and len(folder.problems) == 2
    folder = feed_all(message_start(), block_start(0, TEXT_BLOCK),
                      texts(0, "ok"), delta(4, "text_delta", text="lost"), block_stop(7),
                      ev("content_block_delta", {"type": "content_block_delta", "index": True,
                                                 "delta": {"type": "text_delta", "text": "x"}}),
                      block_stop(0), texts(0, "late"))
    assert folder.message["content"] == [{"type": "text", "text": "ok"}]
    assert len(folder.problems) == 4
    assert all("index" in p for p in folder.problems)


def test_malformed_event_payloads_are_recorded_not_raised():
    folder = feed_all(
        b"data: not json\n\n", b"event: ping\ndata: [1, 2]\n\n", b"data: " + b"[" * 50000 + b"\n\n",
        message_start(), message_start(), ev("message_start", {"type": "message_start"}),
        ev("content_block_start", {"type": "content_block_start", "index": 0}),
        ev("content_block_delta", {"type": "content_block_delta", "index": 0}),
        block_start(0, TEXT_BLOCK),
        ev("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": "x"}),
        delta(0, "text_delta", text=5), delta(0, "input_json_delta", partial_json="{}"),
        delta(0, "text_delta", text="kept"), ev("message_delta", {"type": "message_delta"}),
        ev("error", {"type": "error"}), b"event: ping\ndata: {\"type\":\"message_stop\"}\n\n",
        ev("future_event", {"type": "future_event"}), ev("future_event", {"type": "future_event"}))
    assert folder.message["content"] == [{"type": "text", "text": "kept"}]
    assert folder.error == {"type": "error", "message": ""}
    assert folder.complete and folder.event_count == 18
    assert folder.problems == [
        "invalid JSON in unnamed event", "ping event data is not a JSON object",
        "invalid JSON in unnamed event", "duplicate message_start", "duplicate message_start",
        "malformed content_block_start at index 0",
        "content_block_delta for unknown content block index 0",
        "content_block_delta without a delta type for block 0",
        "text_delta for block 0 lacks a usable 'text'", "input_json_delta for text block 0 ignored",
        "message_delta without a delta object", "error event without an error object",
        "event name 'ping' does not match data type 'message_stop'",
        "unknown event type 'future_event'"]
    assert not any(p.startswith("internal error") for p in folder.problems)


def test_invalid_tool_json_keeps_the_raw_text():
    folder = feed_all(
        message_start(),
        block_start(0, {"type": "tool_use", "id": TOOL_ID, "name": "f", "input": {}}),
        delta(0, "input_json_delta", partial_json='{"a": tru'), block_stop(0), MESSAGE_STOP)
    assert folder.message["content"] == [{"type": "tool_use", "id": TOOL_ID, "name": "f",
                                          "input": {}, "_partial_json": '{"a": tru'}]
    assert folder.tool_uses == [{"id": TOOL_ID, "name": "f", "input": {}}]
    assert folder.problems == ["invalid tool input JSON in content block 0"]


def test_unknown_block_and_delta_types_are_applied_conservatively():
    folder = feed_all(
        message_start(),
        block_start(0, {"type": "hologram", "frames": ["a"], "caption": "Hi", "meta": {"k": 1}}),
        delta(0, "frame_delta", frames=["b", "c"], caption=" there", level=3),
        delta(0, "frame_delta", meta="not a dict"), delta(0, "text_delta", text="!"),
        block_stop(0),
        block_start(1, {"type": "mcp_tool_result", "tool_use_id": "mcptoolu_1", "content": []}),
        delta(1, "text_delta", text="ignored"), block_stop(1), MESSAGE_STOP)
    assert folder.message["content"] == [
        {"type": "hologram", "frames": ["a", "b", "c"], "caption": "Hi there",
         "meta": {"k": 1}, "level": 3, "text": "!"},
        {"type": "mcp_tool_result", "tool_use_id": "mcptoolu_1", "content": []}]
    assert len(folder.problems) == 3  # unknown delta type (once), misfit field, misplaced delta


def test_mutated_streams_never_raise():
    rng = random.Random(7)
    events = [e for name in STREAMS for e in decode([STREAMS[name][0]])[0]]
    for _ in range(300):
        picked = [rng.choice(events) for _ in range(rng.randint(1, 30))]
        mutated = []
        for event in picked:
            data = event.data
            if rng.random() < 0.3 and data:
                i = rng.randrange(len(data))
                data = data[:i] + rng.choice(['"', "{", "]", "1", "null", "\\", ""]) + data[i + 1 :]
            mutated.append(SSEEvent(rng.choice([event.event, None, "ping"]), data, event.raw))
        folder = fold(mutated, at_ms=0.0)
        _ = folder.message, folder.tool_uses
        assert not any(p.startswith("internal error") for p in folder.problems), folder.problems


def test_problems_are_bounded():
    folder = feed_all(*[b"data: nope\n\n"] * 500)
    assert len(folder.problems) == 101 and folder.event_count == 500


# --- error events ---------------------------------------------------------------------------


def test_error_event_bytes_matches_the_api_format():
    raw = error_event_bytes("overloaded_error", "Overloaded")
    assert raw == (b'event: error\ndata: {"type":"error","error":'
                   b'{"type":"overloaded_error","message":"Overloaded"}}\n\n')
    assert event_boundary(raw) == len(raw)
    head = TEXT_STREAM[: event_boundary(TEXT_STREAM[:200])]
    events, _ = decode([head, raw])
    assert b"".join(e.raw for e in events) == head + raw
    folder = fold(events[-1:])
    assert folder.error == OVERLOADED and folder.problems == []


def test_error_event_bytes_never_raises_on_odd_text():
    raw = error_event_bytes("api_error", "line\nbreak ☃ \ud800")
    events, _ = decode([raw])
    assert len(events) == 1 and events[0].raw == raw
    assert json.loads(events[0].data)["error"]["message"] == "line\nbreak ☃ ?"
