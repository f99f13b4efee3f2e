"""Who may see the dashboard (SPEC §7.1).

- Logins configured (a `DASHBOARD_API_KEY`, or users made with `flask --app wsgi users create`):
  every page needs a session, opened on the login page with a user's password or with the key.
- Neither: the dashboard answers loopback clients only (the laptop case), without a login;
  everyone else gets 401 with what to do.

Sessions are Flask's signed cookies (HttpOnly, SameSite=Lax); forms carry a CSRF token.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import current_app, redirect, render_template, request, url_for
from flask_login import LoginManager, UserMixin, current_user
from flask_wtf.csrf import CSRFProtect
from werkzeug.security import check_password_hash, generate_password_hash

from app.api.access import is_loopback
from app.storage.database import StorageError, storage_errors
from app.storage.models import DashboardUser, database_proxy

login_manager = LoginManager()
csrf = CSRFProtect()

KEY_VIEWER = "key"
USERS_CACHE_S = 5.0   # how long "are there users?" is remembered (it is asked on every page)
# Compared against when the name is unknown, so a wrong name costs the same time as a wrong
# password and says nothing about which names exist.
_DUMMY_HASH = generate_password_hash("not a password")


@dataclass
class Viewer(UserMixin):
    """A logged-in dashboard user, or the key login."""

    id: str
    name: str


SEEN = "nexus.dashboard_users_seen"   # app.extensions: (when checked, whether users exist)


def logins_configured() -> bool:
    """True when a key or at least one user exists: then every page needs a login."""
    if current_app.config["NEXUS_SETTINGS"].dashboard_api_key:
        return True
    checked_at, found = current_app.extensions.get(SEEN, (0.0, False))
    if time.monotonic() - checked_at > USERS_CACHE_S:
        found = _read(lambda: DashboardUser.select().exists(), default=found)
        current_app.extensions[SEEN] = (time.monotonic(), found)
    return found


def forget_users_cache() -> None:
    """After `users create/delete` in this process: ask the database again."""
    current_app.extensions.pop(SEEN, None)


@login_manager.user_loader
def load_viewer(viewer_id: str) -> Viewer | None:
    if viewer_id == KEY_VIEWER:
        return Viewer(KEY_VIEWER, "key") if current_app.config[
            "NEXUS_SETTINGS"].dashboard_api_key else None
    if viewer_id.startswith("user:"):
        name = viewer_id[len("user:"):]
        user = _read(lambda: DashboardUser.get_or_none(DashboardUser.name == name))
        return Viewer(viewer_id, user.name) if user else None
    return None


def check_key(presented: str) -> Viewer | None:
    """The key login, when `presented` is DASHBOARD_API_KEY (constant-time compare)."""
    key = current_app.config["NEXUS_SETTINGS"].dashboard_api_key
    if key and presented and hmac.compare_digest(presented.encode(), key.encode()):
        return Viewer(KEY_VIEWER, "key")
    return None


def check_password(name: str, password: str) -> Viewer | None:
    """The user `name` when `password` is theirs; records the login time."""
    user = _read(lambda: DashboardUser.get_or_none(DashboardUser.name == name))
    if not check_password_hash(user.password_hash if user else _DUMMY_HASH, password) or not user:
        return None
    _read(lambda: DashboardUser.update(last_login_at=datetime.now(UTC))
          .where(DashboardUser.id == user.id).execute())
    return Viewer(f"user:{user.name}", user.name)


def guard():
    """Before every dashboard view: let the caller in, send them to log in, or refuse."""
    if request.endpoint in ("dashboard.login", "dashboard.login_submit", "dashboard.logout"):
        return None
    if not logins_configured():
        if is_loopback(request.remote_addr):
            return None
        return render_template("dashboard/denied.html"), 401
    if current_user.is_authenticated:
        return None
    return redirect(url_for("dashboard.login", next=request.full_path.rstrip("?")))


def safe_next(target: str | None, default: str) -> str:
    """Where to go after logging in: `target` when it is a path inside the dashboard, else
    `default`. Not another host (`//evil`, `https://evil`), not a look-alike path
    (`/dashboard.evil`), and no control character or backslash: a CR/LF cannot go into a
    Location header (werkzeug refuses it with an error) and browsers read `\\` as `/`."""
    if not target or any(ord(c) < 0x20 or c in "\x7f\\" for c in target):
        return default
    if target != "/dashboard" and not target.startswith(("/dashboard/", "/dashboard?",
                                                         "/dashboard#")):
        return default
    return target


def _read(query, default=None):
    db = database_proxy.obj
    try:
        with storage_errors(db, "read"), db.connection_context():
            return query()
    except StorageError:
        current_app.logger.warning("dashboard: the users table cannot be read", exc_info=True)
        return default
