"""Parameters of the usage API (`/api/usage/*`, `/api/ratelimits`, `/api/stats`), without a
server: defaults, bounds, filters and the 400s naming the parameter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.api import params
from app.storage.usage import RateLimitFilter, UsageFilter
from tests.unit.params_support import args, refused

NOW = datetime(2025, 3, 14, 12, 30, tzinfo=UTC)




def test_window_defaults_to_five_hours_and_no_filter():
    assert params.usage_window({}) == (UsageFilter(), 5)
    assert params.usage_window(args(account="", domain=" ", model="")) == (UsageFilter(), 5)


def test_window_filters_and_hours():
    filters, hours = params.usage_window(args(account="acc_1", domain=" Team.Example.COM ",
                                              model="claude-opus-4-1", hours="168"))
    assert filters == UsageFilter(domain="team.example.com", account="acc_1",
                                  model="claude-opus-4-1")
    assert hours == 168
    assert params.usage_window(args(hours="1"))[1] == 1


@pytest.mark.parametrize("raw", ["0", "169", "-1", "1.5", "five", "٣", "9" * 30])
def test_window_hours_out_of_bounds(raw):
    refused(lambda: params.usage_window(args(hours=raw)), "'hours'")


@pytest.mark.parametrize("raw", ["0", "367", "-3", "2d"])
def test_days_out_of_bounds(raw):
    refused(lambda: params.usage_days(args(days=raw)), "'days'")


def test_days_default_bounds_and_known_names():
    assert params.usage_days({}) == (UsageFilter(), 30)
    assert params.usage_days(args(days="366", model="m"))[1] == 366
    assert params.usage_days(args(days="1"), params.ACCOUNTS_PARAMS) == (UsageFilter(), 1)
    assert params.usage_days(args(account="a", domain="D"), params.TOOLS_PARAMS)[0] == \
        UsageFilter(domain="d", account="a")
    refused(lambda: params.usage_days(args(model="m"), params.TOOLS_PARAMS), "'model'")
    refused(lambda: params.usage_days(args(account="a"), params.ACCOUNTS_PARAMS), "'account'")


@pytest.mark.parametrize("call", [
    lambda a: params.usage_window(a),
    lambda a: params.usage_days(a),
    lambda a: params.ratelimit_filter(a, NOW),
    lambda a: params.stats_range(a, NOW),
])
def test_unknown_and_repeated_parameters_are_refused(call):
    message = refused(lambda: call(args(acount="acc_1")), "Unknown parameter 'acount'")
    assert "account" in message  # the expected names are listed
    refused(lambda: call(args(domain=["a.example.com", "b.example.com"])), "'domain'",
            "more than once")
    refused(lambda: call(args(domain="a\x00b")), "'domain'", "NUL")


def test_ratelimit_filter_and_paging():
    assert params.ratelimit_filter({}, NOW) == RateLimitFilter()
    assert params.ratelimit_filter(args(account="acc_1", domain="X.example.com", since="24h",
                                        until="2025-03-14T11:00:00+01:00"), NOW) == \
        RateLimitFilter(domain="x.example.com", account="acc_1",
                        since=NOW - timedelta(hours=24),
                        until=datetime(2025, 3, 14, 10, tzinfo=UTC))
    assert params.ratelimit_paging({}) == (50, 0)
    assert params.ratelimit_paging(args(limit="7", offset="14", account="a")) == (7, 14)
    assert params.ratelimit_paging(args(limit="100000")) == (500, 0)
    refused(lambda: params.ratelimit_paging(args(limit="x")), "'limit'")


@pytest.mark.parametrize("name", ["since", "until"])
@pytest.mark.parametrize("raw", ["yesterday", "24x", "2025-13-01", "-5h"])
def test_bad_times(name, raw):
    refused(lambda: params.stats_range(args(**{name: raw}), NOW), f"'{name}'")
    refused(lambda: params.ratelimit_filter(args(**{name: raw}), NOW), f"'{name}'")


def test_stats_range_defaults_to_the_last_24_hours():
    assert params.stats_range({}, NOW) == (UsageFilter(), NOW - timedelta(hours=24), NOW)
    assert params.stats_range(args(since="7d"), NOW)[1:] == (NOW - timedelta(days=7), NOW)
    # An earlier end alone: the 24 hours before it.
    until = datetime(2025, 3, 1, tzinfo=UTC)
    assert params.stats_range(args(until="2025-03-01"), NOW)[1:] == \
        (until - timedelta(hours=24), until)


def test_stats_filters():
    filters, since, until = params.stats_range(
        args(domain="A.example.com", account="acc", model="m", conversation_id="c",
             since="2025-03-14T09:15:30.5Z", until="2025-03-14T11:05:00Z"), NOW)
    assert filters == UsageFilter(domain="a.example.com", account="acc", model="m",
                                  conversation_id="c")
    assert (since, until) == (datetime(2025, 3, 14, 9, 15, 30, 500000, tzinfo=UTC),
                              datetime(2025, 3, 14, 11, 5, tzinfo=UTC))


def test_stats_since_after_until_is_refused():
    refused(lambda: params.stats_range(args(since="2025-03-02", until="2025-03-01"), NOW),
            "'since'", "later")
    refused(lambda: params.stats_range(args(since="2025-03-15"), NOW), "'since'", "later")
    refused(lambda: params.ratelimit_filter(args(since="1h", until="2h"), NOW), "'since'")
