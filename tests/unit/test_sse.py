"""Tests for SSE framing (app.proxy.sse) and stream folding (app.proxy.message_fold)."""

from __future__ import annotations

import json
import random

import pytest

from app.proxy.sse import MessageFolder, SSEDecoder, SSEEvent, error_event_bytes, event_boundary

MODEL = "claude-sonnet-4-5-20250929"
MSG_ID = "msg_01XFDUDYJgAACzvnptvVoYEL"
START_USAGE = {
    "input_tokens": 25,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
    "output_tokens": 1,
    "service_tier": "standard",
}


# --- building real-API-shaped streams ------------------------------------------------------


def ev(name: str, payload: dict) -> bytes:
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return f"event: {name}\ndata: {data}\n\n".encode()


def message_start(usage: dict = START_USAGE) -> bytes:
    message = {"id": MSG_ID, "type": "message", "role": "assistant", "content": [],
               "model": MODEL, "stop_reason": None, "stop_sequence": None, "usage": usage}
    return ev("message_start", {"type": "message_start", "message": message})


def block_start(index: int, block: dict) -> bytes:
    return ev("content_block_start",
              {"type": "content_block_start", "index": index, "content_block": block})


def delta(index: int, kind: str, **fields) -> bytes:
    return ev("content_block_delta",
              {"type": "content_block_delta", "index": index, "delta": {"type": kind, **fields}})


def block_stop(index: int) -> bytes:
    return ev("content_block_stop", {"type": "content_block_stop", "index": index})


def message_delta(stop_reason: str | None, usage: dict, stop_sequence: str | None = None) -> bytes:
    stop = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
    return ev("message_delta", {"type": "message_delta", "delta": stop, "usage": usage})


def texts(index: int, *parts: str) -> bytes:
    return b"".join(delta(index, "text_delta", text=p) for p in parts)


PING = ev("ping", {"type": "ping"})
TEXT_BLOCK = {"type": "text", "text": ""}
MESSAGE_STOP = ev("message_stop", {"type": "message_stop"})
OVERLOADED = {"type": "overloaded_error", "message": "Overloaded"}


def expected(content: list, stop_reason: str | None, usage: dict, stop_sequence=None) -> dict:
    return {"id": MSG_ID, "type": "message", "role": "assistant", "model": MODEL,
            "content": content, "stop_reason": stop_reason, "stop_sequence": stop_sequence,
            "usage": usage}


SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds+RP1sYqYoU6lh4NRr0Lo+U="
REDACTED = "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8cr3qpPkNRj2YfWXGmKDxH4mPnZ"
TOOL_ID, TIME_ID = "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "toolu_01CuJXKCsmvGG2NFsADYSpN2"
SRV_ID = "srvtoolu_014hJH82Qum7Td6UV8gDXThB"
# Split inside a \" escape, inside a \u escape, between the halves of a surrogate pair, and
# around a raw multi-byte character, as the API may do.
TOOL_JSON_PARTS = ["", '{"loc', 'ation": "San Fr', 'ancisco, \\', '"CA\\"", "no', 'te": "caf\\u00',
                   "e9 ☃ \\\\", " done \\ud83c", '\\udf89", "units": ["c", ', '"f"], "n": -1.',
                   "5e3}"]
TOOL_INPUT = {"location": 'San Francisco, "CA"', "note": "café ☃ \\ done 🎉",
              "units": ["c", "f"], "n": -1500.0}
SEARCH_RESULT = {"type": "web_search_tool_result", "tool_use_id": SRV_ID, "content": [
    {"type": "web_search_result", "title": "Weather in New York City",
     "url": "https://weather.example/nyc", "encrypted_content": "Ev0DCioIAhgCIiQ3NmU4ZmI4OC1k",
     "page_age": "2 hours ago"}]}
CITATION = {"type": "web_search_result_location", "cited_text": "Sunny with a high of 75°F.",
            "url": "https://weather.example/nyc", "title": "Weather in New York City",
            "encrypted_index": "EpMBCioIAhgCIiQ4ODk4YTFkYy0y"}
CACHED_USAGE = {"input_tokens": 12, "cache_creation_input_tokens": 2048,
                "cache_read_input_tokens": 0, "output_tokens": 1, "service_tier": "standard",
                "cache_creation": {"ephemeral_5m_input_tokens": 2048,
                                   "ephemeral_1h_input_tokens": 0}}

