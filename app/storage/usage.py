"""Read-side usage queries (SPEC §6, §7.3): windows, daily history, tool use, accounts, the
rate-limit ledger and overview figures (pure peewee, no Flask).

Figures travel as `Group`s: the key values of a group and its counts, named after the columns
of `usage_hourly` (cost in whole micro-dollars), whether they were added up from raw `requests`
rows or read from the roll-up. Raw rows are added up with the roll-up's own definitions
(`app.usage.rollup`, spelled in SQL as in `migrations/0003_usage_rollups.py`), so the two can be
merged.

Every query filters on domain/account/model plus a time range, which the `(column,
received_at)` indexes of `requests`, the `(hour, …)` key of the roll-ups and the
`(column, sampled_at)` indexes of the ledger serve; the number of statements per call is fixed,
except one indexed lookup pair per account in `accounts`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import reduce
from operator import and_
from typing import Any

from peewee import SQL, Case, DatabaseProxy, Expression, Field, Select, fn

from app.storage.models import RateLimitSample, Request, UsageHourly, UsageToolHourly
from app.usage.rollup import COUNTERS, DISCONNECTED, SUMS

WINDOW_HOURS = 5  # the subscription's rolling window (SPEC §6.1)
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class UsageFilter:
    """Filters of the usage figures; None means "any"."""

    domain: str | None = None
    account: str | None = None
    model: str | None = None
    conversation_id: str | None = None  # raw rows only: the roll-ups do not know it


@dataclass(frozen=True)
class RateLimitFilter:
    """Filters of the ledger; `since` inclusive, `until` exclusive."""

    domain: str | None = None
    account: str | None = None
    since: datetime | None = None
    until: datetime | None = None


@dataclass
class Group:
    """The figures of one group of requests: its key, its counts and its oldest request (raw
    rows only)."""

    key: tuple = ()
    counts: dict[str, Any] = field(default_factory=lambda: dict.fromkeys(COUNTERS + SUMS, 0))
    oldest: datetime | None = None

    def add(self, other: Group) -> Group:
        for name, value in other.counts.items():
            self.counts[name] += value
        if other.oldest is not None and (self.oldest is None or other.oldest < self.oldest):
            self.oldest = other.oldest
        return self


@dataclass
class AccountUsage:
    """One account: its window over all domains, per domain, and its latest known state."""

    account_id: str | None
    window: Group
    domains: dict[str, Group]
    last_request_at: datetime | None
    sample: RateLimitSample | None


def merge(groups: Iterable[Group], key=lambda group: group.key) -> dict[Any, Group]:
    """Groups added up by `key(group)` (the same key by default: merging partial figures)."""
    merged: dict[Any, Group] = {}
    for group in groups:
        new_key = key(group)
        merged.setdefault(new_key, Group(new_key if isinstance(new_key, tuple) else (new_key,)))
        merged[new_key].add(group)
    return merged


def total(groups: Iterable[Group]) -> Group:
    """Every group added up."""
    return reduce(Group.add, groups, Group())


def window(now: datetime, hours: int, filters: UsageFilter, by: tuple[str, ...]) -> list[Group]:
    """Raw requests of the `hours` up to `now` (both ends included), grouped by `by` columns
    of `requests` (the oldest request kept per group)."""
    return raw_groups(now - timedelta(hours=hours), now, filters, by, until_inclusive=True)


def stats(since: datetime, until: datetime, filters: UsageFilter) -> list[Group]:
    """Figures of [since, until) per (domain, account_id, model): the whole hours inside the
    range from the roll-up, the partial hours at its edges from raw rows."""
    by = ("domain", "account_id", "model")
    first, last = ceil_hour(since), floor_hour(until)
    if filters.conversation_id is not None or first >= last:
        return raw_groups(since, until, filters, by)
    parts = rollup_groups(first, last, filters, by)
    if since < first:
        parts += raw_groups(since, first, filters, by)
    if last < until:
        parts += raw_groups(last, until, filters, by)
    return list(merge(parts).values())


def daily(first: date, last: date, filters: UsageFilter) -> list[Group]:
    """Roll-up figures per (UTC date, model) of the days `first` to `last`, both included."""
    day = _day(UsageHourly.hour)
    query = (UsageHourly.select(day, UsageHourly.model, *_rollup_sums())
             .where(_rollup_where(UsageHourly, first, last, filters))
             .group_by(day, UsageHourly.model))
    return [Group((_as_date(row[0]), row[1] or None), _counts(row[2:]))
            for row in query.tuples()]


def tool_days(first: date, last: date, filters: UsageFilter) -> list[tuple]:
    """(UTC date, account_id, tool_name, call_count) of the days `first` to `last`."""
    day = _day(UsageToolHourly.hour)
    query = (UsageToolHourly.select(day, UsageToolHourly.account_id, UsageToolHourly.tool_name,
                                    fn.SUM(UsageToolHourly.call_count))
             .where(_rollup_where(UsageToolHourly, first, last, filters))
             .group_by(day, UsageToolHourly.account_id, UsageToolHourly.tool_name))
    return [(_as_date(d), account or None, name, int(calls or 0))
            for d, account, name, calls in query.tuples()]


def accounts(now: datetime, since: datetime) -> list[AccountUsage]:
    """Accounts with requests or rate-limit samples since `since`, each with its current
    window, per domain, its last request and its latest sample; the null account last."""
    found = active_accounts(since)
    groups = window(now, WINDOW_HOURS, UsageFilter(), ("account_id", "domain"))
    for group in groups:  # a request may have arrived after the roll-up's last hour
        found.setdefault(group.key[0], set()).add(group.key[1])
    by_pair = {group.key: group for group in groups}
    out = []
    for account in sorted(found, key=none_last):
        domains = {domain: by_pair.get((account, domain), Group((domain,)))
                   for domain in sorted(found[account])}
        out.append(AccountUsage(account, total(domains.values()), domains,
                                last_request_at(account), latest_sample(account)))
    return out


def active_accounts(since: datetime) -> dict[str | None, set[str]]:
    """Each account with traffic (roll-up) or ledger samples since `since`, and its domains."""
    found: dict[str | None, set[str]] = {}
    rollup = (UsageHourly.select(UsageHourly.account_id, UsageHourly.domain)
              .where(UsageHourly.hour >= floor_hour(since))
              .group_by(UsageHourly.account_id, UsageHourly.domain))
    for account, domain in [*rollup.tuples(), *sampled_pairs(since)]:
        found.setdefault(account or None, set()).add(domain)
    return found


def sampled_pairs(since: datetime) -> list[tuple[str | None, str]]:
    """The (account_id, domain) pairs of the ledger with a sample since `since`.

    One statement walking the `(account_id, domain, sampled_at DESC)` index as a skip scan: a
    probe per pair ever sampled (accounts × domains, a few dozen) and one more to see whether
    its newest sample is recent, instead of grouping every sample of the range (a million in a
    month at scale). The null account is walked on its own (NULL compares to nothing). Plain
    SQL both engines run: recursive CTE, row values, scalar subqueries."""
    db = RateLimitSample._meta.database  # the process's, or a test's `bind_ctx`
    db = db.obj if isinstance(db, DatabaseProxy) else db
    since = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
    at = RateLimitSample.sampled_at.db_value(since)
    cursor = db.execute_sql(_SAMPLED_PAIRS.replace("?", db.param), (at, at))
    return [(account, domain) for account, domain in cursor.fetchall()]


_NEXT_PAIR = ("(SELECT r.{column} FROM ratelimit_samples AS r WHERE r.account_id IS NOT NULL "
              "AND (r.account_id, r.domain) > (p.account_id, p.domain) "
              "ORDER BY r.account_id, r.domain LIMIT 1)")
_SAMPLED_PAIRS = f"""
WITH RECURSIVE pairs(account_id, domain) AS (
    SELECT * FROM (SELECT account_id, domain FROM ratelimit_samples
                   WHERE account_id IS NOT NULL ORDER BY account_id, domain LIMIT 1) AS first
    UNION ALL
    SELECT {_NEXT_PAIR.format(column="account_id")}, {_NEXT_PAIR.format(column="domain")}
    FROM pairs AS p WHERE p.account_id IS NOT NULL
), unknown(domain) AS (
    SELECT MIN(domain) FROM ratelimit_samples WHERE account_id IS NULL
    UNION ALL
    SELECT (SELECT MIN(r.domain) FROM ratelimit_samples AS r
            WHERE r.account_id IS NULL AND r.domain > u.domain)
    FROM unknown AS u WHERE u.domain IS NOT NULL
)
SELECT p.account_id, p.domain FROM pairs AS p
WHERE p.account_id IS NOT NULL AND EXISTS (
    SELECT 1 FROM ratelimit_samples AS r
    WHERE r.account_id = p.account_id AND r.domain = p.domain AND r.sampled_at >= ?)
