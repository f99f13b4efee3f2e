"""Monthly partitions of `requests` and `request_chunks` on PostgreSQL.

A partition `<table>_yYYYYmMM` holds the rows whose `received_at` (UTC) falls in that month;
`<table>_default` holds any row no monthly partition covers. Creating partitions ahead of time
keeps new rows out of the default; retention drops whole months at once. SQLite has no
partitions: both functions do nothing there. Both serialise on an advisory lock, so processes
starting together cannot race to create the same partition.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

import peewee

from app.auth.locks import advisory_key
from app.storage.database import is_postgres

PARTITIONED = ("requests", "request_chunks")
MONTHLY = re.compile(r"^(?:requests|request_chunks)_y(\d{4})m(\d{2})$")
_LOCK = advisory_key("storage-partitions")


def month_start(moment: datetime) -> datetime:
    """The first instant of `moment`'s month, as naive UTC (naive input is taken as UTC)."""
    moment = _naive_utc(moment)
    return datetime(moment.year, moment.month, 1)


def add_months(month: datetime, count: int) -> datetime:
    """The first day of the month `count` months after `month`'s."""
    index = month.year * 12 + month.month - 1 + count
    return datetime(index // 12, index % 12 + 1, 1)


def partition_name(table: str, month: datetime) -> str:
    """`requests_y2025m01` for January 2025."""
    return f"{table}_y{month.year:04d}m{month.month:02d}"


def partitions(db: peewee.Database) -> list[str]:
    """The names of every partition of both tables, the defaults included, sorted."""
    cursor = db.execute_sql(
        "SELECT child.relname FROM pg_inherits "
        "JOIN pg_class parent ON parent.oid = pg_inherits.inhparent "
        "JOIN pg_class child ON child.oid = pg_inherits.inhrelid "
        "WHERE parent.relname IN %s AND parent.relnamespace = current_schema()::regnamespace "
        "ORDER BY child.relname", (PARTITIONED,))
    return [name for (name,) in cursor.fetchall()]


def ensure_partitions(db: peewee.Database, months_ahead: int = 3,
                      now: datetime | None = None) -> list[str]:
    """Create the missing partitions of this month and the next `months_ahead`; returns them."""
    if not is_postgres(db):
        return []
    first = month_start(now or datetime.now(UTC))
    created = []
    with db.atomic():
        db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        existing = set(partitions(db))
        for table in PARTITIONED:
            for ahead in range(months_ahead + 1):
                start = add_months(first, ahead)
                name = partition_name(table, start)
                if name not in existing:
                    _create(db, table, name, start, f"{table}_default" in existing)
                    created.append(name)
    return created


def _create(db: peewee.Database, table: str, name: str, start: datetime,
            has_default: bool) -> None:
    end = add_months(start, 1)
    create = (f'CREATE TABLE "{name}" PARTITION OF "{table}" '
              f"FOR VALUES FROM ('{start:%Y-%m-%d}') TO ('{end:%Y-%m-%d}')")
    default = f"{table}_default"
    in_month = "received_at >= %s AND received_at < %s"
    if not has_default or db.execute_sql(
            f'SELECT 1 FROM "{default}" WHERE {in_month} LIMIT 1', (start, end)).fetchone() is None:
        db.execute_sql(create)
        return
    # PostgreSQL refuses a partition whose range matches rows already in the default one (a
    # clock far ahead, a server down for months): park those rows, create, then route them back.
    db.execute_sql(f'CREATE TEMPORARY TABLE nexus_moving (LIKE "{table}")')
    db.execute_sql(f'WITH moved AS (DELETE FROM "{default}" WHERE {in_month} RETURNING *) '
                   "INSERT INTO nexus_moving SELECT * FROM moved", (start, end))
    db.execute_sql(create)
    db.execute_sql(f'INSERT INTO "{table}" SELECT * FROM nexus_moving')
    db.execute_sql("DROP TABLE nexus_moving")


def drop_partitions_before(db: peewee.Database, cutoff: datetime) -> list[str]:
    """Drop the monthly partitions wholly before `cutoff` (both tables); returns their names.

    A month is dropped only when it ends at or before the cutoff, so no row at or after the
    cutoff is ever lost. Rows parked in the default partitions are left to row deletes.
    """
    if not is_postgres(db):
        return []
    limit = _naive_utc(cutoff)
    dropped = []
    with db.atomic():
        db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
        for name in partitions(db):
            match = MONTHLY.match(name)
            if match and add_months(datetime(int(match[1]), int(match[2]), 1), 1) <= limit:
                db.execute_sql(f'DROP TABLE "{name}"')
                dropped.append(name)
    return dropped


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is not None:
        return moment.astimezone(UTC).replace(tzinfo=None)
    return moment
