"""Live updates (SPEC §7.2): `/dashboard/events` streams an `event: request` for each stored
request — in-process on SQLite, across processes on one PostgreSQL (LISTEN/NOTIFY) — ends
promptly at shutdown, and a client that never reads holds nothing up."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time

import psycopg2
import pytest
import requests

from app.dashboard.live import MAX_CLIENTS
from app.storage.notify import LISTENER_NAME
from tests.integration.recording_support import (
    message_body,
    send,
    send_many,
    wait_writer,
    written,
)


class EventStream:
    """A GET of /dashboard/events read in a thread: its blocks as they arrive. (http.client
    rather than requests: its socket can be shut from the test while the reader waits.)"""

    def __init__(self, base_url: str):
        host, port = base_url.split("//", 1)[1].split(":")
        self._conn = http.client.HTTPConnection(host, int(port), timeout=60)
        self._conn.request("GET", "/dashboard/events")
        self.response = self._conn.getresponse()
        self.blocks: list[str] = []
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buffer = ""
        try:
            while chunk := self.response.read1(65536):
                buffer += chunk.decode()
                while "\n\n" in buffer:
                    block, buffer = buffer.split("\n\n", 1)
                    self.blocks.append(block)
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            pass  # cut, or shut by the test
        finally:
            self.ended.set()

    def notices(self) -> list[dict]:
        out = []
        for block in list(self.blocks):
            lines = block.split("\n")
            if "event: request" in lines:
                data = [line[len("data: "):] for line in lines if line.startswith("data: ")]
                out.append(json.loads("\n".join(data)))
        return out

    def ids(self) -> list[str]:
        return [notice["id"] for notice in self.notices()]

    def wait_for(self, request_id: str, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for notice in self.notices():
                if notice["id"] == request_id:
                    return notice
            time.sleep(0.02)
        raise AssertionError(f"no notice of {request_id}; got {self.blocks}")

    def close(self) -> None:
        if self._conn.sock is not None:
            try:
                self._conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)
        self._conn.close()


def stalled_client(base_url: str) -> socket.socket:
    """A client that asks for the event stream and never reads it (tiny receive buffer)."""
    port = int(base_url.rsplit(":", 1)[1])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /dashboard/events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return sock


def test_a_stored_request_is_announced_on_the_event_stream(start_proxy, upstream, tmp_path):
    proxy = start_proxy(DATABASE_URL=f"sqlite:///{tmp_path}/live.db",
                        STORAGE_BATCH_INTERVAL_MS="20")
    events = EventStream(proxy.url)
    try:
        assert events.response.status == 200
        assert events.response.headers["content-type"].startswith("text/event-stream")
        assert events.response.headers["cache-control"] == "no-store"
        assert events.response.headers["x-accel-buffering"] == "no"
        plain = send(proxy.url, 1, message_body(1, stream=False))
        streamed = send(proxy.url, 2, message_body(2, stream=True))
        assert plain.status == streamed.status == 200 and plain.request_id
        notice = events.wait_for(plain.request_id)
        events.wait_for(streamed.request_id)
        assert events.blocks[0].split("\n")[0] == "retry: 3000"
        assert events.blocks[0].split("\n")[1].startswith(":")
        assert notice["status"] == 200 and notice["domain"]
        assert notice["received_at"].endswith("Z")
        assert "account_id" in notice
        assert events.ids().count(plain.request_id) == 1
    finally:
        events.close()


def test_the_event_stream_is_behind_the_dashboard_login(start_proxy, tmp_path):
    proxy = start_proxy(DATABASE_URL=f"sqlite:///{tmp_path}/live.db",
                        DASHBOARD_API_KEY="live-test-dashboard-key-0123456789")
    answer = requests.get(proxy.url + "/dashboard/events", allow_redirects=False, timeout=5)
    assert answer.status_code == 302 and "/dashboard/login" in answer.headers["location"]


def test_a_request_through_one_process_appears_on_another(postgres_url, start_proxy, upstream):
    first = start_proxy(DATABASE_URL=postgres_url, STORAGE_BATCH_INTERVAL_MS="20")
    second = start_proxy(DATABASE_URL=postgres_url, STORAGE_BATCH_INTERVAL_MS="20")
    wait_listeners(postgres_url, 2)
    on_second, on_first = EventStream(second.url), EventStream(first.url)
    try:
        sent = send(first.url, 1, message_body(1, stream=True))
        assert sent.status == 200
        notice = on_second.wait_for(sent.request_id)
        assert notice["status"] == 200 and notice["received_at"].endswith("Z")
        on_first.wait_for(sent.request_id)  # handed over locally ...
        time.sleep(0.3)
        assert on_first.ids().count(sent.request_id) == 1  # ... not again through NOTIFY
        assert on_second.ids().count(sent.request_id) == 1

        # The database drops the listeners' connections: they come back, and so do notices.
        before = listener_pids(postgres_url)
        with psycopg2.connect(postgres_url) as conn, conn.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE application_name = %s AND datname = current_database()",
                           (LISTENER_NAME,))
        conn.close()
        wait_listeners(postgres_url, 2, not_in=before)
        again = send(first.url, 2, message_body(2, stream=False))
        on_second.wait_for(again.request_id)
    finally:
        on_second.close()
        on_first.close()


def test_sigterm_ends_live_streams_at_once(start_proxy, tmp_path):
    proxy = start_proxy(DATABASE_URL=f"sqlite:///{tmp_path}/live.db", SHUTDOWN_GRACE_S="30")
    events = EventStream(proxy.url)
    stalled = stalled_client(proxy.url)
    try:
        deadline = time.monotonic() + 5
        while not events.blocks and time.monotonic() < deadline:
            time.sleep(0.02)
        assert events.blocks, "the stream never started"
        started = time.monotonic()
        proxy.proc.send_signal(signal.SIGTERM)
        assert proxy.proc.wait(timeout=15) == 0
        assert time.monotonic() - started < 5  # not the 30 s of grace
        assert events.ended.wait(5)
    finally:
        events.close()
        stalled.close()


def test_a_client_that_never_reads_does_not_hold_the_writer(start_proxy, upstream, tmp_path):
    proxy = start_proxy(DATABASE_URL=f"sqlite:///{tmp_path}/live.db",
                        STORAGE_BATCH_INTERVAL_MS="20")
    stalled = stalled_client(proxy.url)
    events = EventStream(proxy.url)
    try:
        bodies = {seq: message_body(seq, stream=seq % 2 == 0, text="x" * 200)
                  for seq in range(200)}
        started = time.monotonic()
        sent = send_many(proxy.url, bodies)
        assert {s.status for s in sent} == {200}
        wait_writer(proxy, written(200), timeout=30)
        assert time.monotonic() - started < 30
        for s in sent:
            events.wait_for(s.request_id)  # the client that reads gets every notice
        assert requests.get(proxy.url + "/health/live", timeout=5).ok
    finally:
        events.close()
        stalled.close()


def test_clients_are_bounded_and_those_gone_free_their_place(start_proxy, tmp_path):
    proxy = start_proxy(DATABASE_URL=f"sqlite:///{tmp_path}/live.db")
    clients = [stalled_client(proxy.url) for _ in range(MAX_CLIENTS)]
    try:
        for sock in clients:
            sock.settimeout(5)
            assert sock.recv(64).startswith(b"HTTP/1.1 200")
        refused = requests.get(proxy.url + "/dashboard/events", timeout=5)
        assert refused.status_code == 503
    finally:
        for sock in clients:
            sock.close()
    time.sleep(2.5)  # each stream notices its hang-up within a second, not at its next write
    events = EventStream(proxy.url)
    try:
        assert events.response.status == 200
    finally:
        events.close()


# ---------------------------------------------------------------- PostgreSQL helpers

@pytest.fixture
def postgres_url(tmp_path, request):
    from tests.databases import engine_url

    with engine_url("postgresql", tmp_path, request) as url:
        yield url


def listener_pids(url: str) -> set[int]:
    with psycopg2.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                       "AND datname = current_database() AND query ILIKE 'LISTEN%%'",
                       (LISTENER_NAME,))
        pids = {row[0] for row in cursor.fetchall()}
    conn.close()
    return pids


def wait_listeners(url: str, count: int, not_in: set[int] = frozenset(),
                   timeout: float = 15.0) -> None:
    """Until `count` processes LISTEN (on connections other than `not_in`)."""
    deadline = time.monotonic() + timeout
    while len(listener_pids(url) - not_in) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} listeners expected, found {listener_pids(url)}")
        time.sleep(0.05)
