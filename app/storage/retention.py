"""Retention (`RETENTION_DAYS`): old rows purged daily, and PostgreSQL partitions kept ahead.

On PostgreSQL whole months before the cutoff are dropped as partitions (instant, no bloat);
what remains older than the cutoff — the month that straddles it, and the default partition —
is deleted in small batches, as everything is on SQLite. Batches stay small and the job yields
between them, so the proxy's greenlets keep running while it works.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import peewee

from app.storage.database import is_postgres, storage_errors
from app.storage.partitions import drop_partitions_before, ensure_partitions

log = logging.getLogger(__name__)

BATCH_ROWS = 2000
DAY_S = 24 * 3600
FIRST_RUN_DELAY_S = 60.0  # let start-up traffic settle first

# (table, time column, key columns that identify a row, also across partitions)
TABLES = (
    ("request_chunks", "received_at", "request_id, seq, received_at"),
    ("requests", "received_at", "id, received_at"),
    ("ratelimit_samples", "sampled_at", "id"),
    ("conversation_anchors", "received_at", "id"),
    # A conversation goes with its last request; one still active keeps its figures whole.
    ("conversations", "last_request_at", "id"),
)


@dataclass
class PurgeResult:
    cutoff: datetime
    partitions_dropped: list[str] = field(default_factory=list)
    rows_deleted: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        rows = ", ".join(f"{n} {t}" for t, n in self.rows_deleted.items()) or "no rows"
        parts = f"; dropped {', '.join(self.partitions_dropped)}" if self.partitions_dropped \
            else ""
        return f"purged before {self.cutoff:%Y-%m-%d %H:%M} UTC: {rows}{parts}"


def cutoff_for(days: int, now: datetime | None = None) -> datetime:
    """The instant before which rows are purged."""
    return (now or datetime.now(UTC)) - timedelta(days=days)


def count_older(db: peewee.Database, cutoff: datetime) -> dict[str, int]:
    """Rows each table holds from before `cutoff` (for `--dry-run` and progress)."""
    naive = cutoff.astimezone(UTC).replace(tzinfo=None)
    return {table: db.execute_sql(f'SELECT COUNT(*) FROM "{table}" WHERE "{column}" < '
                                  f'{db.param}', (naive,)).fetchone()[0]
            for table, column, _ in TABLES}


def purge(db: peewee.Database, cutoff: datetime,
          progress: Callable[[int], None] | None = None) -> PurgeResult:
    """Remove every row older than `cutoff`; `progress(n)` is told of each batch deleted."""
    result = PurgeResult(cutoff)
    naive = cutoff.astimezone(UTC).replace(tzinfo=None)
    result.partitions_dropped = drop_partitions_before(db, naive)
    mark = db.param
    for table, column, key in TABLES:
        if is_postgres(db):
            statement = (f'DELETE FROM "{table}" WHERE ({key}) IN (SELECT {key} FROM "{table}" '
                         f'WHERE "{column}" < {mark} LIMIT {BATCH_ROWS})')
        else:  # SQLite: rowid is the cheapest handle on a row
            statement = (f'DELETE FROM "{table}" WHERE rowid IN (SELECT rowid FROM "{table}" '
                         f'WHERE "{column}" < {mark} LIMIT {BATCH_ROWS})')
        total = 0
        while True:
            with db.atomic():
                deleted = db.execute_sql(statement, (naive,)).rowcount
            total += deleted
            if progress is not None and deleted:
                progress(deleted)
            if deleted < BATCH_ROWS:
                break
            time.sleep(0.01)  # outside the transaction: other writers get their turn
        result.rows_deleted[table] = total
    return result


class RetentionKeeper:
    """Owns the daily job: keep partitions ahead (PostgreSQL) and purge past RETENTION_DAYS."""

    def __init__(self, db: peewee.Database, days: int):
        self.db = db
        self.days = days
        self._stop = threading.Event()
        self._worker = None

    def start(self) -> None:
        import gevent

        if self._worker is None and (self.days > 0 or is_postgres(self.db)):
            self._worker = gevent.spawn(self._run)

    def stop(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.kill(block=True, timeout=5)
            self._worker = None

    def run_once(self) -> None:
        """One round of the daily job; failures are logged, the next round tries again."""
        try:
            with storage_errors(self.db, "maintain"), self.db.connection_context():
                created = ensure_partitions(self.db)
                if created:
                    log.info("storage: created partitions %s", ", ".join(created))
                if self.days > 0:
                    log.info("retention: %s", purge(self.db, cutoff_for(self.days)).summary())
        except Exception:
            log.exception("retention: the daily job failed; it runs again tomorrow")

    def _run(self) -> None:
        delay = FIRST_RUN_DELAY_S
        while not self._stop.wait(delay):
            self.run_once()
            delay = DAY_S