TEXT_STREAM = b"".join([
    message_start(), block_start(0, TEXT_BLOCK), PING,
    texts(0, "Hello", ", wörld", " — ünïcödé 🎉", '\nA "quoted" line.'), block_stop(0),
    message_delta("end_turn", {"output_tokens": 15}), MESSAGE_STOP])
TEXT_MESSAGE = expected([{"type": "text", "text": 'Hello, wörld — ünïcödé 🎉\nA "quoted" line.'}],
                        "end_turn", {**START_USAGE, "output_tokens": 15})

STREAMS = {
    "text": (TEXT_STREAM, TEXT_MESSAGE),
    "thinking": (b"".join([
        message_start(), block_start(0, {"type": "thinking", "thinking": ""}),
        delta(0, "thinking_delta", thinking="Let me solve this step by step:\n\n1. "),
        delta(0, "thinking_delta", thinking="27 * 453 = 12231"),
        delta(0, "signature_delta", signature=SIGNATURE), block_stop(0),
        block_start(1, TEXT_BLOCK), texts(1, "27 * 453 = ", "12,231"),
        block_stop(1), message_delta("end_turn", {"output_tokens": 98}), MESSAGE_STOP]),
        expected([{"type": "thinking", "signature": SIGNATURE,
                   "thinking": "Let me solve this step by step:\n\n1. 27 * 453 = 12231"},
                  {"type": "text", "text": "27 * 453 = 12,231"}],
                 "end_turn", {**START_USAGE, "output_tokens": 98})),
    "redacted_thinking": (b"".join([
        message_start(), block_start(0, {"type": "redacted_thinking", "data": REDACTED}),
        block_stop(0), block_start(1, TEXT_BLOCK), texts(1, "Done."),
        block_stop(1), message_delta("end_turn", {"output_tokens": 7}), MESSAGE_STOP]),
        expected([{"type": "redacted_thinking", "data": REDACTED},
                  {"type": "text", "text": "Done."}],
                 "end_turn", {**START_USAGE, "output_tokens": 7})),
    "tool_use": (b"".join([
        message_start(), block_start(0, TEXT_BLOCK),
        texts(0, "I'll check."), block_stop(0),
        block_start(1, {"type": "tool_use", "id": TOOL_ID, "name": "get_weather", "input": {}}),
        *(delta(1, "input_json_delta", partial_json=p) for p in TOOL_JSON_PARTS), PING,
        block_stop(1),
        block_start(2, {"type": "tool_use", "id": TIME_ID, "name": "get_time", "input": {}}),
        delta(2, "input_json_delta", partial_json=""), block_stop(2),
        message_delta("tool_use", {"output_tokens": 89}), MESSAGE_STOP]),
        expected([{"type": "text", "text": "I'll check."},
                  {"type": "tool_use", "id": TOOL_ID, "name": "get_weather", "input": TOOL_INPUT},
                  {"type": "tool_use", "id": TIME_ID, "name": "get_time", "input": {}}],
                 "tool_use", {**START_USAGE, "output_tokens": 89})),
    "web_search": (b"".join([
        message_start(), block_start(0, TEXT_BLOCK),
        texts(0, "I'll search for that."), block_stop(0),
        block_start(1, {"type": "server_tool_use", "id": SRV_ID, "name": "web_search",
                        "input": {}}),
        delta(1, "input_json_delta", partial_json='{"query": "weather NY'),
        delta(1, "input_json_delta", partial_json='C today"}'), block_stop(1),
        block_start(2, SEARCH_RESULT), block_stop(2),
        block_start(3, TEXT_BLOCK),
        delta(3, "citations_delta", citation=CITATION),
        texts(3, "It is sunny in NYC, ", "with a high of 75°F."), block_stop(3),
        message_delta("end_turn", {"input_tokens": 10682, "cache_creation_input_tokens": 0,
                                   "cache_read_input_tokens": 0, "output_tokens": 510,
                                   "server_tool_use": {"web_search_requests": 1}}),
        MESSAGE_STOP]),
        expected([{"type": "text", "text": "I'll search for that."},
                  {"type": "server_tool_use", "id": SRV_ID, "name": "web_search",
                   "input": {"query": "weather NYC today"}},
                  SEARCH_RESULT,
                  {"type": "text", "text": "It is sunny in NYC, with a high of 75°F.",
                   "citations": [CITATION]}],
                 "end_turn", {**START_USAGE, "input_tokens": 10682, "output_tokens": 510,
                              "server_tool_use": {"web_search_requests": 1}})),
    "cumulative_usage": (b"".join([
        message_start(CACHED_USAGE), block_start(0, TEXT_BLOCK),
        texts(0, "Stop here END"), block_stop(0),
        message_delta(None, {"output_tokens": 40, "cache_read_input_tokens": None,
                             "server_tool_use": {"web_search_requests": 1,
                                                 "web_fetch_requests": 1}}),
        message_delta("stop_sequence", {
            "input_tokens": 12, "cache_creation_input_tokens": 3072, "output_tokens": 100,
            "cache_creation": {"ephemeral_1h_input_tokens": 1024},
            "server_tool_use": {"web_search_requests": 2}}, stop_sequence="END"),
        MESSAGE_STOP]),
        expected([{"type": "text", "text": "Stop here END"}], "stop_sequence",
                 {"input_tokens": 12, "cache_creation_input_tokens": 3072,
                  "cache_read_input_tokens": 0, "output_tokens": 100, "service_tier": "standard",
                  "cache_creation": {"ephemeral_5m_input_tokens": 2048,
                                     "ephemeral_1h_input_tokens": 1024},
                  "server_tool_use": {"web_search_requests": 2, "web_fetch_requests": 1}},
                 stop_sequence="END")),
    "error_mid_stream": (b"".join([
        message_start(), block_start(0, TEXT_BLOCK),
        texts(0, "Partial ", "answ"), PING, ev("error", {"type": "error", "error": OVERLOADED})]),
        expected([{"type": "text", "text": "Partial answ"}], None, START_USAGE)),
    "no_message_stop": (TEXT_STREAM[: -len(MESSAGE_STOP)], TEXT_MESSAGE),
}


