"""Notices of stored requests, and how they cross processes on PostgreSQL (LISTEN/NOTIFY).

    writer commits a batch ─► notices_of(...) ─► the process's own subscribers (the live feed)
                                    └─► Publisher ─► NOTIFY nexus_requests ─► Listener of every
                                                                   process ─► its subscribers

A notice is what a dashboard needs to know that a request was stored: its id, domain, account,
status and received_at (JSON types). One NOTIFY carries the notices of one batch (split to stay
under PostgreSQL's 8000-byte payload limit) with the sending process's `origin`, so that each
process skips its own notices on the way back (they were handed over locally already).

The Publisher sends from a greenlet of its own on a pooled connection, right after the writer's
commit; it never holds the writer up: its outbox is bounded and drops notices rather than wait.
The Listener holds one dedicated connection per process (not from the pool: it sits in LISTEN
for the process's life), waits on its socket cooperatively (psycogreen), checks it when idle,
and reconnects with back-off when the database goes away. Notices are best effort: those sent
while a listener reconnects are not seen by that process.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import peewee
import psycopg2
import psycopg2.extensions

from app.storage.database import CONNECT_TIMEOUT_S, one_line
from app.storage.rows import Item

log = logging.getLogger(__name__)

CHANNEL = "nexus_requests"
PAYLOAD_MAX = 7900         # bytes; PostgreSQL refuses a payload of 8000 or more
OUTBOX_MAX = 2000          # notices waiting to be sent; past it the oldest are dropped
SEND_TIMEOUT_S = 10.0      # one NOTIFY, including the wait for a pooled connection
IDLE_CHECK_S = 30.0        # a listener that heard nothing this long checks its connection
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.5, 10.0
LISTENER_NAME = "claude-nexus-live"  # application_name of the listening connections

Notice = dict[str, Any]
Deliver = Callable[[str, list[Notice]], None]   # (origin, notices)


def notices_of(items: list[Item], inserted: set[str]) -> list[Notice]:
    """The notices of the request rows a batch inserted (a replayed row already stored is not
    announced again)."""
    out = []
    for request, _ in items:
        if request["id"] not in inserted:
            continue
        status = request.get("status")
        out.append({"id": request["id"], "domain": request.get("domain"),
                    "account_id": request.get("account_id"),
                    "status": int(status) if isinstance(status, str) and status.isdigit()
                    else status,
                    "received_at": _timestamp(request.get("received_at"))})
    return out


def _timestamp(value: Any) -> Any:
    # As the JSON API writes times: UTC with microseconds and `Z`.
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def payloads(origin: str, notices: list[Notice]) -> list[str]:
    """The NOTIFY payloads carrying `notices`, each under PAYLOAD_MAX bytes."""
    head = len(_payload(origin, []).encode())
    out: list[str] = []
    part: list[str] = []
    size = head
    for notice in notices:
        encoded = json.dumps(notice, separators=(",", ":"))
        if head + len(encoded.encode()) + 1 > PAYLOAD_MAX:
            log.warning("live: notice of request %s too large to send", notice.get("id"))
            continue
        if part and size + len(encoded.encode()) + 1 > PAYLOAD_MAX:
            out.append(_payload(origin, part))
            part, size = [], head
        part.append(encoded)
        size += len(encoded.encode()) + 1
    if part:
        out.append(_payload(origin, part))
    return out


def _payload(origin: str, encoded: list[str]) -> str:
    return f'{{"origin":{json.dumps(origin)},"requests":[{",".join(encoded)}]}}'


def parse(payload: str) -> tuple[str, list[Notice]] | None:
    """(origin, notices) of a payload; None when it is not one of ours."""
    try:
        data = json.loads(payload)
        origin, notices = data["origin"], data["requests"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(origin, str) or not isinstance(notices, list):
        return None
    return origin, [n for n in notices if isinstance(n, dict) and "id" in n]


class Publisher:
    """Sends notices with NOTIFY from a greenlet of its own, on the app's connection pool."""

    def __init__(self, db: peewee.Database, origin: str):
        self.db, self.origin = db, origin
        self.sent = self.dropped = 0
        self._outbox: deque[Notice] = deque()
        self._ready: Any = None
        self._worker: Any = None
        self._failing = False

    def start(self) -> None:
        import gevent
        from gevent.event import Event

        if self._worker is None:
            self._ready = Event()
            self._worker = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.kill(block=True, timeout=2)
            self._worker = None

    def send(self, notices: list[Notice]) -> None:
        """Queue notices for sending (never blocks; past OUTBOX_MAX the oldest are dropped)."""
        if self._worker is None:
            return
        self._outbox.extend(notices)
        while len(self._outbox) > OUTBOX_MAX:
            self._outbox.popleft()
            self.dropped += 1
        self._ready.set()

    def _run(self) -> None:
        while True:
            self._ready.wait()
            self._ready.clear()
            notices = list(self._outbox)
            self._outbox.clear()
            if notices:
                self._notify(notices)

    def _notify(self, notices: list[Notice]) -> None:
        import gevent

        db = self.db
        try:
            with gevent.Timeout(SEND_TIMEOUT_S, TimeoutError(
                    f"no answer from the database within {SEND_TIMEOUT_S:g}s")):
                db.connect(reuse_if_open=True)
                # One round trip for the whole batch, whatever the number of payloads.
                db.execute_sql("SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p",
                               (CHANNEL, payloads(self.origin, notices)))
        except Exception as err:
            self.dropped += len(notices)
            _discard(db)
            if not self._failing:
                log.warning("live: cannot announce stored requests to other processes: %s",
                            one_line(err))
            self._failing = True
            return
        db.close()  # back to the pool
        self.sent += len(notices)
        self._failing = False


