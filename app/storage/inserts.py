"""Multi-row INSERT statements of the batch writer: which columns, the values as stored, and
how many rows each statement takes on each engine.

Pure: SQL text and parameters, no connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import peewee

Statement = tuple[str, list[Any]]
Sizes = Callable[[list[list[Any]], int], list[int]]  # (rows, most per statement) -> sizes

MAX_PARAMS = 30_000  # SQLite allows 32766 bound parameters per statement, PostgreSQL 65535
ROW_GROUPS = (256, 64, 16, 4, 1)  # rows per SQLite INSERT, largest first (see sqlite_sizes)
PG_STATEMENT_BYTES = 256 << 10    # text per PostgreSQL INSERT, about (see postgres_sizes)

_NOTHING = object()


def columns(model: type[peewee.Model]) -> list[peewee.Field]:
    """The columns an insert names, in a fixed order (the database numbers AutoFields)."""
    return [field for field in model._meta.sorted_fields
            if not isinstance(field, peewee.AutoField)]


def db_values(fields: list[peewee.Field], rows: list[dict]) -> list[list[Any]]:
    """Each row's values in `fields` order, as their fields store them. A value that is the
    very object of the row before (the chunk rows of one exchange share its id and time) is
    converted once: a time's conversion costs microseconds, and a stream has hundreds."""
    converters = [field.db_value for field in fields]
    last: list[Any] = [_NOTHING] * len(fields)
    stored: list[Any] = [None] * len(fields)
    out = []
    for row in rows:
        values = []
        for i, column in enumerate(fields):
            # A row spooled by an earlier version lacks the columns added since: defaults.
            value = row[column.name] if column.name in row else _default(column)
            if value is not last[i]:
                last[i], stored[i] = value, converters[i](value)
            values.append(stored[i])
        out.append(values)
    return out


def statements(model: type[peewee.Model], fields: list[peewee.Field], rows: list[list[Any]],
               param: str, tail: str, sizes: Sizes) -> list[Statement]:
    """Multi-row INSERTs of `rows` (values in `fields` order), `sizes` deciding how many rows
    each takes within the parameter limit; `param` is the engine's placeholder."""
    head = (f'INSERT INTO "{model._meta.table_name}" ('
            + ", ".join(f'"{field.column_name}"' for field in fields) + ") VALUES ")
    values = "(" + ", ".join([param] * len(fields)) + ")"
    out, start = [], 0
    for size in sizes(rows, max(1, MAX_PARAMS // len(fields))):
        part = rows[start:start + size]
        out.append((head + ", ".join([values] * size) + tail,
                    [value for row in part for value in row]))
        start += size
    return out


def sqlite_sizes(rows: list[list[Any]], most: int) -> list[int]:
    """SQLite: a few fixed row counts (ROW_GROUPS). sqlite3 keeps the statements it prepared,
    and one per batch size would fill that cache with a statement per size seen, megabytes
    each for a large batch of requests (and prepare each anew); a few sizes are prepared once
    and reused by every batch."""
    count = len(rows)
    sizes: list[int] = []
    for group in ROW_GROUPS:
        group = min(group, most)
        sizes += [group] * (count // group)
        count %= group
    return sizes


def postgres_sizes(rows: list[list[Any]], most: int) -> list[int]:
    """PostgreSQL: as many rows as the parameter limit allows (fewer round trips), and at most
    PG_STATEMENT_BYTES of text. psycopg2 quotes every value into the statement in the hub's
    thread, holding the GIL, and a batch of Claude Code bodies is megabytes — milliseconds
    during which no stream moves. Between two statements the writer waits on the server, and
    the streams have their turn."""
    sizes, size, text = [], 0, 0
    for row in rows:
        length = sum(len(value) for value in row if isinstance(value, str))
        if size and (size == most or text + length > PG_STATEMENT_BYTES):
            sizes.append(size)
            size, text = 0, 0
        size += 1
        text += length
    if size:
        sizes.append(size)
    return sizes


def accumulate(table: str, key: tuple[str, ...], sums: tuple[str, ...]) -> str:
    """The ON CONFLICT clause adding an upsert's `sums` to the row of the same `key`."""
    sets = ", ".join(f'"{name}" = "{table}"."{name}" + excluded."{name}"' for name in sums)
    return f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {sets}"


def _default(field: peewee.Field) -> Any:
    return field.default() if callable(field.default) else field.default
