"""Where the writer's batches go: one transaction of multi-row inserts per batch.

`statements` prepares a batch (pure CPU, before the transaction) and `write` runs it as
multi-row `INSERT … ON CONFLICT DO NOTHING` statements, split to stay under both engines' limit
of bound parameters: a replayed row already in the table (the
same primary key) is skipped, never doubled. Not peewee's `on_conflict_ignore`: on SQLite that
is `INSERT OR IGNORE`, which also drops a row breaking NOT NULL without a word, where a refused
row must be seen (and set aside). The SQL is written here rather than by `insert_many`, whose
query compiler costs about 20 µs a row — some 1 ms of CPU per streamed exchange with its chunks,
the writer's largest cost by far; every value still goes through its model field's `db_value`.

Each request INSERT returns the ids it inserted, and the hourly usage roll-ups (`usage_hourly`,
`usage_tool_hourly`) get the shares of exactly those rows, by upserts in the same transaction:
a request is counted once however often it is replayed, and the roll-ups always agree with the
rows. Conversation linking (app/storage/linking.py) runs in the same transaction, before the
request INSERT, for the Messages requests not stored yet, in the order they were received: a
few reads for the whole batch, then each request decided in memory seeing every earlier one,
those of its own batch included, and written once with its link. `query` reads on the
writer's connection (the alert watch, after a commit).

SQLite: the sink opens a connection of its own, used only by the writer's native thread
(under gevent a sqlite3 call blocks every greenlet for as long as it runs, so it must not run on
the hub). Nothing but sqlite3 runs inside its transaction: no logging, no gevent, no yield.
PostgreSQL: the pool's connections, cooperative under gevent (psycogreen). Each transaction
bounds its own waits, so that a lock held elsewhere becomes a failed batch (then spooled) rather
than a writer stuck behind it.
"""

from __future__ import annotations

import logging
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import peewee

from app.conversations.linker import Facts, facts_of
from app.storage import inserts
from app.storage.database import SQLITE_PRAGMAS, is_postgres
from app.storage.inserts import Statement
from app.storage.linking import BatchLinker, link_columns, link_fields
from app.storage.models import (
    RateLimitSample,
    Request,
    RequestChunk,
    UsageHourly,
    UsageToolHourly,
)
from app.storage.rows import Item, sample_of
from app.usage.rollup import COLUMNS, Contribution, add_up, contribution

log = logging.getLogger(__name__)

SQLITE_BUSY_S = 5          # waiting for another process's write lock, then the batch is spooled
PG_LOCK_WAIT_MS = 5_000    # the same for a PostgreSQL lock
PG_STATEMENT_MS = 30_000   # any one statement
STATEMENT_CACHE = 64       # prepared statements the SQLite connection keeps

# Errors that blame the rows, not the database: the batch is retried row by row to find them.
REFUSED = (peewee.DataError, peewee.IntegrityError, sqlite3.DataError, sqlite3.IntegrityError,
           sqlite3.InterfaceError, OverflowError, TypeError, ValueError)

Query = Callable[[str, list[Any]], list[tuple]]   # SQL and parameters -> rows
Execute = Callable[[str, list[Any]], Any]

ROLLUP_KEY = ("hour", "domain", "account_id", "model")
TOOL_KEY = ("hour", "domain", "account_id", "tool_name")


def refused(err: BaseException) -> bool:
    """True when the database refused these rows (bad data), not when it is unavailable."""
    return isinstance(err, REFUSED)


@dataclass
class Batch:
    """A batch ready to write: its request rows (inserted once their links are known), the
    SQL of the rest of its rows, each request's roll-up share (added once its row is known to
    be new) and what conversation linking needs of its Messages requests, oldest first."""

    requests: list[dict[str, Any]]
    others: list[Statement]
    usage: dict[str, Contribution]
    facts: list[Facts] = field(default_factory=list)
    # The request rows' values as stored, in `inserts.columns(Request)` order, the link
    # columns still empty: converted with the rest of the batch outside the transaction, where the
    # PostgreSQL writer (a greenlet) would hold up every stream for a batch's worth of work.
    request_values: list[list[Any]] = field(default_factory=list)


@dataclass
class Committed:
    """What a committed batch changed: the ids of the request rows it inserted (a replayed
    row already stored is not among them)."""

    inserted: set[str] = field(default_factory=set)
    unlinked: list[tuple[str, Exception]] = field(default_factory=list)  # linking's own bugs


