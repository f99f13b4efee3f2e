"""The live feed (SPEC §7.2): notices of stored requests, fanned out to the dashboard's SSE
clients (`/dashboard/events`, app/dashboard/events.py).

    writer commits ─► LiveFeed.committed ─┬─► every local client's queue ─► its SSE stream
                                          └─► NOTIFY (PostgreSQL) ─► other processes' feeds
    Listener (PostgreSQL) ─► LiveFeed.received ─► every local client's queue

On SQLite the feed is in-process: the local writer's commits are all there is. On PostgreSQL
every process also announces its commits with NOTIFY and listens for the others'
(app/storage/notify.py), so a request proxied by one process appears on a dashboard served by
another.

Bounds: at most MAX_CLIENTS streams per process (more are refused with 503), each with a queue
of CLIENT_QUEUE_MAX notices; a client that does not keep up loses notices past that, and the
writer never waits for anyone. `stop` (at shutdown, before the server waits for in-flight
responses) closes every queue, so streams end at once and do not hold graceful shutdown.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from typing import Any

import peewee
from flask import Flask

from app.storage.database import is_postgres
from app.storage.notify import Listener, Notice, Publisher, notices_of
from app.storage.rows import Item

log = logging.getLogger(__name__)

MAX_CLIENTS = 100
CLIENT_QUEUE_MAX = 256
STOP_WAIT_S = 1.0   # at stop, how long streams get to end before their sockets are shut


class Client:
    """One SSE stream's bounded queue of notices."""

    def __init__(self, limit: int = CLIENT_QUEUE_MAX, sock: Any = None):
        self.limit = limit
        self.sock = sock  # the client's socket, shut at stop if its stream is stuck writing
        self.closed = False
        self.dropped = 0
        self._notices: deque[Notice] = deque()
        self._changed = threading.Condition()  # gevent's under monkey-patching

    def offer(self, notices: list[Notice]) -> None:
        """Queue what fits; the rest is dropped (never waits)."""
        with self._changed:
            if self.closed:
                return
            room = self.limit - len(self._notices)
            self._notices.extend(notices[:room])
            self.dropped += max(0, len(notices) - room)
            self._changed.notify()

    def take(self, timeout: float) -> list[Notice] | None:
        """The queued notices, waiting up to `timeout` for one ([] if none came); None once
        the client is closed."""
        with self._changed:
            if not self._notices and not self.closed:
                self._changed.wait(timeout)
            if self.closed:
                return None
            taken = list(self._notices)
            self._notices.clear()
            return taken

    def close(self) -> None:
        with self._changed:
            self.closed = True
            self._notices.clear()
            self._changed.notify_all()


class LiveFeed:
    """Owns the clients and, on PostgreSQL, the publisher and the listener;
    `app.extensions["nexus.live"]`."""

    def __init__(self, db: peewee.Database, max_clients: int = MAX_CLIENTS,
                 queue_max: int = CLIENT_QUEUE_MAX):
        self.db = db
        self.max_clients, self.queue_max = max_clients, queue_max
        self.origin = uuid.uuid4().hex  # this process's notices, recognised on the way back
        self.running = False
        self.notices = self.refused = 0
        self._clients: set[Client] = set()
        self._lock = threading.Lock()
        self._publisher: Publisher | None = None
        self._listener: Listener | None = None

    def start(self) -> None:
        """Accept clients; on PostgreSQL under gevent, announce and listen across processes."""
        if self.running:
            return
        self.running = True
        if is_postgres(self.db) and _green():
            self._publisher = Publisher(self.db, self.origin)
            self._listener = Listener(self.db, self.received)
            self._publisher.start()
            self._listener.start()
            log.info("live: dashboard updates shared with other processes through PostgreSQL "
                     "LISTEN/NOTIFY")

    def stop(self, wait: float = STOP_WAIT_S) -> None:
        """End every stream (their queues close), then stop the publisher and the listener."""
        if not self.running:
            return
        self.running = False
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.close()
        deadline = time.monotonic() + wait
        while self._clients and time.monotonic() < deadline:
            time.sleep(0.02)
        for client in list(self._clients):  # stuck writing to a client that does not read
            _shut(client.sock)
        for owner in (self._listener, self._publisher):
            if owner is not None:
                owner.stop()
        dropped = sum(client.dropped for client in clients)
        log.info("live: stopped; %d stream(s) ended, %d notice(s) dropped for slow clients",
                 len(clients), dropped)

    def connect(self, sock: Any = None) -> Client | None:
        """A new client's queue; None when stopped or full (MAX_CLIENTS)."""
        with self._lock:
            if not self.running or len(self._clients) >= self.max_clients:
                self.refused += 1
                return None
            client = Client(self.queue_max, sock)
            self._clients.add(client)
            return client

    def disconnect(self, client: Client) -> None:
        client.close()
        with self._lock:
            self._clients.discard(client)

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def committed(self, items: list[Item], inserted: set[str]) -> None:
        """The writer's hook after each commit: hand the new requests to the local clients and,
        on PostgreSQL, to the publisher (both only queue)."""
        if not self.running or not inserted:
            return
        notices = notices_of(items, inserted)
        self._fan_out(notices)
        if self._publisher is not None:
            self._publisher.send(notices)

    def received(self, origin: str, notices: list[Notice]) -> None:
        """Notices from the listener; this process's own were handed over already."""
        if origin != self.origin and self.running:
            self._fan_out(notices)

    def _fan_out(self, notices: list[Notice]) -> None:
        if not notices:
            return
        self.notices += len(notices)
        with self._lock:
            clients = list(self._clients)
        for client in clients:
            client.offer(notices)

    def metrics(self) -> dict[str, Any]:
        return {"running": self.running, "clients": self.client_count,
                "notices": self.notices, "refused": self.refused,
                "listening": None if self._listener is None else self._listener.listening}


def _green() -> bool:
    from gevent import monkey

    return monkey.is_module_patched("socket")


def _shut(sock: Any) -> None:
    import socket

    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)  # its pending write fails, and the stream ends
    except OSError:
        pass  # already gone


def init_app(app: Flask) -> None:
    """Create the feed (not started) and hook it to the writer's commits."""
    feed = LiveFeed(app.extensions["nexus.db"])
    app.extensions["nexus.writer"].on_committed.append(feed.committed)
    app.extensions["nexus.live"] = feed


def start(app: Flask) -> None:
    """Start the feed of a serving process (next to the storage owners)."""
    feed = app.extensions.get("nexus.live")
    if feed is not None:
        feed.start()


def stop(app: Flask) -> None:
    """End the live streams: at shutdown, once the server stopped accepting."""
    feed = app.extensions.get("nexus.live")
    if feed is not None:
        feed.stop()
