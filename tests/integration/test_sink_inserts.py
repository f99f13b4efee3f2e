"""The writer's multi-row INSERTs: every row lands, in statements whose shapes repeat on SQLite
(prepared once, a bounded statement cache) and as few as the parameter limit allows on
PostgreSQL (fewer round trips)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.storage import schema
from app.storage.database import is_postgres
from app.storage.models import Request, bind
from app.storage.partitions import ensure_partitions
from app.storage.sink import ROW_GROUPS, make_sink
from tests.databases import opened
from tests.factories import request_row

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)


@pytest.fixture
def db(database_url):
    with opened(database_url) as database:
        schema.upgrade(database)
        ensure_partitions(database)
        bind(database)
        yield database


def request_inserts(db, count: int, start: datetime) -> list[str]:
    """Write `count` requests as one batch; the SQL of the INSERTs into `requests`."""
    sink = make_sink(db)
    rows = [request_row(received_at=start + timedelta(milliseconds=n), path="/v1/models")
            for n in range(count)]
    batch = sink.statements([(row, []) for row in rows])
    seen: list[str] = []

    def query(sql, params):
        if sql.startswith('INSERT INTO "requests"'):
            seen.append(sql)
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
