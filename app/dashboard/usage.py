"""The Usage and Accounts pages (SPEC §6, §7.2).

- `GET /dashboard/usage?account=&domain=&days=30&page=1`: the 5-hour window per account and
  domain (figures, a gauge per account, when the oldest request leaves), the daily history
  (token kinds stacked per UTC day, cost as a line), the split per model (table and pie), the
  most used tools and the rate-limit ledger (newest first, paged).
- `GET /dashboard/accounts?days=30`: every account seen in the last `days` with its window, last
  request, domains and latest upstream state, linking to its usage.

Parameters are read leniently (a page is not an API): an unusable value falls back to its
default. Each page runs a fixed number of reads on the roll-ups and indexed columns, plus two
indexed lookups per account shown.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

from flask import current_app, render_template, request

from app.dashboard import bp, charts
from app.storage import queries
from app.storage import usage as store
from app.storage.usage import WINDOW_HOURS, RateLimitFilter, UsageFilter, merge, none_last

DEFAULT_DAYS = 30
DAY_CHOICES = (1, 7, 30, 90, 366)
LEDGER_PAGE = 25
MAX_VALUE = 200


@bp.get("/usage", endpoint="usage")
def usage_page():
    now = _clock()
    account, domain = _text("account"), _text("domain")
    domain = domain.lower() if domain else None
    days = _integer("days", DEFAULT_DAYS, 1, 366)
    page = _integer("page", 1, 1, 1_000_000)
    first, today = _days(now, days)
    since = store.midnight(first, UTC)
    filters = UsageFilter(domain=domain, account=account)
    ledger_filter = RateLimitFilter(domain=domain, account=account, since=since)
    with queries.read_session():
        window = store.window(now, WINDOW_HOURS, filters, ("account_id", "domain"))
        per_account = merge(window, key=lambda group: group.key[0])
        samples = {key: store.latest_sample(key) for key in per_account}
        daily = store.daily(first, today, filters)
        tools = store.tool_days(first, today, filters)
        ledger, ledger_total = store.list_ratelimits(ledger_filter, LEDGER_PAGE,
                                                     (page - 1) * LEDGER_PAGE)
        choices = store.active_accounts(since)
    limit, thresholds = charts.settings_limits()
    gauges = [charts.window_gauge(key, per_account[key], samples[key], now, limit, thresholds)
              for key in sorted(per_account, key=none_last)]
    window_rows = sorted(window, key=lambda group: (none_last(group.key[0]), group.key[1]))
    models = charts.model_split(daily)
    tool_totals = charts.tool_totals(tools)
    return render_template(
        "dashboard/usage/page.html", now=now, account=account, domain=domain, days=days,
        first=first, today=today, day_choices=_day_choices(days),
        account_choices=_choices({key for key in choices if key is not None}, account),
        domain_choices=_choices({name for names in choices.values() for name in names},
                                domain),
        gauges=gauges, window_rows=window_rows, window_total=store.total(window),
        daily_chart=charts.daily_chart(daily, _day_list(first, today)) if daily else None,
        daily_total=store.total(daily), models=models,
        model_pie=charts.model_pie(models) if models else None,
        tool_totals=tool_totals[:charts.TOP_TOOLS],
        tool_calls=sum(count for _, count in tool_totals),
        tools_chart=charts.tools_chart(tool_totals) if tool_totals else None,
        ledger=ledger, ledger_total=ledger_total, page=page, page_size=LEDGER_PAGE,
        pages=max(1, math.ceil(ledger_total / LEDGER_PAGE)),
        empty=not (window or daily or tools or ledger_total), token_limit=limit,
        timedelta=timedelta)


@bp.get("/accounts", endpoint="accounts")
def accounts_page():
    now = _clock()
    days = _integer("days", DEFAULT_DAYS, 1, 366)
    first, _ = _days(now, days)
    with queries.read_session():
        found = store.accounts(now, store.midnight(first, UTC))
    limit, thresholds = charts.settings_limits()
    items = [{"account": item,
              "gauge": charts.window_gauge(item.account_id, item.window, item.sample, now,
                                           limit, thresholds),
              "domains": [(name, group, _leaves(group)) for name, group in item.domains.items()]}
             for item in found]
    return render_template("dashboard/accounts/page.html", items=items, days=days,
                           day_choices=_day_choices(days), now=now, token_limit=limit)


def _clock() -> datetime:
    return current_app.extensions["nexus.clock"]()


def _text(name: str) -> str | None:
    value = request.args.get(name, "").strip()
    if not value or len(value) > MAX_VALUE or "\x00" in value:
        return None
    return value


def _integer(name: str, default: int, low: int, high: int) -> int:
    try:
        value = int(request.args.get(name, ""))
    except ValueError:
        return default
    return min(max(value, low), high)


def _days(now: datetime, days: int) -> tuple[date, date]:
    """The first and last UTC day of the last `days` days, today included."""
    today = now.astimezone(UTC).date()
    return today - timedelta(days=days - 1), today


def _day_list(first: date, last: date) -> list[date]:
    return [first + timedelta(days=index) for index in range((last - first).days + 1)]


def _day_choices(days: int) -> list[int]:
    return sorted({*DAY_CHOICES, days})


def _choices(values: set[str], selected: str | None) -> list[str]:
    return sorted(values | ({selected} if selected else set()))


def _leaves(group: store.Group) -> datetime | None:
    return group.oldest + timedelta(hours=WINDOW_HOURS) if group.oldest else None
