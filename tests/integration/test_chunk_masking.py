"""A secret that a stream spells across SSE events is masked in every stored `request_chunks`
row, on SQLite and PostgreSQL (app/redact_events.py through the writer's rows and sink)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from app.proxy.exchange import MESSAGES, Chunks, Exchange
from app.storage import rows
from app.storage.models import RequestChunk
from app.storage.sink import make_sink
from tests.databases import migrated

KEY = "sk-ant-api03-AB" + "CDsplitAcrossEvents0123456789WXYZ"
TOKEN = "tok-0123456789-splitvalue"


@pytest.fixture
def db(database_url):
    with migrated(database_url) as database:
        yield database


def api_event(name: str, data: dict) -> bytes:
    """An event framed as the Messages API sends it (compact JSON)."""
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"event: {name}\ndata: {text}\n\n".encode()


def delta(index: int, kind: str, field: str, value: str, compact: bool = True) -> bytes:
    data = {"type": "content_block_delta", "index": index, "delta": {"type": kind, field: value}}
    if compact:
        return api_event("content_block_delta", data)
    return f"event: content_block_delta\r\ndata: {json.dumps(data)}\r\n\r\n".encode()


def streamed_exchange() -> tuple[Exchange, list[bytes]]:
    tool_input = json.dumps({"command": f"curl -d 'api_key={TOKEN}' https://example.com"})
    events = [
        api_event("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "content": [],
            "model": "claude-sonnet-4-5", "usage": {"input_tokens": 3, "output_tokens": 1}}}),
        # The key the model repeats, cut where the model's tokens fell: the head alone is too
        # short to look like a key, the tail has no prefix at all.
        delta(0, "text_delta", "text", "Your key is " + KEY[:15]),
        delta(0, "text_delta", "text", KEY[15:30]),
        delta(0, "text_delta", "text", KEY[30:] + " — keep it safe."),
        # A tool call whose input names a secret, cut inside the value; framed another way.
        delta(1, "input_json_delta", "partial_json", tool_input[:32], compact=False),
        delta(1, "input_json_delta", "partial_json", tool_input[32:], compact=False),
        api_event("message_stop", {"type": "message_stop"}),
    ]
    x = Exchange(method="POST", path="/v1/messages", query="", domain="team.example.com",
                 publish=lambda event: None, kind=MESSAGES,
                 received_at=datetime.now(UTC).replace(microsecond=0))
    x.request_body = b'{"model":"claude-sonnet-4-5","messages":[]}'
    x.stream, x.upstream_status = True, 200
    x.chunks = Chunks((10.0 * n, raw) for n, raw in enumerate(events))
    x.complete()
    return x, events


def test_a_secret_split_across_events_is_masked_in_every_stored_chunk(db):
    x, events = streamed_exchange()
    sink = make_sink(db)
    built, failures = rows.items([x], keep_chunks=True)
    assert failures == []
    try:
        sink.execute(sink.statements(built))
    finally:
        sink.close()

    stored = [c.data for c in RequestChunk.select().where(RequestChunk.request_id == x.id)
              .order_by(RequestChunk.seq)]
    assert len(stored) == len(events)
    for piece in (KEY[:15], KEY[15:30], KEY[30:-4], "splitAcross", TOKEN[:10], "splitvalue"):
        assert not any(piece in data for data in stored), piece
    # The events masking did not touch are stored byte for byte.
    assert stored[0] == events[0].decode() and stored[-1] == events[-1].decode()
    texts = [json.loads(data.split("data: ", 1)[1])["delta"] for data in stored[1:6]]
    # The masked part goes where the key began; what masking kept (its last four) stays in
    # its event.
    assert [t["text"] for t in texts[:3]] == ["Your key is sk-ant-…", "", "WXYZ — keep it safe."]
    assert json.loads("".join(t["partial_json"] for t in texts[3:])) == {
        "command": "curl -d 'api_key=[redacted]' https://example.com"}


def test_each_event_is_masked_alone_as_before(db):
    """Events that are no deltas (an error, a comment) are masked one by one."""
    x, _ = streamed_exchange()
    x.chunks = Chunks([(1.0, b": keep-alive x-api-key: abcdef123456\n\n"),
                       (2.0, api_event("error", {"type": "error", "error": {
                           "type": "api_error", "message": f"bad key {KEY}"}}))])
    built, _ = rows.items([x], keep_chunks=True)
    assert [chunk["data"] for chunk in built[0][1]] == [
        ": keep-alive x-api-key: [redacted]\n\n",
        api_event("error", {"type": "error", "error": {
            "type": "api_error", "message": "bad key sk-ant-…WXYZ"}}).decode()]
