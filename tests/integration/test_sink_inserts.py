"""The writer's multi-row INSERTs: every row lands, in statements whose shapes repeat on SQLite
(prepared once, a bounded statement cache) and as few as the parameter limit allows on
PostgreSQL (fewer round trips), each holding a bounded amount of text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.storage.database import is_postgres
from app.storage.inserts import PG_STATEMENT_BYTES, ROW_GROUPS
from app.storage.models import Request
from app.storage.sink import make_sink
from tests.databases import migrated
from tests.factories import request_row

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


@pytest.fixture
def db(database_url):
    with migrated(database_url) as database:
        yield database


def request_inserts(db, count: int, start: datetime, body: str | None = None,
                    texts: list[int] | None = None) -> list[str]:
    """Write `count` requests as one batch; the SQL of the INSERTs into `requests` (and the
    characters of text each carried, into `texts`)."""
    sink = make_sink(db)
    rows = [request_row(received_at=start + timedelta(milliseconds=n), path="/v1/models",
                        **({"request_body": body} if body else {}))
            for n in range(count)]
    batch = sink.statements([(row, []) for row in rows])
    seen: list[str] = []

    def query(sql, params):
        if sql.startswith('INSERT INTO "requests"'):
            seen.append(sql)
            if texts is not None:
                texts.append(sum(len(value) for value in params if isinstance(value, str)))
        return db.execute_sql(sql, params).fetchall()

    with db.atomic():
        sink.write(batch, query, lambda sql, params: db.execute_sql(sql, params))
    return seen


def test_batches_of_every_size_land_whole_in_a_few_statement_shapes(db):
    shapes: set[str] = set()
    written = 0
    for count in range(1, 80):
        sql = request_inserts(db, count, T0 + timedelta(seconds=count))
        written += count
        shapes.update(sql)
        if is_postgres(db):
            assert len(sql) == 1  # one round trip per batch
    assert Request.select().count() == written
    if not is_postgres(db):
        assert len(shapes) <= len(ROW_GROUPS), len(shapes)


def test_large_bodies_go_to_postgresql_in_statements_of_bounded_text(db):
    # psycopg2 quotes each value into the statement in the hub's thread: a batch of Claude Code
    # bodies goes in several statements, the streams' turn coming between them.
    body = "x" * 100_000
    texts: list[int] = []
    statements = request_inserts(db, 12, T0, body=body, texts=texts)
    assert Request.select().where(Request.request_body == body).count() == 12
    if is_postgres(db):
        assert len(statements) == 6 and all(text <= PG_STATEMENT_BYTES for text in texts), texts
    else:  # SQLite binds values without quoting them into the SQL: its fixed row groups
        assert len(statements) == 3 and len(set(statements)) == 1  # 4 + 4 + 4 rows, one shape