# --- helpers -------------------------------------------------------------------------------


def decode(pieces) -> tuple[list[SSEEvent], SSEDecoder]:
    decoder = SSEDecoder()
    events = [e for piece in pieces for e in decoder.feed(piece)]
    return events + decoder.flush(), decoder


def fold(events, at_ms=None) -> MessageFolder:
    folder = MessageFolder()
    for i, event in enumerate(events):
        folder.feed(event, None if at_ms is None else at_ms + i)
    return folder


def feed_all(*raw_events: bytes) -> MessageFolder:
    return fold(decode([b"".join(raw_events)])[0])


def eol_variants(stream: bytes) -> list[bytes]:
    # The JSON payloads escape newlines, so every raw \n in the stream is a line ending.
    return [stream, stream.replace(b"\n", b"\r\n"), stream.replace(b"\n", b"\r")]


def random_pieces(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 40))))
    return [data[i:j] for i, j in zip([0, *cuts], [*cuts, len(data)], strict=True)]


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


@pytest.mark.parametrize("name", STREAMS)
def test_every_split_and_line_ending_gives_the_same_result(name):
    stream, want = STREAMS[name]
    for variant in eol_variants(stream):
        whole, _ = decode([variant])
        fields = [(e.event, e.data) for e in decode([stream])[0]]
        assert [(e.event, e.data) for e in whole] == fields
        assert b"".join(e.raw for e in whole) == variant
        for k in range(len(variant) + 1):
            assert decode([variant[:k], variant[k:]])[0] == whole, k
        one_by_one, _ = decode([variant[i : i + 1] for i in range(len(variant))])
        assert one_by_one == whole
        assert fold(one_by_one).message == want
        rng = random.Random(len(variant))
        for _ in range(20):
            assert decode(random_pieces(variant, rng))[0] == whole


@pytest.mark.parametrize("name", ["text", "tool_use", "web_search"])
def test_event_boundary_agrees_with_the_decoder_at_every_prefix(name):
    for variant in eol_variants(STREAMS[name][0]):
        decoder, consumed = SSEDecoder(), 0
        for k in range(1, len(variant) + 1):
            consumed += sum(len(e.raw) for e in decoder.feed(variant[k - 1 : k]))
            assert consumed == event_boundary(variant[:k]), k
            assert consumed + decoder.pending_bytes == k


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


# --- SSE framing -----------------------------------------------------------------------------


