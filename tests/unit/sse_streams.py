"""Real-API-shaped event streams for the SSE tests, and helpers to decode and fold them.

``STREAMS`` maps a name to (the stream's bytes, the non-streaming message it folds to).
"""

from __future__ import annotations

import json

from app.proxy.sse import MessageFolder, SSEDecoder, SSEEvent

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
