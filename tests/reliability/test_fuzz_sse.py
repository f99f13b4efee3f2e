"""Property tests of the SSE path with hypothesis: the decoder and the relay generator take
any bytes, split anywhere — real Anthropic events mixed with comments, blank lines, unknown
fields, CR / LF / CRLF line ends, long lines, a BOM and invalid UTF-8 — never raise, and
the client always gets exactly the upstream's bytes (plus, for a stream cut before
`message_stop`, one `event: error`). Example counts are kept low so the module runs in seconds."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from app.proxy import relay as relay_module
from app.proxy.exchange import Exchange
from app.proxy.fold import StreamFold
from app.proxy.relay import relay
from app.proxy.sse import SSEDecoder, error_event_bytes
from app.proxy.upstream import UpstreamResponse
from tests.unit.sse_streams import STREAMS

FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

REAL_EVENTS = sorted({event + b"\n\n" for stream, _ in STREAMS.values()
                      for event in stream.split(b"\n\n") if event})

pieces = st.one_of(
    st.sampled_from(REAL_EVENTS),
    st.sampled_from([b"\n", b"\r", b"\r\n", b"\n\n", b"\r\r", b"\r\n\r\n", b": ping\n\n",
                     b":\n", b"event: ping\n", b"data:\n\n", b"data\n\n", b"id: 7\nretry: x\n",
                     b"\xef\xbb\xbf", b"\xff\xfe\xc3\x28", b"\xed\xa0\x80", b"\x00"]),
    st.binary(max_size=64),
    st.builds(lambda n, c: b"data: " + c * n + b"\n", st.integers(0, 4096),
              st.sampled_from([b"x", b"\xff", b"\r", b"{"])),
)
streams = st.lists(pieces, max_size=25).map(b"".join)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


def line_ends(data: bytes, style: str) -> bytes:
    if style == "lf":
        return data
    normal = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    return normal.replace(b"\n", b"\r\n" if style == "crlf" else b"\r")


@FUZZ
@given(data=streams, cuts=st.lists(st.integers(0, 10**6), max_size=30),
       style=st.sampled_from(["lf", "crlf", "cr"]))
def test_the_decoder_takes_any_bytes_the_same_way_however_split(data, cuts, style):
    data = line_ends(data, style)
    whole = SSEDecoder()
    expected = whole.feed(data) + whole.flush()
    decoder = SSEDecoder()
    events = []
    for piece in split(data, cuts):
        events += decoder.feed(piece)
        assert decoder.pending_bytes <= len(data)
    events += decoder.flush()
    assert events == expected
    # Each event's raw bytes are the input's, in order, without a gap or an overlap.
    joined = b"".join(event.raw for event in events)
    assert data.startswith(joined)
    for event in events:
        assert isinstance(event.data, str) and (event.event is None or isinstance(event.event, str))


class _Body:
    """The upstream body's remaining chunks, as `requests`' raw stream gives them."""

    def __init__(self, chunks: list[bytes]):
        self.raw = SimpleNamespace(read1=lambda _size: chunks.pop(0) if chunks else b"")
        self.closed = False

    def close(self) -> None:
        self.closed = True


def relayed(chunks: list[bytes]) -> tuple[bytes, Exchange, list]:
    ended: list = []
    exchange = Exchange(method="POST", path="/v1/messages", query="", domain="fuzz",
                        publish=ended.append)
    exchange.upstream_status = 200  # as Proxy.forward records it before relaying
    body = _Body(list(chunks[1:]))
    answer = UpstreamResponse(response=body, status=200,
                              headers=[("content-type", "text/event-stream")],
                              first_chunk=chunks[0] if chunks else b"")
    fold = StreamFold(exchange, None, keep_chunks=True)
    out = b"".join(relay(exchange, answer, fold, True, None))
    assert body.closed  # the upstream connection is always released
    return out, exchange, ended


def check_relay(data: bytes, chunks: list[bytes]) -> None:
    out, exchange, ended = relayed(chunks)
    assert out[:len(data)] == data  # every upstream byte, unchanged and in order
    extra = out[len(data):]
    assert extra in (b"", error_event_bytes(exchange.error_type or "", exchange.error_message
                                            or "")), extra[:200]
    assert exchange.bytes_to_client == len(data)
    assert len([e for e in ended if e is exchange.ended]) == 1  # ended exactly once
    assert exchange.status == 200 and exchange.ended is not None
    assert data.startswith(b"".join(raw for _, raw in exchange.chunks))  # events as relayed


@FUZZ
@given(data=streams, cuts=st.lists(st.integers(0, 10**6), max_size=30),
       style=st.sampled_from(["lf", "crlf", "cr"]))
@example(data=b'event: message_stop\ndata: {"type":"message_stop"}\n\n', cuts=[], style="lf")
def test_the_relay_passes_any_stream_through_byte_for_byte(data, cuts, style):
    data = line_ends(data, style)
    check_relay(data, split(data, cuts) or [b""])


@FUZZ
@given(data=streams, cuts=st.lists(st.integers(0, 10**6), max_size=30))
def test_the_relay_stops_holding_an_event_that_never_ends(data, cuts):
    """Past MAX_HELD_BYTES without a blank line the relay forwards what it holds (made small
    here so that hypothesis reaches it with small inputs)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(relay_module, "MAX_HELD_BYTES", 32)
        check_relay(data, split(data, cuts) or [b""])


def test_a_real_stream_with_a_huge_line_is_relayed_whole():
    stream = next(iter(STREAMS.values()))[0]
    huge = b"data: " + b"y" * (3 << 20) + b"\n\n"  # past MAX_HELD_BYTES in one event
    data = stream[:len(stream) // 2].rsplit(b"\n\n", 1)[0] + b"\n\n" + huge + stream
    chunks = [data[i:i + 65536] for i in range(0, len(data), 65536)]
    out, exchange, _ = relayed(chunks)
    assert out[:len(data)] == data
