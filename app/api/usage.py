"""`/api/usage/*`, `/api/ratelimits` and `/api/stats` views (SPEC §6, §7.3): parameters in, a
fixed number of short reads, JSON out.

"Now" is the app's clock (`nexus.clock`), never the system's, so tests can hold it still. Days
are UTC days, today included.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from flask import Response, current_app, jsonify, request

from app.api import bp, params, serialise
from app.storage import queries, usage


@bp.get("/usage/window")
def usage_window() -> Response:
    """Requests and tokens of the last `hours`, in all and per model."""
    filters, hours = params.usage_window(_args())
    now = _now()
    with queries.read_session():
        groups = usage.window(now, hours, filters, by=("model",))
    return jsonify({"account_id": filters.account, "domain": filters.domain,
                    "model": filters.model,
                    **serialise.window(usage.total(groups), hours, now, _token_limit()),
                    "models": serialise.per_model(groups)})


@bp.get("/usage/daily")
def usage_daily() -> Response:
    """One item per UTC day and model, from the hourly roll-up."""
    filters, days = params.usage_days(_args())
    first, today = _days(days)
    with queries.read_session():
        groups = usage.daily(first, today, filters)
    daily = serialise.daily(groups)
    return jsonify({"days": days, "since": first.isoformat(), "until": today.isoformat(),
                    "daily": daily, "total": len(daily),
                    "totals": serialise.figures(usage.total(groups).counts)})


@bp.get("/usage/tools")
def usage_tools() -> Response:
    """Tool calls per UTC day, account and tool name, and per tool name in all."""
    filters, days = params.usage_days(_args(), params.TOOLS_PARAMS)
    first, today = _days(days)
    with queries.read_session():
        rows = usage.tool_days(first, today, filters)
    tools = serialise.tool_days(rows)
    return jsonify({"days": days, "since": first.isoformat(), "until": today.isoformat(),
                    "tools": tools, "total": len(tools), "totals": serialise.tool_totals(rows)})


@bp.get("/usage/accounts")
def usage_accounts() -> Response:
    """Accounts seen in the last `days`, with their current window and latest rate-limit
    sample."""
    _, days = params.usage_days(_args(), params.ACCOUNTS_PARAMS)
    now = _now()
    first, _ = _days(days, now)
    with queries.read_session():
        found = usage.accounts(now, usage.midnight(first, UTC))
    limit = _token_limit()
    return jsonify({"accounts": [serialise.account(item, now, limit) for item in found],
                    "total": len(found)})


@bp.get("/ratelimits")
def list_ratelimits() -> Response:
    """The rate-limit ledger, newest first."""
    args = _args()
    filters = params.ratelimit_filter(args, _now())
    limit, offset = params.ratelimit_paging(args)
    with queries.read_session():
        rows, total = usage.list_ratelimits(filters, limit, offset)
    return jsonify({"ratelimits": [serialise.ratelimit(row) for row in rows], "total": total,
                    "limit": limit, "offset": offset})


@bp.get("/stats")
def stats() -> Response:
    """Overview figures of a range (the last 24 hours by default)."""
    filters, since, until = params.stats_range(_args(), _now())
    with queries.read_session():
        groups = usage.stats(since, until, filters)
    return jsonify(serialise.stats(groups, since, until))


def _args() -> dict[str, list[str]]:
    return request.args.to_dict(flat=False)


def _now() -> datetime:
    return current_app.extensions["nexus.clock"]()


def _days(days: int, now: datetime | None = None) -> tuple[date, date]:
    today = (now or _now()).astimezone(UTC).date()
    return today - timedelta(days=days - 1), today


def _token_limit() -> int | None:
    return current_app.config["NEXUS_SETTINGS"].alert_window_token_limit