class _Sink(ABC):
    native = True  # under gevent, `execute` runs in the writer's native thread
    _sizes: inserts.Sizes  # rows per INSERT, per engine (app/storage/inserts.py)

    def __init__(self, db: peewee.Database):
        self.db = db

    def statements(self, items: list[Item]) -> Batch:
        """The inserts of a batch: its requests, their chunks, then their rate-limit samples
        (pure CPU: any thread). A replayed sample is skipped by its unique `request_id`."""
        requests = [request for request, _ in items]
        chunks = [chunk for _, rows in items for chunk in rows]
        samples = [sample for request in requests if (sample := sample_of(request))]
        facts = linkable(requests)
        by_id = {f.id: f for f in facts}
        # The hashes are the body's: known now. The links are filled in the transaction.
        rows = [{**request, **link_fields(by_id[request["id"]])} if request["id"] in by_id
                else request for request in requests]
        return Batch(rows,
                     self._inserts(RequestChunk, chunks) + self._inserts(RateLimitSample, samples),
                     {request["id"]: contribution(request) for request in requests}, facts,
                     inserts.db_values(inserts.columns(Request), rows))

    def write(self, batch: Batch, query: Query, execute: Execute) -> Committed:
        """The batch's statements, inside the caller's transaction: link the requests not
        stored yet, insert every row, add the new requests to the roll-ups and to their
        conversations."""
        ids = [row["id"] for row in batch.requests]
        stored: set[str] = set()
        for start in range(0, len(ids), inserts.MAX_PARAMS):
            part = ids[start:start + inserts.MAX_PARAMS]
            stored.update(row[0] for row in query(*self._compile(
                Request.select(Request.id).where(Request.id.in_(part)))))
        linker = BatchLinker(self.db, query, [f for f in batch.facts if f.id not in stored])
        links, unlinked = linker.link_all()
        fields = inserts.columns(Request)
        values = batch.request_values or inserts.db_values(fields, batch.requests)
        at = {field.name: index for index, field in enumerate(fields)}
        for row, row_values in zip(batch.requests, values, strict=True):
            if row["id"] in links:  # only the few link columns are converted here
                for name, value in link_columns(links[row["id"]]).items():
                    row_values[at[name]] = fields[at[name]].db_value(value)
        committed = Committed(unlinked=unlinked)
        for sql, params in self._values(Request, fields, values,
                                        ' ON CONFLICT DO NOTHING RETURNING "id"'):
            committed.inserted.update(row[0] for row in query(sql, params))
        for sql, params in batch.others + self.rollups(batch, committed.inserted):
            execute(sql, params)
        linker.write(execute, committed.inserted)
        return committed

    def _compile(self, statement) -> Statement:
        sql, params = self.db.get_sql_context().sql(statement).query()
        return sql, list(params)

    def _inserts(self, model: type[peewee.Model], rows: list[dict]) -> list[Statement]:
        fields = inserts.columns(model)
        return self._values(model, fields, inserts.db_values(fields, rows),
                            " ON CONFLICT DO NOTHING")

    def _values(self, model: type[peewee.Model], fields: list[peewee.Field],
                rows: list[list[Any]], tail: str) -> list[Statement]:
        return inserts.statements(model, fields, rows, self.db.param, tail, self._sizes)

    def rollups(self, batch: Batch, inserted: set[str]) -> list[Statement]:
        """Upserts adding the new requests' shares to their hours (no-op for none)."""
        hours, tools = add_up(part for request_id, part in batch.usage.items()
                              if request_id in inserted)
        hourly_fields = [UsageHourly._meta.fields[name] for name in ROLLUP_KEY + COLUMNS]
        tool_fields = [UsageToolHourly._meta.fields[name] for name in TOOL_KEY + ("call_count",)]
        return (
            self._values(UsageHourly, hourly_fields,
                         [[UsageHourly.hour.db_value(key[0]), *key[1:], *sums]
                          for key, sums in hours.items()],
                         inserts.accumulate("usage_hourly", ROLLUP_KEY, COLUMNS))
            + self._values(UsageToolHourly, tool_fields,
                           [[UsageToolHourly.hour.db_value(key[0]), *key[1:], count]
                            for key, count in tools.items()],
                           inserts.accumulate("usage_tool_hourly", TOOL_KEY, ("call_count",))))

    @abstractmethod
    def execute(self, batch: Batch) -> Committed:
        """Run a batch in one transaction."""

    @abstractmethod
    def query(self, sql: str, params: list[Any]) -> list[tuple]:
        """The rows of one read, on the writer's connection (outside any transaction)."""

    def close(self) -> None:  # noqa: B027 — the PostgreSQL sink borrows from the pool: no-op
        """Let go of the sink's connection (it reconnects on the next batch)."""


