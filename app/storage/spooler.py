"""The writer's use of the spool: appending, setting refused rows aside, counting and logging.

Every failure here is counted and logged, never raised: a full disk must not stop the writer
(nor, through it, the proxy). Rows that can reach neither the database nor the spool are
counted in `rows_dropped` and reported by /health and the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from app.storage.database import one_line
from app.storage.rows import Item
from app.storage.runner import Runner
from app.storage.spool import Spool

log = logging.getLogger("app.storage.writer")

LOG_EVERY_S = 10.0  # a failure that repeats (spool unwritable, queue full) is logged this often


class Spooler:
    """Spool operations run by the writer's Runner, with their counts."""

    def __init__(self, spool: Spool, run: Runner, on_error: Callable[[str], None]):
        self.spool = spool
        self._run = run
        self._on_error = on_error
        self.rows_spooled = self.rows_dropped = self.rows_rejected = 0
        self.failing = False  # the last append failed
        self._logged: dict[str, float] = {}

    def append(self, items: list[Item]) -> None:
        """Spool the items, or count them as dropped."""
        if not items:
            return
        try:
            self._run.call(self.spool.append, items)
        except (OSError, TypeError, ValueError) as err:
            self.failing = True
            self.lost(len(items), f"spool: {one_line(err)}")
            self.log_every("spool", logging.ERROR, "storage: cannot spool %d row(s) to %s "
                           "(%s); %d row(s) dropped so far", len(items), self.spool.folder,
                           one_line(err), self.rows_dropped)
            return
        self.failing = False
        self.rows_spooled += len(items)

    def reject(self, items: list[Item], err: Exception) -> None:
        """Set aside rows the database refused, in a file of their own."""
        row_id = items[0][0].get("id")
        self.rows_rejected += len(items)
        self._on_error(f"database refused row {row_id}: {one_line(err)}")
        log.error("storage: the database refused the row of exchange %s (%s): kept in %s",
                  row_id, one_line(err), self.spool.folder)
        try:
            self._run.call(self.spool.reject, items, one_line(err))
        except OSError as write_err:
            self.lost(len(items), f"spool: {one_line(write_err)}")
            log.error("storage: cannot keep the refused row either: %s", one_line(write_err))

    def scan(self) -> None:
        """Count the spooled rows again (other processes, files left by a crash)."""
        before = self.spool.pending
        try:
            pending = self._run.call(self.spool.scan)
        except OSError as err:
            self._on_error(f"spool: {one_line(err)}")
            return
        for name in self.spool.orphans:
            log.info("storage: sealed spool file %s, left by a process that stopped", name)
        self.spool.orphans.clear()
        if pending and not before and not self.rows_spooled:
            log.info("storage: %d spooled row(s) found in %s: replaying", pending,
                     self.spool.folder)

    def lost(self, count: int, message: str) -> None:
        self.rows_dropped += count
        self._on_error(message)

    def log_every(self, key: str, level: int, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._logged.get(key, -LOG_EVERY_S) >= LOG_EVERY_S:
            self._logged[key] = now
            log.log(level, message, *args)
