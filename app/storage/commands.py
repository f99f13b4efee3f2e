"""`flask --app wsgi db …` (apply, roll back and list the schema migrations), `retention purge`
and `conversations relink`.

Every failure (database unreachable, bad URL, failed migration) is one line and exit 1.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import click
import peewee
from flask import current_app

from app.commandline import Group
from app.storage import schema
from app.storage.database import StorageError, describe, storage_errors
from app.storage.models import Request
from app.storage.partitions import ensure_partitions
from app.storage.relink import relink
from app.storage.retention import count_older, cutoff_for, purge

WAIT_STEP_S = 2

db = Group("db", help="The database schema (DATABASE_URL): apply, roll back and list "
                            "migrations.")


def _database() -> peewee.Database:
    return current_app.extensions["nexus.db"]


@contextmanager
def _reported(database: peewee.Database, doing: str) -> Iterator[None]:
    """One connection for the command; any storage failure becomes click's one-line error."""
    try:
        with storage_errors(database, doing), database.connection_context():
            yield
    except StorageError as err:
        raise click.ClickException(str(err)) from None


@db.command("upgrade")
@click.option("--wait", type=click.IntRange(min=0), default=0, metavar="SECONDS",
              help="Retry connecting for up to this long first (a database starting beside "
                   "the proxy, as in docker compose).")
def upgrade(wait: int) -> None:
    """Apply pending migrations; on PostgreSQL also create the coming months' partitions."""
    database = _database()
    if wait:
        _wait_for(database, wait)
    with _reported(database, "upgrade"):
        applied = schema.upgrade(database)
        created = ensure_partitions(database)
        current = schema.status(database)[0]
    if applied:
        click.echo(f"Applied {', '.join(applied)} to {describe(database)}.")
    else:
        click.echo(f"{describe(database)} is up to date "
                   f"({current[-1] if current else 'no migrations'}).")
    if created:
        click.echo(f"Created partitions {', '.join(created)}.")


def _wait_for(database: peewee.Database, seconds: int) -> None:
    """Until a connection opens or `seconds` pass; each failure is one line on stderr."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with storage_errors(database, "connect to"):
                database.connect(reuse_if_open=True)
                database.close()
            return
        except StorageError as err:
            if time.monotonic() + WAIT_STEP_S > deadline:
                raise click.ClickException(str(err)) from None
            click.echo(f"Waiting for the database: {err}", err=True)
            time.sleep(WAIT_STEP_S)


@db.command("downgrade")
@click.option("--steps", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many of the latest migrations to roll back.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def downgrade(steps: int, yes: bool) -> None:
    """Roll back the latest migrations; the tables they created are dropped with their rows."""
    database = _database()
    if not yes:
        click.confirm(f"Roll back {steps} migration(s) of {describe(database)}, dropping the "
                      "tables they created and every row in them?", abort=True)
    with _reported(database, "downgrade"):
        rolled_back = schema.downgrade(database, steps)
    if rolled_back:
        click.echo(f"Rolled back {', '.join(rolled_back)} on {describe(database)}.")
    else:
        click.echo(f"Nothing to roll back on {describe(database)}.")


@db.command("status")
def status() -> None:
    """List the applied and the pending migrations."""
    database = _database()
    with _reported(database, "read"):
        applied, pending = schema.status(database)
    click.echo(f"Database: {describe(database)}")
    click.echo(f"Applied: {', '.join(applied) or 'none'}")
    click.echo(f"Pending: {', '.join(pending) or 'none'}")


retention = Group("retention", help="Remove recorded exchanges older than a number of "
                                          "days (RETENTION_DAYS does it daily).")


@retention.command("purge")
@click.option("--days", type=click.IntRange(min=1), default=None,
              help="Keep this many days (default: RETENTION_DAYS).")
@click.option("--dry-run", is_flag=True, help="Only count what would be removed.")
def purge_command(days: int | None, dry_run: bool) -> None:
    """Delete rows older than the retention period; drop whole old partitions on PostgreSQL."""
    days = days or current_app.config["NEXUS_SETTINGS"].retention_days
    if not days:
        raise click.ClickException("RETENTION_DAYS is 0 (keep everything): pass --days N.")
    database = _database()
    cutoff = cutoff_for(days)
    with _reported(database, "purge"):
        counts = count_older(database, cutoff)
        click.echo(f"Older than {cutoff:%Y-%m-%d %H:%M} UTC: "
                   + ", ".join(f"{n} {table}" for table, n in counts.items()))
        if dry_run:
            return
        with click.progressbar(length=sum(counts.values()), label="Purging",
                               file=sys.stderr) as bar:
            result = purge(database, cutoff, progress=bar.update)
    click.echo(result.summary())


conversations = Group("conversations", help="Conversation tracking over the stored "
                                                  "requests.")


@conversations.command("relink")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S",
                                                      "%Y-%m-%d %H:%M:%S"]),
              default=None, help="Relink requests received from this UTC date or time on.")
@click.option("--days", type=click.IntRange(min=1), default=None,
              help="Relink the requests of the last N days.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def relink_command(since: datetime | None, days: int | None, yes: bool) -> None:
    """Recompute conversations, branches, sub-agents and compactions for the requests received
    since a time, in the order they arrived (after an improvement of the linking rules)."""
    if (since is None) == (days is None):
        raise click.UsageError("Give exactly one of --since and --days.")
    start = since.replace(tzinfo=UTC) if since else datetime.now(UTC) - timedelta(days=days)
    database = _database()
    with _reported(database, "relink"):
        total = Request.select().where(Request.received_at >= start).count()
        if not yes:
            click.confirm(f"Relink {total} request(s) received since {start:%Y-%m-%d %H:%M} "
                          "UTC? Their conversation fields are recomputed.", abort=True)
        with click.progressbar(length=total, label="Relinking",
                               file=sys.stderr) as bar:
            linked = relink(database, start, progress=bar.update)
    click.echo(f"Relinked {linked} request(s) received since {start:%Y-%m-%d %H:%M} UTC.")