def linkable(requests: list[dict]) -> list[Facts]:
    """What conversation linking needs of the batch's Messages requests, in the order they
    were received (pure CPU, before the transaction); a request whose body defeats it stays
    unlinked rather than failing the batch."""
    out = []
    for request in requests:
        try:
            facts = facts_of(request)
        except Exception as err:
            log.error("conversations: cannot read request %s for linking: %s",
                      request.get("id"), err)
            continue
        if facts is not None:
            out.append(facts)
    return sorted(out, key=lambda facts: (facts.received_at, facts.id))


class SqliteSink(_Sink):
    """A private sqlite3 connection, opened on first use in the thread that writes; its
    INSERTs take a few fixed row counts, prepared once (`inserts.sqlite_sizes`)."""

    _sizes = staticmethod(inserts.sqlite_sizes)

    def __init__(self, db: peewee.Database):
        super().__init__(db)
        self._conn: sqlite3.Connection | None = None

    def execute(self, batch: Batch) -> Committed:
        """The batch in one transaction; raises sqlite3 errors (nothing committed)."""
        conn = self._conn or self._connect()
        try:
            # IMMEDIATE takes the write lock up front: waiting for it (busy_timeout) happens
            # before any work, and the transaction never fails half-way for want of it.
            conn.execute("BEGIN IMMEDIATE")
            try:
                committed = self.write(
                    batch, lambda sql, params: conn.execute(sql, params).fetchall(),
                    conn.execute)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as err:
            if not refused(err):
                self.close()  # locked, I/O error, file gone: start afresh next time
            raise
        return committed

    def query(self, sql: str, params: list[Any]) -> list[tuple]:
        conn = self._conn or self._connect()
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error:
            self.close()
            raise

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.db.database, timeout=SQLITE_BUSY_S, isolation_level=None,
                               check_same_thread=False,  # one thread at a time, not always one
                               cached_statements=STATEMENT_CACHE)
        try:
            for name, value in {**SQLITE_PRAGMAS, "busy_timeout": SQLITE_BUSY_S * 1000}.items():
                conn.execute(f"PRAGMA {name} = {value}")
        except sqlite3.Error:
            conn.close()
            raise
        self._conn = conn
        return conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:
                pass  # closing a broken connection: nothing left to release


class PostgresSink(_Sink):
    """The app's connection pool; cooperative, so it runs in a greenlet.

    Its transactions compress the bodies they store with lz4 where the server has it
    (PostgreSQL 14 and later, built with lz4, as the Debian and Docker images are): a batch
    holds megabytes of 20-80 KB bodies, and the default pglz compresses several times slower
    (about 1 ms more per Claude Code exchange, a third of the insert's time). Values already
    stored keep their method; reading either is transparent.
    """

    native = False
    _sizes = staticmethod(inserts.postgres_sizes)

    def __init__(self, db: peewee.Database):
        super().__init__(db)
        self._lz4: bool | None = None  # the server offers lz4 TOAST compression (asked once)

    def execute(self, batch: Batch) -> Committed:
        """The batch in one transaction; raises peewee errors (nothing committed)."""
        db = self.db
        try:
            db.connect(reuse_if_open=True)
            with db.atomic():
                db.execute_sql(f"SET LOCAL lock_timeout = {PG_LOCK_WAIT_MS}")
                db.execute_sql(f"SET LOCAL statement_timeout = {PG_STATEMENT_MS}")
                if self._lz4 is None:
                    self._lz4 = bool(db.execute_sql(
                        "SELECT count(*) FROM pg_settings WHERE name = "
                        "'default_toast_compression' AND 'lz4' = ANY(enumvals)").fetchone()[0])
                if self._lz4:
                    db.execute_sql("SET LOCAL default_toast_compression = 'lz4'")
                committed = self.write(
                    batch, lambda sql, params: db.execute_sql(sql, params).fetchall(),
                    db.execute_sql)
        except Exception as err:
            if refused(err):
                db.close()  # rolled back; the connection is fine
            else:
                self._discard()
            raise
        db.close()  # back to the pool
        return committed

    def query(self, sql: str, params: list[Any]) -> list[tuple]:
        db = self.db
        try:
            db.connect(reuse_if_open=True)
            with db.atomic():
                db.execute_sql(f"SET LOCAL statement_timeout = {PG_STATEMENT_MS}")
                return db.execute_sql(sql, params).fetchall()
        except Exception:
            self._discard()
            raise
        finally:
            if not db.is_closed():
                db.close()

    def _discard(self) -> None:
        """Drop the failed connection and the idle ones: after an outage they are dead too."""
        try:
            self.db.manual_close()
        except Exception as err:
            log.debug("discarding a failed database connection: %s", err)
        self.db.close_idle()


def make_sink(db: peewee.Database) -> _Sink:
    """The sink for the process's database."""
    return PostgresSink(db) if is_postgres(db) else SqliteSink(db)
