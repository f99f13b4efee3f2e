"""The alert watch: after each committed batch, read what the alert rules need and apply them.

Runs on the writer side (never on the request path), through the sink's `query` on the
writer's own connection, with at most two reads for the 5-hour windows of a batch (accounts,
and domains of requests without an account) and one indexed read per account with rate-limit
samples in it. The rules themselves are in app/usage/alerts.py.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import peewee
from peewee import fn

from app.events import UsageAlert
from app.storage.models import RateLimitSample, Request
from app.storage.rows import Item, sample_of
from app.usage.alerts import WINDOW, Account, account_of, sample_alerts, window_alerts

Query = Callable[[str, list[Any]], list[tuple]]   # SQL and parameters -> rows
Run = Callable[[Any], list[tuple]]                 # a peewee select -> rows

_SAMPLE_FIELDS = [field for field in RateLimitSample._meta.sorted_fields if field.name != "headers"]


class AlertWatch:
    """Applies the alert rules to each batch the writer commits."""

    def __init__(self, db: peewee.Database, token_limit: int | None, levels: Iterable[int],
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.db = db  # compiles the reads: the models may be bound elsewhere (tests)
        self.token_limit = token_limit
        self.levels = tuple(levels)
        self.clock = clock

    def check(self, items: list[Item], inserted: set[str], query: Query) -> list[UsageAlert]:
        """The alerts the newly inserted rows among `items` raise."""
        requests = [request for request, _ in items if request["id"] in inserted]
        if not requests:
            return []

        def run(select) -> list[tuple]:
            sql, params = self.db.get_sql_context().sql(select).query()
            return query(sql, list(params))

        alerts = self._windows(requests, run) if self.token_limit else []
        samples: dict[Account, list[dict]] = defaultdict(list)
        for request in requests:
            sample = sample_of(request)
            if sample is not None:
                samples[account_of(sample)].append(sample)
        for account, mine in samples.items():
            mine.sort(key=lambda sample: sample["sampled_at"])
            previous = _previous_sample(run, account, mine[0]["sampled_at"],
                                        [sample["request_id"] for sample in mine])
            for sample in mine:
                alerts += sample_alerts(account, previous, sample, self.levels)
                previous = sample
        return alerts

    def _windows(self, requests: list[dict], run: Run) -> list[UsageAlert]:
        since = self.clock() - WINDOW
        added: dict[Account, int] = defaultdict(int)
        last: dict[Account, dict] = {}
        for request in requests:
            if _aware(request["received_at"]) < since or not request.get("output_tokens"):
                continue
            account = account_of(request)
            added[account] += request["output_tokens"]
            if account not in last or request["received_at"] >= last[account]["received_at"]:
                last[account] = request
        alerts = []
        for account, (total, oldest) in _window_totals(run, since, list(added)).items():
            request = last[account]
            alerts += window_alerts(account, request["domain"], total - added[account], total,
                                    oldest, self.token_limit, self.levels, request["id"])
        return alerts


def _window_totals(run: Run, since: datetime,
                   accounts: list[Account]) -> dict[Account, tuple[int, datetime]]:
    """Output tokens in the window and its oldest request, per account (or domain)."""
    totals = {}
    named = sorted({account.account_id for account in accounts if account.account_id})
    domains = sorted({account.domain for account in accounts if not account.account_id})
    for column, values in ((Request.account_id, named), (Request.domain, domains)):
        if not values:
            continue
        condition = column.in_(values)
        if column is Request.domain:
            condition &= Request.account_id.is_null()
        select = (Request.select(column, fn.SUM(fn.COALESCE(Request.output_tokens, 0)),
                                 fn.MIN(Request.received_at))
                  .where((Request.received_at >= since) & condition).group_by(column))
        for key, total, oldest in run(select):
            account = Account(key, "") if column is Request.account_id else Account(None, key)
            totals[account] = (int(total or 0), Request.received_at.python_value(oldest))
    return totals


def _previous_sample(run: Run, account: Account, before: datetime,
                     batch_ids: list[str]) -> dict[str, Any] | None:
    """The account's latest sample before this batch's first."""
    if account.account_id:
        condition = RateLimitSample.account_id == account.account_id
    else:
        condition = (RateLimitSample.account_id.is_null()
                     & (RateLimitSample.domain == account.domain))
    select = (RateLimitSample.select(*_SAMPLE_FIELDS)
              .where(condition & (RateLimitSample.sampled_at <= before)
                     & RateLimitSample.request_id.not_in(batch_ids))
              .order_by(RateLimitSample.sampled_at.desc(), RateLimitSample.id.desc()).limit(1))
    rows = run(select)
    if not rows:
        return None
    return {field.name: field.python_value(value) for field, value in zip(_SAMPLE_FIELDS, rows[0],
                                                                         strict=True)}


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
