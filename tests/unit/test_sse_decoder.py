"""Tests for SSE framing (app.proxy.sse): the decoder, event_boundary, splitting, bad bytes."""

from __future__ import annotations

import random

import pytest

from app.proxy.sse import SSEDecoder, SSEEvent, event_boundary
from tests.unit.sse_streams import STREAMS, decode, fold

# --- helpers -------------------------------------------------------------------------------


def eol_variants(stream: bytes) -> list[bytes]:
    # The JSON payloads escape newlines, so every raw \n in the stream is a line ending.
    return [stream, stream.replace(b"\n", b"\r\n"), stream.replace(b"\n", b"\r")]


def random_pieces(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(1, 40))))
    return [data[i:j] for i, j in zip([0, *cuts], [*cuts, len(data)], strict=True)]


# --- splitting the real-API-shaped streams ---------------------------------------------------


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
