"""Checks for /health and /metrics: does the database answer, what is in the spool folder.

The database check opens a connection of its own — not the writer's, not the pool's, so a busy
pool or a stuck batch cannot hold it up and a check cut short leaves nothing half-used — reads
the applied migrations, and closes. It never takes longer than TIMEOUT_S:
- PostgreSQL under gevent is cooperative (psycogreen), so a gevent.Timeout cuts it; without
  gevent, libpq's connect_timeout and a statement_timeout bound it;
- sqlite3 calls block whatever the hub does, so under gevent they run in a native thread of the
  hub's pool while the caller waits cooperatively (a busy timeout ends them soon after).
A result is kept CACHE_S (a failure FAILED_CACHE_S, or until the writer commits again), so a
scraper polling /health every second does not poll the database.
"""

from __future__ import annotations

import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import peewee
import psycopg2
import psycopg2.extensions
from peewee_migrate.models import MIGRATE_TABLE

from app.storage.database import display_url, is_postgres, one_line
from app.storage.schema import migrations_dir

TIMEOUT_S = 2.0
CACHE_S = 5.0
FAILED_CACHE_S = 1.0
_MIGRATION = re.compile(r"(\d{4}_[^.]+)\.py$")
_HISTORY = f"SELECT name FROM {MIGRATE_TABLE} ORDER BY id"


class DatabaseCheck:
    """A bounded, cached `SELECT` against the app's database; see the module docstring."""

    def __init__(self, db: peewee.Database, progress: Callable[[], int] | None = None):
        self.engine = "postgresql" if is_postgres(db) else "sqlite"
        self.url = display_url(db.database) if self.engine == "postgresql" \
            else f"sqlite:///{db.database}"
        self._target = db.database
        self._params = dict(getattr(db, "connect_params", {}) or {})
        # The writer's committed-row count: a failure is stale once the writer commits again.
        self._progress = progress or (lambda: 0)
        try:
            self._known = sorted(m.group(1) for m in map(_MIGRATION.match,
                                                         os.listdir(migrations_dir())) if m)
        except OSError:
            self._known = []
        self._last: dict[str, Any] | None = None
        self._at = 0.0
        self._progress_at = 0
        self._lock = threading.Lock()  # gevent's under monkey-patching: waiters yield

    def result(self) -> dict[str, Any]:
        """`{engine, url, reachable, checked_at, latency_ms, error, schema}`, checking again
        when the last result is too old; at most about TIMEOUT_S even while others check."""
        if self._fresh():
            return self._last
        if not self._lock.acquire(timeout=TIMEOUT_S + 0.5):
            return self._last or self._report(False, 0.0, "a check is still running", None)
        try:
            if not self._fresh():  # someone else may just have checked
                self._progress_at = self._progress()
                self._last = self._check()
                self._at = time.monotonic()
            return self._last
        finally:
            self._lock.release()

    def _fresh(self) -> bool:
        last = self._last
        if last is None:
            return False
        age = time.monotonic() - self._at
        if last["reachable"]:
            return age < CACHE_S
        return age < FAILED_CACHE_S and self._progress() == self._progress_at

    def _check(self) -> dict[str, Any]:
        started = time.monotonic()
        try:
            if self.engine == "postgresql":
                applied = _bounded_green(lambda: _postgres_history(self._target, self._params))
            else:
                applied = _in_native_thread(lambda: _sqlite_history(self._target))
        except Exception as err:  # any failure is "unreachable", with its reason
            return self._report(False, started, one_line(err), None)
        return self._report(True, started, None, applied)

    def _report(self, reachable: bool, started: float, error: str | None,
                applied: list[str] | None) -> dict[str, Any]:
        schema = None
        if applied is not None:
            schema = {"version": applied[-1] if applied else None,
                      "pending": len([m for m in self._known if m not in set(applied)])}
        return {"engine": self.engine, "url": self.url, "reachable": reachable,
                "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "latency_ms": round((time.monotonic() - started) * 1000, 1) if started else None,
                "error": error, "schema": schema}


def _postgres_history(dsn: str, params: dict[str, Any]) -> list[str] | None:
    params = {**params, "connect_timeout": int(TIMEOUT_S)}
    if psycopg2.extensions.get_wait_callback() is None:
        # Blocking libpq (no gevent): nothing else would cut a server that accepts and then
        # hangs. Only here: PgBouncer refuses an `options` startup parameter by default.
        options = psycopg2.extensions.parse_dsn(dsn).get("options", "")
        params["options"] = f"{options} -c statement_timeout={int(TIMEOUT_S * 1000)}".strip()
    conn = psycopg2.connect(dsn, **params)
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
            return _history(cursor)
    finally:
        conn.close()


def _sqlite_history(path: str) -> list[str] | None:
    if path == ":memory:":
        return None
    # mode=rw: a missing file is an error, not a new empty database.
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=rw", uri=True,
                           timeout=TIMEOUT_S / 2, isolation_level=None)
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT count(*) FROM sqlite_master")  # reads the file's header
        return _history(cursor)
    finally:
        conn.close()


def _history(cursor: Any) -> list[str] | None:
    try:
        cursor.execute(_HISTORY)
    except (psycopg2.Error, sqlite3.Error):
        return None  # answers, but not migrated (yet): no schema to report
    return [row[0] for row in cursor.fetchall()]


def _green() -> bool:
    from gevent import monkey

    return monkey.is_module_patched("threading")


def _bounded_green(fn: Callable[[], Any]) -> Any:
    """fn(), cut after TIMEOUT_S when it is cooperative (psycopg2 with psycogreen)."""
    if psycopg2.extensions.get_wait_callback() is None:
        return fn()  # blocking libpq: connect_timeout and statement_timeout bound it
    import gevent

    with gevent.Timeout(TIMEOUT_S, TimeoutError(f"no answer within {TIMEOUT_S:g}s")):
        return fn()


def _in_native_thread(fn: Callable[[], Any]) -> Any:
    """fn() in a native thread under gevent, waiting at most TIMEOUT_S; else fn() here."""
    if not _green():
        return fn()
    import gevent

    def outcome():
        # Exceptions travel back as values: gevent prints any that escapes a pool task.
        try:
            return fn(), None
        except Exception as err:
            return None, err

    task = gevent.get_hub().threadpool.spawn(outcome)
    try:
        value, err = task.get(timeout=TIMEOUT_S)
    except gevent.Timeout:
        raise TimeoutError(f"no answer within {TIMEOUT_S:g}s") from None
    if err is not None:
        raise err
    return value


def spool_report(folder: Path, spool_pending: int, failing: bool) -> dict[str, Any]:
    """The spool folder: rows waiting, its files and bytes, rejected files, whether it can be
    written (the folder, or the nearest existing parent that would hold it)."""
    files = total = rejected = 0
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("spool-") and entry.name.endswith((".part", ".jsonl")):
                    files += 1
                    total += entry.stat().st_size
                elif entry.name.startswith("rejected-"):
                    rejected += 1
    except OSError:
        pass  # missing (nothing spooled yet) or not a folder: `writable` says which
    return {"dir": str(folder), "pending_rows": spool_pending, "files": files, "bytes": total,
            "rejected_files": rejected, "writable": _writable(folder),
            "last_append_failed": failing}


def _writable(folder: Path) -> bool:
    path = folder.absolute()
    while not path.exists():
        if path.parent == path:
            return False
        path = path.parent
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)
