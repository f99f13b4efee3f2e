"""The batch writer: every ended exchange becomes rows in the database, off the request path.

    ExchangeEnded ─► queue (≤ STORAGE_QUEUE_MAX) ─► writer loop ─► one transaction per batch
                      └─ full: overflow ─► spool ◄─────────── batch failed ─┘
                                            └─► replayed, oldest first, once the database answers

The subscriber only appends to a deque: it never blocks and never touches the database. One
loop per process takes up to STORAGE_BATCH_SIZE exchanges once that many wait or the oldest has
waited STORAGE_BATCH_INTERVAL_MS, builds their rows and inserts them in one transaction
(sink.py). Blocking work runs off the gevent hub (runner.py), and rows past the queue's bound
reach the spool even while a batch is being written.

While the database fails, batches go to the spool without trying it; the next attempt after a
back-off (PROBE_MIN_S doubling to PROBE_MAX_S) is the probe. The spool is replayed in the
background — after start-up and after each outage — between fresh batches, so a large spool
delays neither start-up nor fresh rows. Rows are counted as exchanges (request rows): an
exchange's chunk rows travel with it.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import peewee

from app.events import EventBus, ExchangeEnded
from app.proxy.exchange import Chunks, Exchange
from app.storage import rows
from app.storage.alerting import AlertWatch
from app.storage.database import describe, one_line
from app.storage.runner import Abandoned, Runner
from app.storage.sink import make_sink, refused
from app.storage.spool import Spool
from app.storage.spooler import Spooler
from app.usage.pricing import PriceTable

log = logging.getLogger(__name__)

DRAIN_S = 5.0          # at shutdown, how long queued rows may take to reach the database
STOP_GRACE_S = 5.0     # then, for the loop to spool what is left and close
PROBE_MIN_S, PROBE_MAX_S = 0.5, 5.0
SCAN_S = 2.0           # how often the spool folder is counted again (other processes, orphans)
# Queued exchanges hold whole bodies (Claude Code sends 50-200 KB): past this many bytes the
# queue spills to the spool like past STORAGE_QUEUE_MAX, so a stalled database cannot make the
# process grow without bound.
QUEUE_MAX_BYTES = 256 << 20

NEW, RUNNING, STOPPING, STOPPED = "new", "running", "stopping", "stopped"


class BatchWriter:
    """Owns the queue, the loop, the sink and the spool; `app.extensions["nexus.writer"]`."""

    def __init__(self, db: peewee.Database, spool_dir: str | Path, *, batch_size: int,
                 interval_ms: int, queue_max: int, keep_chunks: bool,
                 prices: PriceTable | None = None, watch: AlertWatch | None = None):
        self.db, self.sink = db, make_sink(db)
        self.prices, self.watch = prices, watch
        self._bus: EventBus | None = None
        # Called with each committed batch's items and the ids it inserted (the live feed); a
        # callback only hands off, and one that raises is logged, never failing the batch.
        self.on_committed: list[Callable[[list[rows.Item], set[str]], None]] = []
        self.batch_size, self.interval_s = batch_size, interval_ms / 1000
        self.queue_max, self.keep_chunks = queue_max, keep_chunks
        self.rows_written = self.rows_replayed = 0
        self.last_error: str | None = None
        self.db_failing = False
        self._queue: deque[tuple[float, Exchange, int]] = deque()
        self._queued_bytes = 0
        self._overflow: deque[Exchange] = deque()
        self._state = NEW
        self._busy = self._spooling = self._urgent = False
        self._backoff, self._probe_at, self._replay_at, self._scan_at = 0.0, 0.0, 0.0, 0.0
        self._run = Runner(on_attention=self._spool_overflow,
                           stopping=lambda: self._state == STOPPING)
        self.spooler = Spooler(Spool(spool_dir), self._run, self._error)
        self.spool = self.spooler.spool

    # ---------------------------------------------------------------- life

    def subscribe(self, bus: EventBus) -> None:
        """Record the exchanges ended on `bus`, and publish the usage alerts there."""
        self._bus = bus
        bus.subscribe(ExchangeEnded, self._on_ended)

    def start(self) -> None:
        """Start the loop; it replays any spool left by an earlier run first."""
        if self._state != NEW:
            return
        self._state = RUNNING
        self._run.start(self._loop)
        log.info("storage: recording exchanges into %s in batches of %d or every %g ms; "
                 "spool %s", describe(self.db), self.batch_size, self.interval_s * 1000,
                 self.spool.folder)

    def drain(self, timeout: float) -> bool:
        """Write what is queued now, not waiting for the interval; True if done in time."""
        if self._state != RUNNING:
            return self.queue_depth == 0
        deadline = time.monotonic() + timeout
        self._urgent = True
        self._run.wake.set()
        try:
            while self._queue or self._overflow or self._busy or self._spooling:
                if time.monotonic() >= deadline:
                    return False
                self._run.sleep(0.01)
            return True
        finally:
            self._urgent = False

    def stop(self, timeout: float = DRAIN_S) -> None:
        """Drain within `timeout`, spool whatever is left, close the spool and the sink."""
        if self._state == NEW:
            self._state = STOPPED
        if self._state != RUNNING:
            return
        if not self.drain(timeout):
            log.warning("storage: %d exchange(s) not written within %.0fs: spooling them",
                        self.queue_depth, timeout)
        self._state = STOPPING  # a database call still running is given up: see Runner.call
        if not self._run.join(STOP_GRACE_S):
            log.error("storage: the writer did not stop within %.0fs", STOP_GRACE_S)
        self._state = STOPPED
        if self._queue or self._overflow:  # ended while the loop was closing: spool here
            self._spool_exchanges(self._take(len(self._queue)) + list(self._overflow))
            self._overflow.clear()
        self._run.close()

    @property
    def queue_depth(self) -> int:
        return len(self._queue) + len(self._overflow)

    @property
    def degraded(self) -> bool:
        """The database fails, the spool cannot be written, or rows wait in the spool."""
        return self.db_failing or self.spooler.failing or self.spool.pending > 0

    def metrics(self) -> dict[str, Any]:
        spooler = self.spooler
        return {"state": self._state, "queue_depth": self.queue_depth,
                "spooled_rows_pending": self.spool.pending, "rows_written": self.rows_written,
                "rows_replayed": self.rows_replayed, "rows_spooled": spooler.rows_spooled,
                "rows_dropped": spooler.rows_dropped, "rows_rejected": spooler.rows_rejected,
                "last_error": self.last_error, "degraded": self.degraded}

    # ---------------------------------------------------------------- the request path

    def _on_ended(self, event: ExchangeEnded) -> None:
        if self._state == NEW:
            return  # not recording: a CLI command, an app that is never served
        if self._state == STOPPED:
            self.spooler.lost(1, f"exchange {event.exchange.id} ended after the writer stopped")
            log.error("storage: exchange %s ended after the writer stopped: not recorded",
                      event.exchange.id, extra={"request_id": event.exchange.id})
            return
        size = _size(event.exchange)
        if len(self._queue) < self.queue_max and self._queued_bytes + size <= QUEUE_MAX_BYTES:
            self._queue.append((time.monotonic(), event.exchange, size))
            self._queued_bytes += size
            if len(self._queue) in (1, self.batch_size):
                self._run.wake.set()  # a new deadline, or a full batch
        else:
            self._overflow.append(event.exchange)
            self._run.attention.set()  # spooled even while a batch is being written
            self._run.wake.set()

    # ---------------------------------------------------------------- the loop

    def _loop(self) -> None:
        self._scan()
        while self._state == RUNNING:
            try:
                self._run.wake.wait(self._timeout())
                self._run.wake.clear()
                self._spool_overflow()
                if self._flush_due():
                    self._flush()
                elif self.spool.pending and time.monotonic() >= self._replay_at:
                    self._replay()
                if time.monotonic() >= self._scan_at:
                    self._scan()
            except Exception as err:  # a bug must not end the loop: rows would pile up
                log.exception("storage: writer error")
                self._error(f"writer: {one_line(err)}")
                self._run.sleep(1.0)
        # Stopping: past the drain deadline, whatever is still queued goes to the spool.
        self._spool_exchanges(self._take(len(self._queue)) + list(self._overflow))
        self._overflow.clear()
        try:
            self._run.call(self.spool.close)
            if not self._run.abandoned:  # else a native thread may still use the connection
                self._run.call(self.sink.close, native=self.sink.native)
        except Exception as err:
            log.error("storage: closing the spool or the database failed: %s", one_line(err))

    def _timeout(self) -> float:
        now = time.monotonic()
        waits = [self._scan_at - now]
        if self._overflow or self._flush_due():
            return 0.0
        if self._queue:
            waits.append(self._queue[0][0] + self.interval_s - now)
        if self.spool.pending:
            waits.append(self._replay_at - now)
        return max(0.0, min(waits))

    def _flush_due(self) -> bool:
        return bool(self._queue) and (
            self._urgent or len(self._queue) >= self.batch_size
            or time.monotonic() - self._queue[0][0] >= self.interval_s)

    def _take(self, count: int) -> list[Exchange]:
        taken = [self._queue.popleft() for _ in range(min(count, len(self._queue)))]
        self._queued_bytes -= sum(size for _, _, size in taken)
        return [exchange for _, exchange, _ in taken]

    def _flush(self) -> None:
        self._busy = True
        try:
            items = self._build(self._take(self.batch_size))
            if self.db_failing and time.monotonic() < self._probe_at and \
                    not self.spooler.failing:
                self.spooler.append(items)  # known down: not tried for every batch
            elif items and not self._write(items):
                self.spooler.append(items)
        finally:
            self._busy = False

    def _replay(self) -> None:
        batch = self._run.call(self.spool.next_batch, self.batch_size)
        if batch is None:  # only files another process is replaying, or nothing after all
            self._replay_at = time.monotonic() + SCAN_S
            return
        if batch and not self._write(batch, replayed=True):
            return  # still in the spool; tried again after the back-off
        self._run.call(self.spool.committed, len(batch))
        if self.spool.skipped_lines:
            log.warning("storage: skipped %d unreadable spool line(s) (cut by a crash)",
                        self.spool.skipped_lines)
            self.spool.skipped_lines = 0
        if not self.spool.pending:
            log.info("storage: spool replayed (%d rows since start)", self.rows_replayed)

    def _write(self, items: list[rows.Item], replayed: bool = False) -> bool:
        """Commit the items; False when the database is unavailable. Rows it refuses are found
        by retrying one by one, and set aside."""
        try:
            batch = self._run.call(self.sink.statements, items)
            committed = self._run.call(self.sink.execute, batch, native=self.sink.native,
                                       database=True)
        except Abandoned:
            return False
        except Exception as err:
            if not refused(err):
                self._db_failed(err)
                return False
            if len(items) > 1:
                return all(self._write([item], replayed) for item in items)
            self.spooler.reject(items, err)
            return True
        self._db_ok()
        for request_id, err in committed.unlinked:
            log.error("conversations: request %s left unlinked: %s", request_id, one_line(err),
                      exc_info=err, extra={"request_id": request_id})
        self._alert(items, committed.inserted)
        for callback in self.on_committed:
            try:
                callback(items, committed.inserted)
            except Exception:
                log.exception("storage: on_committed callback %r failed", callback)
        # Counted last, so that a row counted as written has also been announced (alerts, the
        # live feed): /health's figures never run ahead of what subscribers saw.
        self.rows_written += len(items)
        self.rows_replayed += len(items) if replayed else 0
        return True

    def _alert(self, items: list[rows.Item], inserted: set[str]) -> None:
        """Publish the usage alerts the rows just committed raise (never fails the batch)."""
        if self.watch is None or self._bus is None or not inserted:
            return
        try:
            alerts = self._run.call(self.watch.check, items, inserted, self.sink.query,
                                    native=self.sink.native, database=True)
        except Abandoned:
            return
        except Exception as err:
            log.warning("storage: usage alerts not checked: %s", one_line(err))
            return
        for alert in alerts:
            self._bus.publish(alert)

    # ---------------------------------------------------------------- state and spooling

    def _db_failed(self, err: Exception) -> None:
        self._backoff = min(PROBE_MAX_S, self._backoff * 2) if self._backoff else PROBE_MIN_S
        self._probe_at = time.monotonic() + self._backoff
        self._replay_at = max(self._replay_at, self._probe_at)
        self._error(f"database: {one_line(err)}")
        if not self.db_failing:
            log.warning("storage: cannot write to the database (%s): spooling rows to %s "
                        "until it answers", one_line(err), self.spool.folder)
        self.db_failing = True

    def _db_ok(self) -> None:
        if self.db_failing:
            log.info("storage: the database answers again; %d spooled row(s) to replay",
                     self.spool.pending)
        self.db_failing, self._backoff = False, 0.0
        self._replay_at = min(self._replay_at, time.monotonic())
        if not self._overflow:
            self.spooler.failing = False  # nothing needs the spool now

    def _spool_exchanges(self, exchanges: list[Exchange]) -> None:
        if exchanges:
            self.spooler.append(self._build(exchanges))

    def _spool_overflow(self) -> None:
        if self._spooling or not self._overflow:
            return
        self._spooling = True
        try:
            while self._overflow:
                self.spooler.log_every("overflow", logging.WARNING, "storage: queue full "
                                       "(%d exchanges): spooling the newest", self.queue_max)
                self._spool_exchanges([self._overflow.popleft() for _ in
                                       range(min(self.batch_size, len(self._overflow)))])
        finally:
            self._spooling = False

    def _build(self, exchanges: list[Exchange]) -> list[rows.Item]:
        built, failures = self._run.call(rows.items, exchanges, self.keep_chunks, self.prices)
        for exchange_id, err in failures:
            self.spooler.lost(1, f"exchange {exchange_id}: {one_line(err)}")
            log.error("storage: cannot record exchange %s", exchange_id, exc_info=err,
                      extra={"request_id": exchange_id})
        return built

    def _scan(self) -> None:
        self._scan_at = time.monotonic() + SCAN_S
        self.spooler.scan()

    def _error(self, message: str) -> None:
        self.last_error = f"{datetime.now(UTC).isoformat(timespec='seconds')} {message}"


def _size(exchange: Exchange) -> int:
    """Roughly the memory a queued exchange holds: its bodies and stream events, and the
    answer parsed or rebuilt from them (counted as large as the answer relayed: a 50 MB
    stream's rebuilt message is about as large as its events)."""
    chunks = exchange.chunks
    events = chunks.nbytes if isinstance(chunks, Chunks) else sum(len(raw) for _, raw in chunks)
    answer = exchange.bytes_to_client if exchange.response is not None else 0
    return len(exchange.request_body) + len(exchange.response_body) + events + answer
