"""The peewee Database for a `DATABASE_URL`: SQLite with its pragmas, or pooled PostgreSQL.

Building a database opens nothing: connections are made on first use, so the CLI's `--help`
works whatever the URL points at. Errors met while using one are turned into a one-line
`StorageError` by `storage_errors`.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import peewee
import psycopg2
import psycopg2.extensions
from playhouse.pool import PooledPostgresqlDatabase

from app.config import ConfigError

CONNECT_TIMEOUT_S = 10
POOL_WAIT_S = 30         # how long a caller waits for a free pooled connection
POOL_STALE_S = 300       # pooled connections idle longer than this are reopened

SQLITE_PRAGMAS = {
    "journal_mode": "wal",    # readers never block the writer
    "synchronous": "normal",  # safe with WAL; fsync at checkpoints only
    "busy_timeout": 5000,     # wait for another process's write lock instead of failing
    "foreign_keys": 1,
}

SLOW_SQL_MAX_CHARS = 1000  # the multi-row INSERTs of a batch run to many kilobytes

_green_psycopg = False
_slow_log = logging.getLogger("nexus.sql")


class StorageError(Exception):
    """The database could not be used; the message is one line, without secrets."""


class SlowQueryLog:
    """Times every statement and logs those slower than `slow_query_ms` (0: none) on
    `nexus.sql`: duration, the SQL text shortened, how many parameters — never their values,
    which hold bodies and secrets."""

    slow_query_ms: float = 0

    def execute_sql(self, sql, params=None):
        if not self.slow_query_ms:
            return super().execute_sql(sql, params)
        started = time.perf_counter()
        failed = True
        try:
            cursor = super().execute_sql(sql, params)
            failed = False
            return cursor
        finally:
            elapsed_ms = (time.perf_counter() - started) * 1000
            if elapsed_ms >= self.slow_query_ms:
                _log_slow(sql, params, elapsed_ms, failed)


def _log_slow(sql: str, params, elapsed_ms: float, failed: bool) -> None:
    text = " ".join(str(sql).split())
    if len(text) > SLOW_SQL_MAX_CHARS:
        text = text[:SLOW_SQL_MAX_CHARS] + f"… ({len(text)} chars)"
    count = len(params) if params else 0
    elapsed_ms = round(elapsed_ms, 1)  # the same figure in the message and the field
    _slow_log.warning("slow query: %.0f ms%s, %d parameter(s): %s", elapsed_ms,
                      " (failed)" if failed else "", count, text,
                      extra={"duration_ms": elapsed_ms, "sql": text,
                             "sql_params": count})


class SqliteDatabase(SlowQueryLog, peewee.SqliteDatabase):
    """SQLite whose file's folder is created on first connection, not when the app is built."""

    def _connect(self):
        if self.database != ":memory:":
            Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        return super()._connect()


class PostgresDatabase(SlowQueryLog, PooledPostgresqlDatabase):
    """A pool of psycopg2 connections, cooperative under gevent."""

    connect_timeout_s: float | None = CONNECT_TIMEOUT_S

    def _connect(self):
        if not _green_psycopg or self.connect_timeout_s is None:
            return super()._connect()
        # Green psycopg2 connects asynchronously and libpq ignores connect_timeout then, so a
        # host that drops packets would hang start-up forever; bound the wait ourselves.
        import gevent

        expired = psycopg2.OperationalError(
            f"no answer from the server within {self.connect_timeout_s:g}s")
        with gevent.Timeout(self.connect_timeout_s, expired):
            return super()._connect()


def make_database(url: str, pool_size: int, slow_query_ms: float = 0) -> peewee.Database:
    """The Database for `sqlite:///path` or `postgresql://…`, logging statements slower than
    `slow_query_ms` (0: none); raises ConfigError on a bad URL."""
    scheme, _, rest = url.partition("://")
    if scheme == "sqlite":
        database = _sqlite(url, rest)
    elif scheme in ("postgres", "postgresql"):
        database = _postgres("postgresql://" + rest, pool_size)
    else:
        raise ConfigError(f"DATABASE_URL={display_url(url)!r}: expected sqlite:///path or "
                          "postgresql://user@host/db")
    database.slow_query_ms = slow_query_ms
    return database


def _sqlite(url: str, rest: str) -> peewee.Database:
    # sqlite:///data/nexus.db is relative to the working directory, sqlite:////srv/nexus.db
    # absolute: everything after the third slash is the path.
    path = rest[1:] if rest.startswith("/") else ""
    if not path or path.endswith("/"):
        raise ConfigError(f"DATABASE_URL={url!r}: expected sqlite:///path/to/file.db")
    return SqliteDatabase(path, pragmas=SQLITE_PRAGMAS)


def _postgres(url: str, pool_size: int) -> peewee.Database:
    try:
        params = psycopg2.extensions.parse_dsn(url)
        seconds = float(params.get("connect_timeout", CONNECT_TIMEOUT_S))
    except psycopg2.ProgrammingError as err:  # the URL is malformed
        raise ConfigError(f"DATABASE_URL={display_url(url)!r}: {one_line(err)}") from None
    except ValueError:
        raise ConfigError(f"DATABASE_URL={display_url(url)!r}: connect_timeout must be a "
                          "number of seconds") from None
    _patch_psycopg_for_gevent()
    extra = {}
    if "connect_timeout" not in params:
        extra["connect_timeout"] = CONNECT_TIMEOUT_S
    if "application_name" not in params:
        extra["application_name"] = "claude-nexus"
    database = PostgresDatabase(url, max_connections=pool_size, stale_timeout=POOL_STALE_S,
                                timeout=POOL_WAIT_S, **extra)
    database.connect_timeout_s = seconds if seconds > 0 else None  # libpq: 0 waits forever
    return database


def _patch_psycopg_for_gevent() -> None:
    """Make psycopg2 wait on sockets through gevent, once, when gevent patched the process."""
    global _green_psycopg
    if _green_psycopg:
        return
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("socket"):
        return
    import psycogreen.gevent

    psycogreen.gevent.patch_psycopg()
    _green_psycopg = True


def is_postgres(db: peewee.Database | peewee.Proxy) -> bool:
    """True when the database (or the proxy's target) is PostgreSQL."""
    if isinstance(db, peewee.Proxy):
        db = db.obj
    return isinstance(db, peewee.PostgresqlDatabase)


def describe(db: peewee.Database) -> str:
    """The database for messages: `sqlite data/nexus.db` or the URL without its password."""
    if is_postgres(db):
        return display_url(db.database)
    return f"sqlite {db.database}"


def display_url(url: str) -> str:
    """The URL with its password (in the authority or as `?password=`) replaced by `***`."""
    url = re.sub(r"([?&]password=)[^&]*", r"\1***", url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return re.sub(r":[^:@/]*@", ":***@", url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def one_line(err: BaseException) -> str:
    """An exception's message on one line (driver messages span several)."""
    lines = [" ".join(line.split()) for line in str(err).splitlines()]
    return "; ".join(line for line in lines if line) or type(err).__name__


@contextmanager
def storage_errors(db: peewee.Database, doing: str = "use") -> Iterator[None]:
    """Turn database, driver and file-system errors into a one-line StorageError."""
    try:
        yield
    except (peewee.PeeweeException, psycopg2.Error, sqlite3.Error, OSError) as err:
        raise StorageError(f"cannot {doing} the database ({describe(db)}): {one_line(err)}") \
            from err
