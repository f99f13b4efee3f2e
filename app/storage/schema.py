"""Schema versions: peewee-migrate's Router over the repository's `migrations/` folder.

Migrations are `NNNN_name.py` files applied in name order and recorded in `migratehistory`.
`upgrade` and `downgrade` run in one transaction under a lock, so processes starting together
apply each migration once and a failed migration leaves the schema as it was.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

import peewee
from peewee_migrate import Router
from peewee_migrate.models import MIGRATE_TABLE, MigrateHistory

from app.auth.locks import advisory_key
from app.storage.database import StorageError, is_postgres

_LOCK = advisory_key("storage-schema")

# The library's Migrator logs every statement at INFO on this logger; the outcome is enough.
logging.getLogger("peewee_migrate.logs").setLevel(logging.WARNING)


def migrations_dir() -> Path:
    """The `migrations/` folder: beside `app/`, or inside a PyInstaller bundle when frozen."""
    bundle = getattr(sys, "_MEIPASS", None)
    root = Path(bundle) if bundle else Path(__file__).resolve().parents[2]
    return root / "migrations"


class _QuietLog(logging.LoggerAdapter):
    """peewee-migrate narrates every step at INFO and logs failures with a traceback; callers
    report the outcome in one line, so its own lines go to DEBUG, without traceback."""

    def log(self, level, msg, *args, **kwargs):
        kwargs.pop("exc_info", None)
        super().log(logging.DEBUG, msg, *args, **kwargs)


class _Router(Router):
    filemask = re.compile(r"\d{4}_[^.]+\.py$")  # the library's own mask wants three digits

    @cached_property
    def model(self) -> type[MigrateHistory]:
        # The library binds its single history class to whichever router used it last; a class
        # per router keeps two databases in one process (the tests) apart.
        router_db, router_table = self.database, self.migrate_table

        class History(MigrateHistory):
            class Meta:
                database = router_db
                table_name = router_table

        History.create_table(safe=True)
        return History


def _router(db: peewee.Database) -> _Router:
    folder = migrations_dir()
    if not folder.is_dir():
        raise StorageError(f"the migrations folder {folder} is missing")
    return _Router(db, migrate_dir=folder,
                   logger=_QuietLog(logging.getLogger("nexus.storage.migrations"), {}))


@contextmanager
def _exclusive(db: peewee.Database) -> Iterator[None]:
    """One transaction, and one migrating process at a time."""
    if is_postgres(db):
        with db.atomic():
            db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
            yield
    else:
        with db.atomic(lock_type="IMMEDIATE"):  # SQLite's write lock, taken up front
            yield


def upgrade(db: peewee.Database) -> list[str]:
    """Apply every pending migration; returns the names applied (none when up to date)."""
    with _exclusive(db):
        return _router(db).run()


def downgrade(db: peewee.Database, steps: int = 1) -> list[str]:
    """Roll back the last `steps` applied migrations, newest first; returns their names."""
    rolled_back: list[str] = []
    with _exclusive(db):
        if not db.table_exists(MIGRATE_TABLE):
            return rolled_back
        for _ in range(steps):
            router = _router(db)
            done = router.done
            if not done:
                break
            router.rollback()
            rolled_back.append(done[-1])
    return rolled_back


def status(db: peewee.Database) -> tuple[list[str], list[str]]:
    """The applied migrations, then the pending ones, each in order (writes nothing)."""
    router = _router(db)
    applied = router.done if db.table_exists(MIGRATE_TABLE) else []
    return applied, [name for name in router.todo if name not in applied]
