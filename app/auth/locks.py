"""Locks that hold across processes, taken without blocking other greenlets.

A blocking `flock` would freeze every greenlet of the process while another process refreshes;
both locks here poll a non-blocking attempt and sleep cooperatively in between.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from pathlib import Path

import gevent

POLL_S = 0.02


class LockTimeout(Exception):
    pass


class FileLock:
    """An exclusive `flock` on a lock file (processes on one machine)."""

    def __init__(self, path: Path, timeout: float = 30.0):
        self.path = path
        self.timeout = timeout
        self._fd: int | None = None

    def __enter__(self) -> FileLock:
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise LockTimeout(f"{self.path} stayed locked for {self.timeout:.0f}s") \
                        from None
                time.sleep(POLL_S)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def advisory_key(name: str) -> int:
    """A stable signed 64-bit key for `pg_advisory_lock` from a name."""
    digest = hashlib.sha256(f"claude-nexus:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class AdvisoryLock:
    """A PostgreSQL session advisory lock (processes on several machines sharing a database)."""

    def __init__(self, dsn: str, name: str, timeout: float = 30.0):
        self.dsn = dsn
        self.key = advisory_key(name)
        self.name = name
        self.timeout = timeout
        self._conn = None

    def __enter__(self) -> AdvisoryLock:
        import psycopg2

        # libpq's connect_timeout is not enforced once psycopg2 waits through gevent.
        with gevent.Timeout(10, LockTimeout(f"PostgreSQL did not answer for {self.name}")):
            conn = psycopg2.connect(self.dsn, connect_timeout=10,
                                    application_name="claude-nexus-lock")
        conn.autocommit = True
        deadline = time.monotonic() + self.timeout
        try:
            with conn.cursor() as cursor:
                while True:
                    cursor.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
                    if cursor.fetchone()[0]:
                        break
                    if time.monotonic() > deadline:
                        raise LockTimeout(f"advisory lock for {self.name} stayed taken for "
                                          f"{self.timeout:.0f}s")
                    time.sleep(POLL_S)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return self

    def __exit__(self, *exc) -> None:
        if self._conn is not None:
            try:
                with self._conn.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
            finally:
                self._conn.close()  # closing releases the lock in any case
                self._conn = None
