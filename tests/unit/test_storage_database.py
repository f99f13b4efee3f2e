"""Building the database from a URL, the custom fields and the partition calendar: no server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import peewee
import pytest

from app.config import ConfigError
from app.storage import schema
from app.storage.database import (
    PostgresDatabase,
    SqliteDatabase,
    display_url,
    is_postgres,
    make_database,
    one_line,
)
from app.storage.models import JSONTextField, Request, UTCDateTimeField
from app.storage.partitions import add_months, month_start, partition_name


def test_sqlite_paths_are_relative_unless_four_slashes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = make_database("sqlite:///data/nexus.db", 10)
    assert isinstance(relative, SqliteDatabase) and relative.database == "data/nexus.db"
    absolute = make_database(f"sqlite:///{tmp_path}/abs/nexus.db", 10)
    assert absolute.database == f"{tmp_path}/abs/nexus.db"
    assert not (tmp_path / "data").exists(), "building the database must not touch the disk"


def test_sqlite_connection_creates_the_folder_and_sets_the_pragmas(tmp_path):
    db = make_database(f"sqlite:///{tmp_path}/deep/er/nexus.db", 10)
    try:
        assert db.is_closed()
        db.connect()
        assert (tmp_path / "deep" / "er" / "nexus.db").is_file()
        pragmas = {name: db.execute_sql(f"PRAGMA {name}").fetchone()[0]
                   for name in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")}
        assert pragmas == {"journal_mode": "wal", "synchronous": 1, "busy_timeout": 5000,
                           "foreign_keys": 1}
    finally:
        db.close()


def test_postgres_database_is_pooled_and_lazy():
    db = make_database("postgres://nexus:secret@db.example:5433/nexus", 7)
    assert isinstance(db, PostgresDatabase) and is_postgres(db)
    assert db.database == "postgresql://nexus:secret@db.example:5433/nexus"
    assert db._max_connections == 7 and db._stale_timeout and db._wait_timeout
    assert db.connect_params == {"connect_timeout": 10, "application_name": "claude-nexus"}
    assert db.is_closed()
    own = make_database("postgresql://h/db?connect_timeout=3&application_name=mine", 1)
    assert own.connect_params == {}, "the URL's own parameters win"


def test_is_postgres_sees_through_a_proxy(tmp_path):
    proxy = peewee.DatabaseProxy()
    proxy.initialize(make_database("postgresql://h/db", 1))
    assert is_postgres(proxy)
    assert not is_postgres(make_database(f"sqlite:///{tmp_path}/x.db", 1))


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///data/",
                                 "postgresql://nexus:secret@h/db?bogus=1", "mysql://h/db"])
def test_bad_urls_are_config_errors_without_the_password(url):
    with pytest.raises(ConfigError) as caught:
        make_database(url, 1)
    message = str(caught.value)
    assert message.startswith("DATABASE_URL=") and "\n" not in message
    assert "secret" not in message


def test_display_url_hides_only_the_password():
    assert display_url("postgresql://u:p%40ss@h:5432/db?sslmode=require") == \
        "postgresql://u:***@h:5432/db?sslmode=require"
    assert display_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert display_url("postgresql://h/db?user=u&password=pw&sslmode=require") == \
        "postgresql://h/db?user=u&password=***&sslmode=require"


def test_one_line_joins_driver_messages():
    err = Exception('connection to server at "h" failed: refused\n\tIs the server running?\n')
    assert one_line(err) == 'connection to server at "h" failed: refused; Is the server running?'
    assert one_line(KeyError()) == "KeyError"


def test_utc_datetime_field_stores_naive_utc_and_reads_aware_utc():
    field = UTCDateTimeField()
    paris = timezone(timedelta(hours=2))
    stored = field.db_value(datetime(2025, 6, 1, 14, 30, 0, 123456, tzinfo=paris))
    assert stored == datetime(2025, 6, 1, 12, 30, 0, 123456) and stored.tzinfo is None
    assert field.python_value("2025-06-01 12:30:00.123456") == \
        datetime(2025, 6, 1, 12, 30, 0, 123456, tzinfo=UTC)
    assert field.python_value(datetime(2025, 6, 1)) == datetime(2025, 6, 1, tzinfo=UTC)
    assert field.python_value(None) is None


def test_json_text_field_is_compact_and_keeps_unicode():
    field = JSONTextField()
    assert field.db_value([["content-type", "application/json"], ["x", "é"]]) == \
        '[["content-type","application/json"],["x","é"]]'
    assert field.python_value('{"a":[1,2]}') == {"a": [1, 2]}
    assert field.db_value(None) is None and field.python_value(None) is None


def test_cost_is_rounded_to_six_places():
    assert Request.cost_usd.db_value(Decimal("0.12345678")) == Decimal("0.123457")


def test_partition_calendar():
    assert month_start(datetime(2025, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))) == \
        datetime(2024, 12, 1)
    assert add_months(datetime(2024, 11, 1), 3) == datetime(2025, 2, 1)
    assert add_months(datetime(2025, 2, 1), -14) == datetime(2023, 12, 1)
    assert partition_name("request_chunks", datetime(2025, 3, 1)) == "request_chunks_y2025m03"


def test_migrations_folder_is_found_beside_the_app_or_in_a_bundle(tmp_path, monkeypatch):
    assert (schema.migrations_dir() / "0001_initial.py").is_file()
    monkeypatch.setattr("sys._MEIPASS", str(tmp_path), raising=False)
    assert schema.migrations_dir() == tmp_path / "migrations"



def test_the_urls_connect_timeout_also_bounds_green_connections():
    assert make_database("postgresql://h/db", 1).connect_timeout_s == 10
    assert make_database("postgresql://h/db?connect_timeout=3", 1).connect_timeout_s == 3
    assert make_database("postgresql://h/db?connect_timeout=0", 1).connect_timeout_s is None
    with pytest.raises(ConfigError):
        make_database("postgresql://h/db?connect_timeout=soon", 1)
