"""Storage: the database from DATABASE_URL, its schema migrations, the table models, and the
batch writer that records every exchange (with its spool).

Nothing here connects or starts when the app is built: the server calls `upgrade_on_start` and
starts the writer before serving, and the `db` commands connect when run. An app that is never
served (the CLI) records nothing.
"""

from __future__ import annotations

import logging

from flask import Flask

from app.config import ConfigError
from app.storage import commands, schema
from app.storage.alerting import AlertWatch
from app.storage.database import describe, make_database, storage_errors
from app.storage.models import bind
from app.storage.partitions import ensure_partitions
from app.storage.retention import RetentionKeeper
from app.storage.writer import BatchWriter
from app.usage.pricing import load_prices

log = logging.getLogger(__name__)


def init_app(app: Flask) -> None:
    """Build the database, bind the models to it, create the writer (not started) with the
    price table and the alert watch, and register the `db` commands. Raises ConfigError for a
    price file that cannot be used."""
    settings = app.config["NEXUS_SETTINGS"]
    db = make_database(settings.database_url, settings.database_pool_size,
                       settings.slow_query_threshold_ms)
    bind(db)
    app.extensions["nexus.db"] = db
    try:
        prices = load_prices(settings.prices_file)
    except (OSError, ValueError) as err:
        raise ConfigError(f"PRICES_FILE: {err}") from None
    watch = AlertWatch(db, settings.alert_window_token_limit, settings.alert_thresholds,
                       clock=lambda: app.extensions["nexus.clock"]())
    writer = BatchWriter(db, settings.spool_dir, batch_size=settings.storage_batch_size,
                         interval_ms=settings.storage_batch_interval_ms,
                         queue_max=settings.storage_queue_max,
                         keep_chunks=settings.store_streaming_chunks, prices=prices,
                         watch=watch)
    writer.subscribe(app.extensions["nexus.events"])
    app.extensions["nexus.writer"] = writer
    app.extensions["nexus.retention"] = RetentionKeeper(db, settings.retention_days)
    app.cli.add_command(commands.db)
    app.cli.add_command(commands.retention)
    app.cli.add_command(commands.conversations)


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


def start(app: Flask) -> None:
    """Start the background owners of a serving process: the writer and the daily retention."""
    app.extensions["nexus.writer"].start()
    app.extensions["nexus.retention"].start()


def close(app: Flask) -> None:
    """Drain the writer (or spool what it cannot write in time), then close the process's
    database connections (the pool's too), at shutdown."""
    app.extensions["nexus.retention"].stop()
    app.extensions["nexus.writer"].stop()
    db = app.extensions["nexus.db"]
    if hasattr(db, "close_all"):  # a connection pool (PostgreSQL)
        db.close_all()
    elif not db.is_closed():
        db.close()