def _discard(db: peewee.Database) -> None:
    try:
        db.manual_close()  # a connection in an unknown state is not given back to the pool
    except Exception as err:
        log.debug("live: discarding a database connection: %s", err)


class Listener:
    """LISTENs on a dedicated connection in a greenlet; hands each payload to `deliver`."""

    def __init__(self, db: peewee.Database, deliver: Deliver):
        self.db, self.deliver = db, deliver
        self.listening = False  # LISTEN in place on a live connection
        self.received = 0
        self._worker: Any = None

    def start(self) -> None:
        import gevent

        if self._worker is None:
            self._worker = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._worker is not None:
            self._worker.kill(block=True, timeout=2)  # GreenletExit closes the connection
            self._worker = None
        self.listening = False

    def _run(self) -> None:
        import gevent

        backoff = 0.0  # 0: never failed, or was listening until now
        while True:
            try:
                self._listen()
            except (psycopg2.Error, OSError, gevent.Timeout) as err:
                if self.listening or not backoff:
                    log.warning("live: not listening to other processes' requests (%s): "
                                "reconnecting", one_line(err))
                    backoff = 0.0
                else:
                    log.debug("live: reconnecting failed: %s", one_line(err))
            except Exception:  # a bug must not end live updates for good
                log.exception("live: listener error")
            self.listening = False
            backoff = min(RECONNECT_MAX_S, backoff * 2) if backoff else RECONNECT_MIN_S
            gevent.sleep(backoff)

    def _listen(self) -> None:
        from gevent import Timeout
        from gevent.select import select

        conn = self._connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f"LISTEN {CHANNEL}")
            if not self.listening:
                log.info("live: listening for requests stored by other processes")
            self.listening = True
            while True:
                while conn.notifies:  # those that came with the last answer too
                    self._deliver(conn.notifies.pop(0).payload)
                if select([conn], [], [], IDLE_CHECK_S)[0]:
                    conn.poll()
                    continue
                # Quiet for long: make sure the server is still there (a peer gone without a
                # word would otherwise leave this wait for ever).
                with Timeout(SEND_TIMEOUT_S, TimeoutError("the idle check got no answer")), \
                        conn.cursor() as cursor:
                    cursor.execute("SELECT 1")
        finally:
            try:
                conn.close()
            except psycopg2.Error:
                pass  # already broken: nothing to release

    def _connect(self):
        from gevent import Timeout

        db = self.db
        params = dict(db.connect_params)
        if "application_name" not in psycopg2.extensions.parse_dsn(db.database):
            params["application_name"] = LISTENER_NAME
        seconds = getattr(db, "connect_timeout_s", None) or CONNECT_TIMEOUT_S
        with Timeout(seconds, TimeoutError(f"no answer from the server within {seconds:g}s")):
            return psycopg2.connect(db.database, **params)

    def _deliver(self, payload: str) -> None:
        parsed = parse(payload)
        if parsed is None:
            log.debug("live: ignored a notification that is not ours: %.80r", payload)
            return
        self.received += len(parsed[1])
        self.deliver(*parsed)
