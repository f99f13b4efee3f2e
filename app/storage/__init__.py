"""Storage: the database from DATABASE_URL, its schema migrations and the table models.

Nothing here connects when the app is built: the server calls `upgrade_on_start` before
serving, and the `db` commands connect when run.
"""

from __future__ import annotations

import logging

from flask import Flask

from app.storage import commands, schema
from app.storage.database import describe, make_database, storage_errors
from app.storage.models import bind
from app.storage.partitions import ensure_partitions

log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    """Build the database, bind the models to it and register the `db` commands."""
    settings = app.config["NEXUS_SETTINGS"]
    db = make_database(settings.database_url, settings.database_pool_size)
    bind(db)
    app.extensions["nexus.db"] = db
    app.cli.add_command(commands.db)


def upgrade_on_start(app: Flask) -> None:
    """Apply pending migrations and create the coming partitions; raises StorageError."""
    db = app.extensions["nexus.db"]
    with storage_errors(db, "upgrade"), db.connection_context():
        applied = schema.upgrade(db)
        created = ensure_partitions(db)
    if applied:
        log.info("storage: %s, applied %s", describe(db), ", ".join(applied))
    else:
        log.info("storage: %s, schema up to date", describe(db))
    if created:
        log.info("storage: created partitions %s", ", ".join(created))


def close(app: Flask) -> None:
    """Close the process's database connections (the pool's too), at shutdown."""
    db = app.extensions["nexus.db"]
    if hasattr(db, "close_all"):  # a connection pool (PostgreSQL)
        db.close_all()
    elif not db.is_closed():
        db.close()