def test_framing_follows_the_whatwg_field_rules():
    stream = (b": comment\nevent: one\ndata:first\ndata:  two spaces\ndata\nid: 7\nretry: 10\n"
              b"bogus: x\n\ndata: {\"a\": 1}\n\nevent: \ndata: x\n\nevent: only-a-name\n\n"
              b": keepalive\n\nevent: last\ndata: y\n\n")
    events, decoder = decode([stream])
    assert [(e.event, e.data) for e in events] == [
        ("one", "first\n two spaces\n"), (None, '{"a": 1}'), (None, "x"), ("last", "y")]
    # Blocks that dispatch nothing travel with the next event, so no byte is lost.
    assert events[3].raw == b"event: only-a-name\n\n: keepalive\n\nevent: last\ndata: y\n\n"
    assert b"".join(e.raw for e in events) == stream and decoder.pending_bytes == 0


def test_bom_is_ignored_but_kept_in_raw():
    events, _ = decode([b"\xef\xbb", b"\xbfevent: ping\ndata: {}\n\n"])
    assert events == [SSEEvent("ping", "{}", b"\xef\xbb\xbfevent: ping\ndata: {}\n\n")]


def test_flush_returns_an_unterminated_event_only_if_it_has_data():
    decoder = SSEDecoder()
    assert decoder.feed(b"event: message_stop\ndata: {\"type\":\"message_stop\"}") == []
    assert decoder.pending_bytes == len(b'event: message_stop\ndata: {"type":"message_stop"}')
    assert decoder.flush() == [SSEEvent("message_stop", '{"type":"message_stop"}',
                                        b'event: message_stop\ndata: {"type":"message_stop"}')]
    assert decoder.pending_bytes == 0
    decoder = SSEDecoder()
    assert decoder.feed(b"event: ping\n") == [] and decoder.flush() == []


def test_trailing_cr_waits_for_the_next_byte():
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r\n\r") == []  # may still become \r\n
    assert decoder.feed(b"\n") == [SSEEvent(None, "a", b"data: a\r\n\r\n")]
    assert decoder.feed(b"data: b\r\r") == []
    assert decoder.feed(b"data: c") == [SSEEvent(None, "b", b"data: b\r\r")]
    assert decoder.flush() == [SSEEvent(None, "c", b"data: c")]
    assert decode([b"data: d\r\r"])[0] == [SSEEvent(None, "d", b"data: d\r\r")]


@pytest.mark.parametrize(("buf", "end"), [
    (b"", 0), (b"data: x", 0), (b"data: x\n", 0), (b"data: x\n\n", 9), (b"data: x\n\ndata: y\n", 9),
    (b"a\n\nb\n\n", 6), (b"a\r\n\r\n", 5), (b"a\r\n\r", 0), (b"a\r\n\rb", 4), (b"a\r\r", 0),
    (b"a\r\rb", 3), (b"a\r\r\n", 4), (b"a\r\r\r", 3), (b"a\n\r\n", 4), (b"a\n\r", 0),
    (b"a\n\rb", 3), (b"a\r\n\n", 4), (b"\n", 1), (b"\r\n", 2), (b"\r", 0), (b"\rb", 1),
    (b"a\n\n\n", 4), (b"a\r\nb\r\n\r\nc\n", 8),
])
def test_event_boundary(buf, end):
    assert event_boundary(buf) == end
    assert event_boundary(bytearray(buf)) == end


def test_utf8_split_inside_a_character_and_invalid_utf8():
    data = "data: ☃é\n\n".encode()
    assert decode([data[i : i + 1] for i in range(len(data))])[0][0].data == "☃é"
    events, _ = decode([b"data: \xff\xfeok\xe2\x98\n\n"])
    assert events[0].data == "\ufffd\ufffdok\ufffd"


def test_random_bytes_never_raise_and_keep_the_raw_invariant():
    rng = random.Random(20240611)
    alphabet = b"\r\n\r\n:: dataevent{}\"\xff\xe2\x98\x83\xef\xbb\xbf"
    for _ in range(300):
        n = rng.randint(2, 400)
        data = bytes(rng.choice(alphabet) if rng.random() < 0.7 else rng.randrange(256)
                     for _ in range(n))
        decoder, events = SSEDecoder(), []
        for piece in random_pieces(data, rng):
            events += decoder.feed(piece)
        held = decoder.pending_bytes
        assert b"".join(e.raw for e in events) == data[: len(data) - held]
        events += decoder.flush()
        assert data.startswith(b"".join(e.raw for e in events))
        folder = fold(events, at_ms=1.0)
        _ = folder.message, folder.tool_uses
        assert not any(p.startswith("internal error") for p in folder.problems)


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