UNION ALL
SELECT NULL, u.domain FROM unknown AS u
WHERE u.domain IS NOT NULL AND EXISTS (
    SELECT 1 FROM ratelimit_samples AS r
    WHERE r.account_id IS NULL AND r.domain = u.domain AND r.sampled_at >= ?)
"""


def last_request_at(account: str | None) -> datetime | None:
    """When the account's latest request arrived (the (account_id, received_at) index)."""
    row = (Request.select(Request.received_at).where(_is(Request.account_id, account))
           .order_by(Request.received_at.desc()).limit(1).first())
    return row.received_at if row else None


def latest_sample(account: str | None) -> RateLimitSample | None:
    """The account's newest ledger sample (the (account_id, sampled_at) index)."""
    return (RateLimitSample.select().where(_is(RateLimitSample.account_id, account))
            .order_by(RateLimitSample.sampled_at.desc(), RateLimitSample.id.desc())
            .limit(1).first())


def list_ratelimits(filters: RateLimitFilter, limit: int,
                    offset: int) -> tuple[list[RateLimitSample], int]:
    """One page of the ledger, newest first, and how many samples match in all."""
    condition = _ledger_where(filters)
    query = RateLimitSample.select()
    if condition is not None:
        query = query.where(condition)
    ordered = query.order_by(RateLimitSample.sampled_at.desc(), RateLimitSample.id.desc())
    page = list(ordered.limit(limit).offset(offset)) if limit else []
    if offset == 0 and len(page) < limit:
        return page, len(page)
    counted = RateLimitSample.select(fn.COUNT(SQL("*")))
    if condition is not None:
        counted = counted.where(condition)
    return page, counted.scalar() or 0


