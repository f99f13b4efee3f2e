"""Databases for tests of both engines: a temp SQLite file, a fresh PostgreSQL database."""

from __future__ import annotations

import uuid
from contextlib import contextmanager

import psycopg2

from app.storage.database import make_database


@contextmanager
def fresh_postgres(dsn: str):
    """A new, empty database on the suite's server, dropped afterwards."""
    name = "nexus_" + uuid.uuid4().hex[:12]
    admin = psycopg2.connect(dsn)
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        url = dsn.rsplit("/", 1)[0] + "/" + name
        yield url
        from tests import secret_scan  # (the plugin: imported once pytest has loaded it)

        secret_scan.scan_postgres(url)  # the suite's secret scan reads it before it is gone
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


@contextmanager
def opened(url: str):
    """The peewee database for a URL, closed (pool included) afterwards."""
    db = make_database(url, 4)
    try:
        yield db
    finally:
        getattr(db, "close_all", db.close)()


@contextmanager
def migrated(url: str):
    """`opened`, with the schema upgraded, this month's partitions made, and the models bound."""
    from app.storage import schema
    from app.storage.models import bind
    from app.storage.partitions import ensure_partitions

    with opened(url) as db:
        schema.upgrade(db)
        ensure_partitions(db)
        bind(db)
        yield db


def engine_url(engine: str, tmp_path, request):
    """Context manager giving an empty database URL of `engine` ("sqlite" or "postgresql")."""
    if engine == "sqlite":
        return _sqlite(tmp_path)
    return fresh_postgres(request.getfixturevalue("postgres_dsn"))


@contextmanager
def _sqlite(tmp_path):
    yield f"sqlite:///{tmp_path}/data/nexus.db"
