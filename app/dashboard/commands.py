"""`flask --app wsgi users …`: the people allowed into the dashboard."""

from __future__ import annotations

from datetime import UTC, datetime

import click
import peewee
from flask import current_app
from werkzeug.security import generate_password_hash

from app.commandline import Group
from app.dashboard.auth import forget_users_cache
from app.storage.database import StorageError, storage_errors
from app.storage.models import DashboardUser

users = Group("users", help="Dashboard users (with any user or DASHBOARD_API_KEY, the "
                                  "dashboard needs a login).")


def _run(doing: str, work):
    db = current_app.extensions["nexus.db"]
    try:
        with storage_errors(db, doing), db.connection_context():
            return work()
    except StorageError as err:
        raise click.ClickException(str(err)) from None


@users.command("create")
@click.argument("name")
@click.password_option(help="The password (asked twice when not given).")
def create(name: str, password: str) -> None:
    """Create a user who logs in with NAME and a password."""
    name = name.strip()
    if not name or len(name) > 100:
        raise click.BadParameter("a name of 1 to 100 characters", param_hint="NAME")
    if len(password) < 8:
        raise click.BadParameter("at least 8 characters", param_hint="--password")

    def work():
        try:
            DashboardUser.create(name=name, password_hash=generate_password_hash(password),
                                 created_at=datetime.now(UTC))
        except peewee.IntegrityError:
            raise click.ClickException(f"A user named {name!r} exists already.") from None

    _run("write", work)
    forget_users_cache()
    click.echo(f"Created dashboard user {name!r}: the dashboard now needs a login.")


@users.command("delete")
@click.argument("name")
def delete(name: str) -> None:
    """Delete the user NAME (their open sessions end at their next page)."""
    deleted = _run("write", lambda: DashboardUser.delete()
                   .where(DashboardUser.name == name).execute())
    if not deleted:
        raise click.ClickException(f"No user named {name!r}.")
    forget_users_cache()
    click.echo(f"Deleted dashboard user {name!r}.")


@users.command("list")
def list_users() -> None:
    """List the users, with when they last logged in."""
    found = _run("read", lambda: list(DashboardUser.select().order_by(DashboardUser.name)))
    if not found:
        click.echo("No dashboard users: the dashboard answers local (loopback) clients only, "
                   "unless DASHBOARD_API_KEY is set.")
    for user in found:
        last = f"{user.last_login_at:%Y-%m-%d %H:%M} UTC" if user.last_login_at else "never"
        click.echo(f"{user.name}\tcreated {user.created_at:%Y-%m-%d}\tlast login {last}")
