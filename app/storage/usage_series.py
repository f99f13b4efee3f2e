"""Usage figures as time series for the dashboard's charts (pure peewee, no Flask).

Read from the hourly roll-up (`usage_hourly`) only: the `(hour, …)` primary key serves the
range, so a day of hours costs the same at 100 requests as at 100 000. The roll-up holds the
current hour as far as it has been written (the writer adds each request to its hour in the
same transaction), so the last bucket is the partial hour up to now.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import reduce
from operator import and_

from app.storage.models import UsageHourly
from app.storage.usage import Group, UsageFilter, _counts, _filters, _rollup_sums, floor_hour

HOUR = timedelta(hours=1)
KEYS = ("domain", "account_id", "model")


def hours(first_hour: datetime, end_hour: datetime) -> list[datetime]:
    """The hour starts of [first_hour, end_hour), both whole hours."""
    out, hour = [], floor_hour(first_hour)
    while hour < end_hour:
        out.append(hour)
        hour += HOUR
    return out


def hourly(first_hour: datetime, end_hour: datetime, filters: UsageFilter,
           by: tuple[str, ...] = ()) -> list[Group]:
    """Roll-up figures of the hours [first_hour, end_hour) per hour and `by` columns (some of
    domain, account_id, model). Keys are (aware UTC hour start, *values); '' in the roll-up (no
    account, no model) is read as None, as `usage.rollup_groups` does."""
    unknown = set(by) - set(KEYS)
    if unknown:
        raise ValueError(f"hourly figures are grouped by {KEYS}, not {sorted(unknown)}")
    keys = [UsageHourly.hour, *(getattr(UsageHourly, name) for name in by)]
    conditions = [UsageHourly.hour >= first_hour, UsageHourly.hour < end_hour,
                  *_filters(UsageHourly, filters)]
    query = (UsageHourly.select(*keys, *_rollup_sums()).where(reduce(and_, conditions))
             .group_by(*keys))
    width = len(keys)
    return [Group((_as_hour(row[0]), *(value or None for value in row[1:width])),
                  _counts(row[width:]))
            for row in query.tuples()]


def _as_hour(value) -> datetime:
    # The field's converter gives aware UTC; grouped raw text (SQLite) is parsed to the same.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
