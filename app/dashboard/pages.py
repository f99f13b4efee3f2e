"""The dashboard's entry views: login, logout and the overview; the guard in front of all."""

from __future__ import annotations

from datetime import timedelta

from flask import current_app, redirect, render_template, request, url_for
from flask_login import login_user, logout_user

from app.dashboard import auth, bp
from app.storage import queries, usage


@bp.before_app_request
def _guard():
    # App-wide, so that a /dashboard path with no view is refused like the others rather than
    # answered 404 to strangers.
    if request.path == "/dashboard" or request.path.startswith("/dashboard/"):
        return auth.guard()
    return None


@bp.get("/login")
def login():
    return render_template("dashboard/login.html", error=None,
                           key_login=bool(current_app.config["NEXUS_SETTINGS"].dashboard_api_key))


@bp.post("/login")
def login_submit():
    auth.csrf.protect()
    form = request.form
    viewer = (auth.check_key(form.get("key", "")) if form.get("key")
              else auth.check_password(form.get("name", "").strip(), form.get("password", "")))
    if viewer is None:
        return render_template(
            "dashboard/login.html", error="Wrong name, password or key.",
            key_login=bool(current_app.config["NEXUS_SETTINGS"].dashboard_api_key)), 401
    login_user(viewer)
    # Only back into the dashboard: an open redirect would make the login page a phishing aid.
    return redirect(auth.safe_next(request.args.get("next"), url_for("dashboard.overview")))


@bp.post("/logout")
def logout():
    auth.csrf.protect()
    logout_user()
    return redirect(url_for("dashboard.login"))


@bp.get("/")
def overview():
    now = current_app.extensions["nexus.clock"]()
    since = now - timedelta(hours=24)
    with queries.read_session():
        groups = usage.stats(since, now, usage.UsageFilter())
        latest = _latest_rows()
        accounts = usage.accounts(now, now - timedelta(days=7))
    totals = usage.total(groups).counts
    return render_template("dashboard/overview.html", totals=totals, latest=latest,
                           accounts=[_account(a) for a in accounts], since=since, now=now,
                           timedelta=timedelta, window_limit=current_app.config[
                               "NEXUS_SETTINGS"].alert_window_token_limit)


@bp.get("/_latest")
def latest():
    """The overview's latest requests (refreshed live)."""
    with queries.read_session():
        rows = _latest_rows()
    return render_template("dashboard/_latest.html", latest=rows)


def _latest_rows() -> list[dict]:
    """The 20 newest summaries, without counting every stored request as `list_requests`
    would (the overview shows no total: at a million rows the count is most of its time)."""
    return list(queries.page_query(queries.RequestFilter()).limit(20).dicts())


def _account(item: usage.AccountUsage) -> dict:
    return {"account_id": item.account_id, "domains": list(item.domains),
            "window": item.window, "sample": item.sample}
