"""The usage API (SPEC §6, §7.3) on SQLite and PostgreSQL through a real socket: windows,
daily history, tools, accounts, the rate-limit ledger and overview figures, each compared with
sums computed here from the rows written (to the token, cost to the micro-dollar)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.storage import close as close_storage
from app.storage import upgrade_on_start
from app.storage.database import is_postgres
from app.storage.models import bind
from app.storage.partitions import ensure_partitions
from app.storage.usage import UsageFilter, raw_query
from tests.factories import insert_requests, record_requests, request_row
from tests.integration import usage_support as expect
from tests.integration.api_support import Server, assert_error, make_app, non_loopback_address
from tests.integration.usage_support import NOW, TOKEN_LIMIT, iso

H = timedelta(hours=1)
TOP = NOW.replace(minute=0, second=0, microsecond=0)


def clocked_app(database_url: str, tmp_path, **settings):
    app = make_app(database_url, tmp_path, **settings)
    app.extensions["nexus.clock"] = lambda: NOW
    return app


@pytest.fixture(scope="module")
def usage_served(api_database_url, tmp_path_factory):
    """An app whose clock stands at NOW, over a database holding the usage dataset."""
    app = clocked_app(api_database_url, tmp_path_factory.mktemp("usage"),
                      ALERT_WINDOW_TOKEN_LIMIT=str(TOKEN_LIMIT))
    upgrade_on_start(app)
    db = app.extensions["nexus.db"]
    with db.connection_context():
        # Monthly partitions for the dataset's months, as a server running then had made.
        ensure_partitions(db, months_ahead=2, now=NOW - timedelta(days=60))
    data = expect.build()
    server = Server(app)
    yield server, data
    server.stop()
    close_storage(app)


@pytest.fixture
def api(usage_served):
    # Other apps (other tests, other modules) rebind the models: point them back at ours.
    bind(usage_served[0].app.extensions["nexus.db"])
    return usage_served[0]


@pytest.fixture
def data(usage_served):
    return usage_served[1]


def answer(server, path: str, **params) -> dict:
    response = server.get(path, params=params)
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    return response.json()


def matching(rows: list[dict], params: dict) -> list[dict]:
    """The rows the filters `params` select, as the API reads them."""
    wanted = {"account": "account_id", "domain": "domain", "model": "model",
              "conversation_id": "conversation_id"}
    out = rows
    for name, column in wanted.items():
        value = params.get(name)
        if value:
            value = value.lower() if name == "domain" else value
            out = [row for row in out if row[column] == value]
    return out


def per_model(rows: list[dict]) -> list[dict]:
    models = sorted({row["model"] for row in rows}, key=expect.none_last)
    return [{"model": model, **expect.figures([row for row in rows if row["model"] == model])}
            for model in models]


# --- /api/usage/window --------------------------------------------------------------------

@pytest.mark.parametrize("params", [
    {},
    {"account": "", "domain": "", "model": ""},
    {"account": "acc_a"},
    {"account": "acc_b"},
    {"domain": "OTHER.example.com"},
    {"model": "claude-opus-4-1", "hours": "48"},
    {"account": "acc_b", "domain": "team.example.com", "hours": "168"},
    {"hours": "1"},
    {"hours": "6"},
    {"account": "nobody"},
])
def test_window_figures_equal_the_rows(api, data, params):
    hours = int(params.get("hours", 5))
    rows = matching(data.rows, params)
    inside = [row for row in rows if NOW - timedelta(hours=hours) <= row["received_at"] <= NOW]
    body = answer(api, "/api/usage/window", **params)
    assert body == {"account_id": params.get("account") or None,
                    "domain": (params.get("domain") or "").lower() or None,
                    "model": params.get("model") or None,
                    **expect.window(rows, hours), "models": per_model(inside)}


def test_window_edges_with_a_fixed_clock(api, data):
    inside, outside, future = (data.named[name] for name in ("inside", "outside", "future"))
    acc_a = matching(data.rows, {"account": "acc_a"})
    counted = [row for row in acc_a if NOW - 5 * H <= row["received_at"] <= NOW]
    assert inside in counted and outside not in counted  # 4 h 59 min and 5 h 1 min old
    body = answer(api, "/api/usage/window", account="acc_a")
    assert body["request_count"] == len(counted)
    assert body["oldest_request_at"] == iso(inside["received_at"])
    assert body["oldest_leaves_at"] == iso(inside["received_at"] + 5 * H)
    assert body["since"] == iso(NOW - 5 * H) and body["until"] == iso(NOW)
    wider = answer(api, "/api/usage/window", account="acc_a", hours="6")
    assert wider["request_count"] == len([row for row in acc_a
                                          if NOW - 6 * H <= row["received_at"] <= NOW])
    assert wider["request_count"] > body["request_count"]
    # A request stamped after the clock's now is not in the window yet.
    acc_b = matching(data.rows, {"account": "acc_b"})
    assert future in acc_b and future["received_at"] > NOW
    last_hour = answer(api, "/api/usage/window", account="acc_b", hours="1")
    assert last_hour["request_count"] == len([row for row in acc_b
                                              if NOW - H <= row["received_at"] <= NOW])


def test_window_used_percent_needs_a_limit(api, data, api_database_url, tmp_path):
    assert answer(api, "/api/usage/window")["token_limit"] == TOKEN_LIMIT
    empty = answer(api, "/api/usage/window", account="nobody")
    assert (empty["request_count"], empty["used_percent"], empty["oldest_request_at"],
            empty["oldest_leaves_at"], empty["models"]) == (0, 0.0, None, None, [])
    app = clocked_app(api_database_url, tmp_path)
    server = Server(app)
    try:
        body = answer(server, "/api/usage/window")
        assert body["token_limit"] is None and body["used_percent"] is None
        assert body == {**body, **expect.window(data.rows, 5, limit=None)}
    finally:
        server.stop()
        close_storage(app)
        bind(api.app.extensions["nexus.db"])


# --- /api/usage/daily and /api/usage/tools ------------------------------------------------

@pytest.mark.parametrize("params", [
    {},
    {"days": "1"},
    {"days": "7", "account": "acc_a"},
    {"days": "366", "domain": "Team.Example.com"},
    {"model": "claude-haiku-4-5"},
    {"account": "acc_b", "domain": "other.example.com", "model": "claude-sonnet-4-5"},
])
def test_daily_history_equals_the_rows(api, data, params):
    days = int(params.get("days", 30))
    rows = matching(data.rows, params)
    first = NOW.date() - timedelta(days=days - 1)
    in_range = [row for row in rows if first <= row["received_at"].date()]
    body = answer(api, "/api/usage/daily", **params)
    assert body == {"days": days, "since": first.isoformat(), "until": NOW.date().isoformat(),
                    "daily": expect.daily(rows, days), "total": len(expect.daily(rows, days)),
                    "totals": expect.figures(in_range)}
    if not params:
        assert body["total"] > 30 and body["totals"]["request_count"] > 100


@pytest.mark.parametrize("params", [{}, {"days": "2"}, {"account": "acc_a"},
                                    {"domain": "other.example.com", "days": "45"}])
def test_tools_per_day_account_and_name(api, data, params):
    days = int(params.get("days", 30))
    calls = expect.tool_days(matching(data.rows, params), days)
    body = answer(api, "/api/usage/tools", **params)
    expected = sorted(({"date": day, "account_id": account, "tool_name": name,
                        "call_count": count} for (day, account, name), count in calls.items()),
                      key=lambda item: (item["date"], expect.none_last(item["account_id"]),
                                        item["tool_name"]))
    assert body["tools"] == expected and body["total"] == len(expected)
    per_tool: dict[str, int] = {}
    for (_, _, name), count in calls.items():
        per_tool[name] = per_tool.get(name, 0) + count
    assert body["totals"] == [{"tool_name": name, "call_count": count} for name, count in
                              sorted(per_tool.items(), key=lambda item: (-item[1], item[0]))]
    assert body["days"] == days and body["until"] == NOW.date().isoformat()
    if not params:
        assert {item["account_id"] for item in body["tools"]} == {"acc_a", "acc_b", None}


# --- /api/usage/accounts ------------------------------------------------------------------

@pytest.mark.parametrize("days", [30, 45, 1])
def test_accounts_with_windows_domains_and_latest_sample(api, data, days):
    span = datetime.combine(NOW.date() - timedelta(days=days - 1), datetime.min.time(), UTC)
    seen: dict[str | None, set[str]] = {}
    recent = [row for row in data.rows if row["received_at"] >= span
              or NOW - timedelta(hours=5) <= row["received_at"] <= NOW]
    for item in recent + [s for s in data.samples if s["sampled_at"] >= span]:
        seen.setdefault(item["account_id"], set()).add(item["domain"])
    expected = []
    for account in sorted(seen, key=expect.none_last):
        mine = [row for row in data.rows if row["account_id"] == account]
        samples = [s for s in data.samples if s["account_id"] == account]
        expected.append({
            "account_id": account,
            "last_request_at": iso(max((row["received_at"] for row in mine), default=None)),
            "window": expect.window(mine),
            "domains": [{"domain": domain,
                         "window": expect.window([r for r in mine if r["domain"] == domain])}
                        for domain in sorted(seen[account])],
            "ratelimit": expect.ratelimit((expect.newest_first(samples) or [None])[0])})
    body = answer(api, "/api/usage/accounts", **({} if days == 30 else {"days": str(days)}))
    assert body == {"accounts": expected, "total": len(expected)}
    names = [item["account_id"] for item in body["accounts"]]
    assert names[-1] is None and "acc_samples_only" in names
    assert ("acc_old" in names) == (days == 45)
    only_samples = body["accounts"][names.index("acc_samples_only")]
    assert only_samples["last_request_at"] is None
    assert only_samples["window"]["request_count"] == 0
    assert only_samples["ratelimit"]["sampled_at"] == iso(data.samples[-1]["sampled_at"])


# --- /api/ratelimits ----------------------------------------------------------------------

def test_ratelimits_newest_first_with_every_column(api, data):
    body = answer(api, "/api/ratelimits")
    ordered = expect.newest_first(data.samples)
    assert body == {"ratelimits": [expect.ratelimit(s) for s in ordered], "total": len(ordered),
                    "limit": 50, "offset": 0}
    assert set(body["ratelimits"][0]) == {
        "id", "account_id", "domain", "request_id", "sampled_at", "unified_status",
        "unified_5h_utilization", "unified_5h_reset", "unified_7d_utilization",
        "unified_7d_reset", "unified_representative_claim", "unified_fallback_percentage",
        "unified_overage_status", "requests_remaining", "requests_limit", "tokens_remaining",
        "tokens_limit", "headers"}


def test_ratelimits_paging_walks_every_sample_once(api, data):
    seen = []
    for offset in range(0, len(data.samples) + 7, 7):
        body = answer(api, "/api/ratelimits", limit="7", offset=str(offset))
        assert body["total"] == len(data.samples)
        assert (body["limit"], body["offset"]) == (7, offset)
        seen += [item["id"] for item in body["ratelimits"]]
    assert seen == [sample["id"] for sample in expect.newest_first(data.samples)]


@pytest.mark.parametrize("params", [
    {"account": "acc_a"},
    {"account": "acc_samples_only"},
    {"domain": "OTHER.example.com"},
    {"account": "acc_b", "domain": "team.example.com"},
    {"since": "24h"},
    {"since": "7d", "until": "1d"},
    {"since": iso(NOW - timedelta(days=3, minutes=7)), "until": iso(NOW - timedelta(hours=2))},
    {"account": "nobody"},
])
def test_ratelimit_filters(api, data, params):
    since = {"24h": NOW - timedelta(hours=24), "7d": NOW - timedelta(days=7)}.get(
        params.get("since", ""), None)
    until = {"1d": NOW - timedelta(days=1)}.get(params.get("until", ""), None)
    if since is None and "since" in params:
        since = datetime.fromisoformat(params["since"])
    if until is None and "until" in params:
        until = datetime.fromisoformat(params["until"])
    wanted = [s for s in expect.newest_first(data.samples)
              if s["account_id"] == params.get("account", s["account_id"])
              and s["domain"] == params.get("domain", s["domain"]).lower()
              and (since is None or s["sampled_at"] >= since)
              and (until is None or s["sampled_at"] < until)]
    body = answer(api, "/api/ratelimits", **params)
    assert [item["id"] for item in body["ratelimits"]] == [s["id"] for s in wanted]
    assert body["total"] == len(wanted)


# --- /api/stats ---------------------------------------------------------------------------

@pytest.mark.parametrize("since, until", [
    (NOW - timedelta(hours=50, minutes=17, seconds=3.5), NOW - timedelta(hours=1, minutes=7)),
    (NOW - timedelta(days=40, minutes=-13), NOW + H),         # the future request included
    (NOW - timedelta(minutes=20), NOW - timedelta(minutes=5)),  # inside one hour
    (TOP - timedelta(minutes=30), TOP + timedelta(minutes=10)),  # two partial hours, no whole
    (TOP - 10 * H, TOP - 2 * H),                                # whole hours only
    (TOP - 30 * H, NOW),                                        # whole hours, then a partial
    (NOW - 300 * H, TOP - 3 * H),                               # a partial, then whole hours
    (NOW - 3 * H, NOW - 3 * H),                                 # empty
])
def test_stats_over_any_range_equal_the_rows(api, data, since, until):
    body = answer(api, "/api/stats", since=iso(since), until=iso(until))
    assert body == expect.stats(data.rows, since, until)


def test_stats_default_to_the_last_24_hours(api, data):
    body = answer(api, "/api/stats")
    assert body == expect.stats(data.rows, NOW - 24 * H, NOW)
    assert body["request_count"] > 10 and body["error_count"] > 0
    assert body["disconnected_count"] > 0 and body["cache_read_input_tokens"] > 0
    assert answer(api, "/api/stats", since="7d") == expect.stats(data.rows, NOW - 7 * 24 * H, NOW)
    until = NOW - 48 * H
    assert answer(api, "/api/stats", until=iso(until)) == \
        expect.stats(data.rows, until - 24 * H, until)


@pytest.mark.parametrize("params", [
    {"domain": "TEAM.example.com"},
    {"account": "acc_a"},
    {"model": "claude-opus-4-1"},
    {"account": "acc_b", "domain": "other.example.com", "model": "claude-sonnet-4-5"},
    {"conversation_id": expect.CONVERSATIONS[0]},
    {"conversation_id": expect.CONVERSATIONS[1], "account": "acc_a"},
])
def test_stats_filters(api, data, params):
    since, until = NOW - timedelta(days=20, minutes=41), NOW - timedelta(minutes=3)
    body = answer(api, "/api/stats", since=iso(since), until=iso(until), **params)
    assert body == expect.stats(matching(data.rows, params), since, until)
    assert body["request_count"] > 0


def test_stats_read_whole_hours_from_the_rollup(database_url, tmp_path):
    """Requests inserted behind the writer's back (no roll-up) count only in partial hours or
    by conversation: proof that whole hours come from `usage_hourly`, edges from raw rows."""
    app = clocked_app(database_url, tmp_path)
    upgrade_on_start(app)
    db = app.extensions["nexus.db"]
    with db.connection_context():
        ensure_partitions(db, months_ahead=0, now=NOW)
        recorded = request_row(received_at=TOP - 3 * H + timedelta(minutes=5), output_tokens=10)
        hidden = request_row(received_at=TOP - 2 * H + timedelta(minutes=5), output_tokens=100,
                             conversation_id="conv-1")
        edge = request_row(received_at=TOP + timedelta(minutes=5), output_tokens=1000)
        insert_requests(hidden, edge)
    record_requests(recorded)
    server = Server(app)
    try:
        since = iso(TOP - 4 * H + timedelta(minutes=30))
        body = answer(server, "/api/stats", since=since)
        assert (body["request_count"], body["output_tokens"]) == (2, 1010)
        by_conversation = answer(server, "/api/stats", since=since, conversation_id="conv-1")
        assert (by_conversation["request_count"], by_conversation["output_tokens"]) == (1, 100)
    finally:
        server.stop()
        close_storage(app)


# --- index use, parameters and access -----------------------------------------------------

@pytest.mark.parametrize("filters, sqlite_index, pg_index", [
    (UsageFilter(), "requests_received_at", "_received_at_idx"),
    # Either account index: (account_id, model, received_at) also hands rows over in model order.
    (UsageFilter(account="acc_a"), "requests_account_", "_account_id_"),
    (UsageFilter(domain="team.example.com"), "requests_domain_received_at",
     "_domain_received_at_idx"),
    (UsageFilter(model="claude-opus-4-1"), "requests_model_received_at",
     "_model_received_at_idx"),
    (UsageFilter(conversation_id="c"), "requests_conversation_received_at",
     "_conversation_id_received_at_idx"),
])
def test_raw_figures_use_the_indexes(api, filters, sqlite_index, pg_index):
    db = api.app.extensions["nexus.db"]
    # A month: wide enough that a filter's own index is worth more than the time index.
    sql, params = raw_query(NOW - 30 * 24 * H, NOW, filters, ("model",)).sql()
    with db.connection_context(), db.atomic():
        if is_postgres(db):
            db.execute_sql("SET LOCAL enable_seqscan = off")  # a small table: see the choice
            plan, index = db.execute_sql("EXPLAIN " + sql, params).fetchall(), pg_index
        else:
            plan = db.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall()
            index = sqlite_index
    text = " ".join(str(part) for line in plan for part in line)
    assert index in text, text


@pytest.mark.parametrize("path, params, name", [
    ("/api/usage/window", {"hours": "0"}, "hours"),
    ("/api/usage/window", {"hours": "169"}, "hours"),
    ("/api/usage/window", {"days": "3"}, "days"),
    ("/api/usage/daily", {"days": "367"}, "days"),
    ("/api/usage/daily", {"days": "x"}, "days"),
    ("/api/usage/tools", {"model": "m"}, "model"),
    ("/api/usage/accounts", {"account": "acc_a"}, "account"),
    ("/api/usage/accounts", {"days": ["1", "2"]}, "days"),
    ("/api/ratelimits", {"since": "yesterday"}, "since"),
    ("/api/ratelimits", {"limit": "-1"}, "limit"),
    ("/api/stats", {"since": "2025-03-02", "until": "2025-03-01"}, "since"),
    ("/api/stats", {"until": "13 o'clock"}, "until"),
    ("/api/stats", {"q": "x"}, "q"),
])
def test_bad_parameters_are_400(api, path, params, name):
    assert_error(api.get(path, params=params), 400, "invalid_request_error", f"'{name}'")


def test_strangers_get_401_without_a_key(api):
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to call from")
    for path in ("/api/usage/window", "/api/stats", "/api/ratelimits"):
        response = api.get(path, host=address)
        assert_error(response, 401, "authentication_error", "DASHBOARD_API_KEY")