def raw_groups(since: datetime, until: datetime, filters: UsageFilter, by: tuple[str, ...],
               until_inclusive: bool = False) -> list[Group]:
    """Raw requests of [since, until) (or [since, until]) added up per `by` columns."""
    query = raw_query(since, until, filters, by, until_inclusive)
    return [Group(tuple(row[:len(by)]), _counts(row[len(by):-1]),
                  Request.received_at.python_value(row[-1]))
            for row in query.tuples()]


def raw_query(since: datetime, until: datetime, filters: UsageFilter, by: tuple[str, ...],
              until_inclusive: bool = False) -> Select:
    """The statement of `raw_groups`: keys, then COUNTERS + SUMS, then the oldest time."""
    keys = [getattr(Request, name) for name in by]
    end = Request.received_at <= until if until_inclusive else Request.received_at < until
    conditions = [Request.received_at >= since, end, *_filters(Request, filters)]
    if filters.conversation_id is not None:
        conditions.append(Request.conversation_id == filters.conversation_id)
    return (Request.select(*keys, *_raw_sums(), fn.MIN(Request.received_at))
            .where(reduce(and_, conditions)).group_by(*keys))


def rollup_groups(first_hour: datetime, end_hour: datetime, filters: UsageFilter,
                  by: tuple[str, ...]) -> list[Group]:
    """Roll-up hours of [first_hour, end_hour) added up per `by` columns ('' read as None)."""
    keys = [getattr(UsageHourly, name) for name in by]
    conditions = [UsageHourly.hour >= first_hour, UsageHourly.hour < end_hour,
                  *_filters(UsageHourly, filters)]
    query = (UsageHourly.select(*keys, *_rollup_sums()).where(reduce(and_, conditions))
             .group_by(*keys))
    return [Group(tuple(value or None for value in row[:len(by)]), _counts(row[len(by):]))
            for row in query.tuples()]


def floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def ceil_hour(moment: datetime) -> datetime:
    floor = floor_hour(moment)
    return floor if floor == moment else floor + HOUR


def midnight(day: date, tzinfo=None) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tzinfo)


def none_last(value: Any) -> tuple[bool, Any]:
    """A sort key putting None after every value (an unknown account or model last)."""
    return (value is None, "" if value is None else value)


def _raw_sums() -> list:
    """The roll-up's columns as aggregates of raw rows, in COUNTERS + SUMS order."""
    error = ((Request.outcome == "failed")
             | ((fn.COALESCE(Request.outcome, "") != DISCONNECTED)
                & (Request.status >= "400") & (Request.status < "600")))
    # Cost per row in whole micro-dollars, as the writer adds it up: SQLite keeps DECIMAL as
    # REAL, so summing dollars would drift.
    microusd = fn.ROUND(fn.COALESCE(Request.cost_usd, 0) * SQL("1000000")).cast("BIGINT")
    spelled = {
        "request_count": fn.COUNT(SQL("*")),
        "error_count": _count_if(error),
        "disconnected_count": _count_if(Request.outcome == DISCONNECTED),
        "cost_microusd": fn.SUM(microusd),
        "cost_flagged_count": _count_if(Request.cost_flagged == True),  # noqa: E712
        "duration_count": fn.COUNT(Request.duration_ms),
        "first_token_count": fn.COUNT(Request.first_token_ms),
        "duration_ms_sum": fn.SUM(Request.duration_ms),
        "first_token_ms_sum": fn.SUM(Request.first_token_ms),
    }
    return [spelled.get(name) or fn.SUM(fn.COALESCE(getattr(Request, name), 0))
            for name in COUNTERS + SUMS]


def _rollup_sums() -> list:
    return [fn.SUM(getattr(UsageHourly, name)) for name in COUNTERS + SUMS]


def _count_if(condition: Expression):
    return fn.SUM(Case(None, [(condition, 1)], 0))


def _counts(values: Iterable[Any]) -> dict[str, Any]:
    # SUM answers NULL over no rows and NUMERIC for BIGINT on PostgreSQL: plain numbers here.
    return {name: (float(value or 0) if name in SUMS else int(value or 0))
            for name, value in zip(COUNTERS + SUMS, values, strict=True)}


def _filters(model, filters: UsageFilter) -> list[Expression]:
    return [getattr(model, column) == value
            for column, value in (("domain", filters.domain), ("account_id", filters.account),
                                  ("model", filters.model))
            if value is not None and hasattr(model, column)]


def _rollup_where(model, first: date, last: date, filters: UsageFilter) -> Expression:
    conditions = [model.hour >= midnight(first), model.hour < midnight(last + timedelta(days=1)),
                  *_filters(model, filters)]
    return reduce(and_, conditions)


def _ledger_where(filters: RateLimitFilter) -> Expression | None:
    conditions = [column == value
                  for column, value in ((RateLimitSample.domain, filters.domain),
                                        (RateLimitSample.account_id, filters.account))
                  if value is not None]
    if filters.since is not None:
        conditions.append(RateLimitSample.sampled_at >= filters.since)
    if filters.until is not None:
        conditions.append(RateLimitSample.sampled_at < filters.until)
    return reduce(and_, conditions) if conditions else None


def _is(column: Field, value: str | None) -> Expression:
    return column.is_null() if value is None else column == value


def _day(column: Field):
    # DATE(timestamp) is a date on PostgreSQL and 'YYYY-MM-DD' text on SQLite: both engines
    # spell it alike, and the result is read by `_as_date` rather than the column's converter.
    return fn.DATE(column).coerce(False)


def _as_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])
