"""The live feed's bounds and notices, without a server: per-client queues that drop rather
than wait, the client limit, stop ending every stream, the SSE text, and NOTIFY payloads that
stay under PostgreSQL's limit."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from app.dashboard.events import stream
from app.dashboard.live import LiveFeed
from app.storage.database import make_database
from app.storage.notify import PAYLOAD_MAX, notices_of, parse, payloads


@pytest.fixture
def feed(tmp_path):
    feed = LiveFeed(make_database(f"sqlite:///{tmp_path}/live.db", 1), max_clients=3,
                    queue_max=10)
    feed.start()
    yield feed
    feed.stop(wait=0)


def item(seq: int, status: str | None = "200") -> tuple[dict, list]:
    return ({"id": f"req-{seq}", "domain": "team.example.com", "account_id": "acct",
             "status": status, "received_at": datetime(2026, 1, 2, 3, 4, 5, 6000, UTC),
             "request_body": "x" * 1000}, [])


def test_notices_carry_the_new_rows_only():
    items = [item(1), item(2, "client_disconnected"), item(3, None)]
    assert notices_of(items, {"req-1", "req-2"}) == [
        {"id": "req-1", "domain": "team.example.com", "account_id": "acct", "status": 200,
         "received_at": "2026-01-02T03:04:05.006000Z"},
        {"id": "req-2", "domain": "team.example.com", "account_id": "acct",
         "status": "client_disconnected", "received_at": "2026-01-02T03:04:05.006000Z"}]


def test_a_client_that_does_not_read_keeps_only_its_bound(feed):
    stalled, reader = feed.connect(), feed.connect()
    got = []
    started = time.monotonic()
    for seq in range(50):
        feed.committed([item(seq)], {f"req-{seq}"})
        got += reader.take(0)
    assert time.monotonic() - started < 1  # never waits for anyone
    assert [n["id"] for n in got] == [f"req-{seq}" for seq in range(50)]
    assert [n["id"] for n in stalled.take(0)] == [f"req-{seq}" for seq in range(10)]
    assert stalled.dropped == 40 and reader.dropped == 0


def test_clients_beyond_the_limit_are_refused(feed):
    clients = [feed.connect() for _ in range(3)]
    assert all(clients) and feed.connect() is None
    feed.disconnect(clients[0])
    assert feed.connect() is not None


def test_stop_ends_every_stream_at_once(feed):
    client = feed.connect()
    text = stream(feed, client)
    assert next(text) == "retry: 3000\n: connected\n\n"
    feed.committed([item(1), item(2)], {"req-1", "req-2"})
    assert next(text) == (
        'event: request\ndata: {"id":"req-1","domain":"team.example.com","account_id":"acct",'
        '"status":200,"received_at":"2026-01-02T03:04:05.006000Z"}\n\n'
        'event: request\ndata: {"id":"req-2","domain":"team.example.com","account_id":"acct",'
        '"status":200,"received_at":"2026-01-02T03:04:05.006000Z"}\n\n')
    rest: list[str] = []
    reader = threading.Thread(target=lambda: rest.extend(text))  # waits for the next notice
    reader.start()
    time.sleep(0.1)
    started = time.monotonic()
    feed.stop(wait=1)
    reader.join(2)
    assert not reader.is_alive() and rest == [] and time.monotonic() - started < 1
    assert feed.client_count == 0 and feed.connect() is None


def test_notices_from_other_processes_only(feed):
    client = feed.connect()
    feed.received(feed.origin, [{"id": "mine"}])
    feed.received("another-process", [{"id": "theirs"}])
    assert client.take(0) == [{"id": "theirs"}]


def test_notify_payloads_stay_under_the_limit():
    notices = [{"id": f"{seq:036d}", "domain": "d" * 200, "account_id": "a" * 64,
                "status": 200, "received_at": "2026-01-02T03:04:05.006000Z"}
               for seq in range(500)]
    sent = payloads("origin-1", notices)
    assert len(sent) > 1 and all(len(p.encode()) < PAYLOAD_MAX for p in sent)
    received = [parse(p) for p in sent]
    assert {origin for origin, _ in received} == {"origin-1"}
    assert [n for _, part in received for n in part] == notices
    assert parse("not json") is None and parse('{"requests": []}') is None
