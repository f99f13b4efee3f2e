"""The slow query log: statements slower than SLOW_QUERY_THRESHOLD_MS are logged on `nexus.sql`
with their duration, shortened SQL and parameter count — never the parameter values."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager

import pytest

from app.storage.database import SLOW_SQL_MAX_CHARS, is_postgres, make_database

PARAM_SECRET = "sk-ant-api03-param-value-never-logged-QRST"
PARAM_PLAIN = "plain-parameter-value-never-logged"


def _sleep_ms(ms):
    time.sleep(ms / 1000)
    return ms


def _sleep_then_fail(ms):
    time.sleep(ms / 1000)
    raise ValueError("refused")


@contextmanager
def database(url: str, slow_ms: float):
    db = make_database(url, 2, slow_ms)
    if not is_postgres(db):
        db.register_function(_sleep_ms, "nexus_sleep_ms", 1)
        db.register_function(_sleep_then_fail, "nexus_sleep_fail", 1)
    try:
        yield db
    finally:
        getattr(db, "close_all", db.close)()


def sleeping(db, ms: int, *values: str) -> tuple[str, list]:
    """A statement taking `ms` milliseconds, with `values` as further parameters."""
    marks = ", ".join(["%s" if is_postgres(db) else "?"] * len(values))
    if is_postgres(db):
        sql = f"SELECT pg_sleep(%s / 1000.0)\n      , {marks}"
    else:
        sql = f"SELECT nexus_sleep_ms(?)\n      , {marks}"
    return sql, [ms, *values]


@pytest.fixture
def slow_lines(caplog):
    caplog.set_level(logging.WARNING, logger="nexus.sql")

    def lines() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "nexus.sql"]
    return lines


def test_a_slow_statement_is_logged_without_its_values(database_url, slow_lines):
    with database(database_url, 100) as db:
        sql, params = sleeping(db, 200, PARAM_SECRET, PARAM_PLAIN)
        db.execute_sql(sql, params)
        db.execute_sql("SELECT 1")  # fast: not logged
    [record] = slow_lines()
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert message.startswith("slow query: ") and "3 parameter(s)" in message
    assert record.duration_ms >= 190 and f"{record.duration_ms:.0f} ms" in message
    expected = "SELECT pg_sleep(%s / 1000.0) , %s, %s" if is_postgres(db) \
        else "SELECT nexus_sleep_ms(?) , ?, ?"
    assert record.sql == expected and message.endswith(expected)  # whitespace collapsed
    assert record.sql_params == 3
    for value in (PARAM_SECRET, PARAM_PLAIN, "param-value", "never-logged"):
        assert value not in message and value not in str(vars(record))


def test_fast_statements_are_not_logged(database_url, slow_lines):
    with database(database_url, 100) as db:
        for _ in range(20):
            db.execute_sql("SELECT 1")
        sql, params = sleeping(db, 10, PARAM_PLAIN)
        db.execute_sql(sql, params)
    assert slow_lines() == []


def test_zero_turns_the_log_off(database_url, slow_lines):
    with database(database_url, 0) as db:
        sql, params = sleeping(db, 150, PARAM_PLAIN)
        db.execute_sql(sql, params)
    assert slow_lines() == []


def test_long_statements_are_shortened(database_url, slow_lines):
    with database(database_url, 50) as db:
        sql, params = sleeping(db, 100, *[f"value-{n}" for n in range(400)])
        db.execute_sql(sql, params)
    [record] = slow_lines()
    assert len(record.sql) < SLOW_SQL_MAX_CHARS + 40 and "chars)" in record.sql
    assert "401 parameter(s)" in record.getMessage()
    assert "value-1" not in record.getMessage()


def test_a_slow_failing_statement_is_logged_as_failed(database_url, slow_lines):
    with database(database_url, 100) as db:
        if is_postgres(db):
            sql = "SELECT 1 / (count(*) - 1) FROM (SELECT pg_sleep(%s / 1000.0)) AS s"
        else:
            sql = "SELECT nexus_sleep_fail(?)"
        with pytest.raises(Exception):  # noqa: B017 — the driver's own error type
            db.execute_sql(sql, [200])
    [record] = slow_lines()
    assert "(failed)" in record.getMessage()


def test_the_setting_reaches_the_database(tmp_path):
    from app import create_app

    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/n.db",
                      "CREDENTIALS_DIR": str(tmp_path / "credentials"),
                      "SPOOL_DIR": str(tmp_path / "spool"), "SLOW_QUERY_THRESHOLD_MS": "123"},
                     env_file=None)
    assert app.extensions["nexus.db"].slow_query_ms == 123
