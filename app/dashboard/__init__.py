"""The dashboard (SPEC §7.1–7.2): server-rendered pages under `/dashboard`, htmx for the parts
that change, ECharts for charts (options built with pyecharts, library vendored in static/),
live updates over SSE.

Each page is a small module attaching its views to `bp`; `auth` guards them all. Pages read
through the same pure query modules as the JSON API (app/storage/*queries*, app/storage/usage).
"""

from __future__ import annotations

from flask import Blueprint, Flask
from flask_htmx import HTMX

from app.dashboard.auth import csrf, login_manager
from app.dashboard.secret import secret_key

bp = Blueprint("dashboard", __name__, url_prefix="/dashboard")
htmx = HTMX()


def init_app(app: Flask) -> None:
    """Sessions, logins, CSRF, the htmx helpers, the pages and the `users` commands."""
    from app.dashboard import auth, charts, commands, conversations, events, pages, requests, usage  # noqa: F401

    settings = app.config["NEXUS_SETTINGS"]
    app.secret_key = secret_key(settings.secret_key)
    app.config.update(
        SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_HTTPONLY=True, REMEMBER_COOKIE_SAMESITE="Lax",
        # CSRF is checked by the dashboard's own form views only: the proxy and the JSON API
        # are not browser forms.
        WTF_CSRF_CHECK_DEFAULT=False, WTF_CSRF_TIME_LIMIT=None)
    login_manager.init_app(app)
    csrf.init_app(app)
    htmx.init_app(app)
    app.register_blueprint(bp)
    app.cli.add_command(commands.users)
