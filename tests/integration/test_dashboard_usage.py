"""The dashboard's usage charts and pages (SPEC §7.2) on SQLite and PostgreSQL, through the Flask
test client (a loopback client: no login configured).

The ECharts options each page embeds are parsed back and their series compared with sums
computed here from the rows written: the overview's hourly series, the daily history, the
per-model pie, the tools, the window gauges; the ledger's order and pages; the filters; the
empty states; and no asset from another host.
"""

from __future__ import annotations

import json
import random
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html.parser import HTMLParser

import pytest

from app.storage import close as close_storage
from app.storage import upgrade_on_start
from app.storage.models import RateLimitSample, bind, database_proxy
from tests.factories import record_requests, request_row
from tests.integration.api_support import make_app

NOW = datetime(2025, 3, 14, 12, 34, 56, 789012, tzinfo=UTC)
TOP = NOW.replace(minute=0, second=0, microsecond=0)
LIMIT = 20_000
ACCOUNTS = ("acc_a", "acc_b", None)
DOMAINS = ("team.example.com", "other.example.com")
MODELS = ("claude-sonnet-4-5", "claude-opus-4-1", None)
TOOLS = ("Bash", "Read", "Edit")
KINDS = {"Input": "input_tokens", "Output": "output_tokens",
         "Cache write": "cache_creation_input_tokens", "Cache read": "cache_read_input_tokens"}
LEDGER_ACCOUNT = "acc_ledger"
LEDGER_SAMPLES = 30


# --- the dataset ---------------------------------------------------------------------------

def _row(rng: random.Random, age: timedelta, **fixed) -> dict:
    write = rng.choice((0, 1200))
    tools = [rng.choice(TOOLS) for _ in range(rng.choice((0, 1, 2)))]
    values = dict(
        received_at=NOW - age, domain=rng.choice(DOMAINS), account_id=rng.choice(ACCOUNTS),
        model=rng.choice(MODELS), input_tokens=rng.randint(1, 5000),
        output_tokens=rng.randint(0, 3000), cache_creation_input_tokens=write,
        cache_creation_5m_tokens=write, cache_read_input_tokens=rng.choice((0, 40_000)),
        cost_usd=Decimal(rng.randint(0, 999_999)) / 1_000_000, tool_call_count=len(tools),
        tool_names=tools)
    values.update(fixed)
    return request_row(**values)


def build_rows() -> list[dict]:
    """Requests over 40 days: many in the last 23 hours (the overview's hours), some in the
    5-hour window, older ones, one outside 30 days; none in the future."""
    rng = random.Random(7)
    rows = [_row(rng, timedelta(minutes=rng.uniform(1, 23 * 60))) for _ in range(60)]
    rows += [_row(rng, timedelta(days=rng.uniform(1.2, 28))) for _ in range(40)]
    rows.append(_row(rng, timedelta(days=40), account_id="acc_old"))
    # Every account of ACCOUNTS has a request in the window.
    rows += [_row(rng, timedelta(minutes=30), account_id=account) for account in ACCOUNTS]
    return rows


def build_samples() -> list[dict]:
    """acc_a: the newest says 42 % with its reset ahead; acc_b: its reset passed; and a long
    ledger of one more account."""
    def sample(account, at, used, reset, status="allowed", domain="team.example.com"):
        return {"account_id": account, "domain": domain, "request_id": None, "sampled_at": at,
                "headers": [["anthropic-ratelimit-unified-status", status]],
                "unified_status": status, "unified_5h_utilization": used,
                "unified_5h_reset": reset, "unified_7d_utilization": 0.25,
                "unified_7d_reset": at + timedelta(days=3), "requests_remaining": 40,
                "requests_limit": 50}

    samples = [sample("acc_a", NOW - timedelta(hours=2), 0.30, NOW + timedelta(hours=2)),
               sample("acc_a", NOW - timedelta(hours=1), 0.42, NOW + timedelta(hours=3),
                      "allowed_warning"),
               sample("acc_b", NOW - timedelta(hours=4), 0.90, NOW - timedelta(hours=1),
                      "rejected", "other.example.com")]
    samples += [sample(LEDGER_ACCOUNT, NOW - timedelta(minutes=10 * i), i / 100,
                       NOW + timedelta(hours=1), domain="ledger.example.com")
                for i in range(1, LEDGER_SAMPLES + 1)]
    return samples


def clocked_app(database_url: str, tmp_path, **settings):
    app = make_app(database_url, tmp_path, **settings)
    app.extensions["nexus.clock"] = lambda: NOW
    return app


@pytest.fixture(scope="module")
def dashboard_data(api_database_url, tmp_path_factory):
    """The dataset written once per engine; an app with ALERT_WINDOW_TOKEN_LIMIT and one
    without over it."""
    limited = clocked_app(api_database_url, tmp_path_factory.mktemp("limited"),
                          ALERT_WINDOW_TOKEN_LIMIT=str(LIMIT))
    upgrade_on_start(limited)
    rows, samples = build_rows(), build_samples()
    record_requests(*rows)
    with database_proxy.obj.connection_context():
        RateLimitSample.insert_many(samples).execute()
        ids = {(s.account_id, s.sampled_at): s.id for s in RateLimitSample.select()}
    for item in samples:
        item["id"] = ids[(item["account_id"], item["sampled_at"])]
    plain = clocked_app(api_database_url, tmp_path_factory.mktemp("plain"))
    yield {"limited": limited, "plain": plain, "rows": rows, "samples": samples}
    close_storage(plain)
    close_storage(limited)


@pytest.fixture
def data(dashboard_data):
    # Other apps (other tests, other modules) rebind the models: point them back at ours.
    bind(dashboard_data["limited"].extensions["nexus.db"])
    return dashboard_data


def page(app, path: str) -> Page:
    response = app.test_client().get(path)
    assert response.status_code == 200, response.get_data(as_text=True)[:2000]
    return Page(response.get_data(as_text=True))


# --- reading the HTML back -----------------------------------------------------------------

class Page(HTMLParser):
    """The chart options, gauge cards, ledger rows and links of a rendered page."""

    def __init__(self, html: str):
        super().__init__()
        self.html = html
        self.charts: dict[str, dict] = {}
        self.chart_divs: list[str] = []
        self.gauges: list[dict] = []
        self.samples: list[str] = []
        self.links: list[str] = []
        self._script: str | None = None
        self._text: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("type") == "application/json":
            self._script, self._text = attrs["id"], []
        if "data-options" in attrs:
            self.chart_divs.append(attrs["data-options"])
        if "data-mode" in attrs:
            self.gauges.append(attrs)
        if "data-sample" in attrs:
            self.samples.append(attrs["data-sample"])
        if tag == "a":
            self.links.append(attrs.get("href", ""))

    def handle_data(self, data):
        if self._script is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "script" and self._script is not None:
            self.charts[self._script] = json.loads("".join(self._text))
            self._script = None

    def series(self, chart_id: str) -> dict[str, list]:
        return {item["name"]: item["data"] for item in self.charts[chart_id]["series"]}

    def pie(self, chart_id: str) -> dict[str, float]:
        return {item["name"]: item["value"] for item in self.charts[chart_id]["series"][0]["data"]}

    def sums(self, chart_id: str) -> dict[str, float]:
        return {name: sum(_value(point) for point in values)
                for name, values in self.series(chart_id).items()}


def _value(point) -> float:
    # A bar's point is its value; a line's, as pyecharts writes it, is [category, value].
    if isinstance(point, dict):
        return point["value"]
    return point[-1] if isinstance(point, list) else point


# --- expected figures, from the rows ---------------------------------------------------------

def total_tokens(row: dict) -> int:
    return (row["input_tokens"] + row["output_tokens"] + row["cache_creation_input_tokens"]
            + row["cache_read_input_tokens"])


def microusd(row: dict) -> int:
    return int(row["cost_usd"] * 1_000_000)


def label(column: str, value) -> str:
    if value is None:
        return {"account_id": "(no account)", "model": "(unknown model)"}[column]
    return value


def per(rows: list[dict], column: str, metric) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in rows:
        name = label(column, row[column])
        out[name] = out.get(name, 0) + metric(row)
    return out


def last_hours(rows: list[dict]) -> list[dict]:
    first = TOP - timedelta(hours=23)
    return [row for row in rows if first <= row["received_at"] < TOP + timedelta(hours=1)]


def last_days(rows: list[dict], days: int) -> list[dict]:
    first = NOW.date() - timedelta(days=days - 1)
    return [row for row in rows if first <= row["received_at"].date() <= NOW.date()]


def in_window(rows: list[dict]) -> list[dict]:
    return [row for row in rows if NOW - timedelta(hours=5) <= row["received_at"] <= NOW]


# --- the overview ---------------------------------------------------------------------------

def test_overview_hourly_series_add_up_to_the_rows(data):
    shown = page(data["limited"], "/dashboard/")
    rows = last_hours(data["rows"])
    assert len(rows) == 63
    for column in ("domain", "account_id", "model"):
        tokens = shown.charts[f"overview-tokens-{column}"]
        assert len(tokens["xAxis"][0]["data"]) == 24
        assert tokens["xAxis"][0]["data"][-1] == "12:00"
        assert tokens["xAxis"][0]["data"][0] == "13:00"
        assert shown.sums(f"overview-tokens-{column}") == per(rows, column, total_tokens)
        assert shown.sums(f"overview-requests-{column}") == per(rows, column, lambda r: 1)
        assert {item["stack"] for item in tokens["series"]} == {"total"}
    kinds = shown.sums("overview-kinds")
    assert kinds == {name: sum(row[column] for row in rows) for name, column in KINDS.items()}
    # Each hour in its place: the current hour last.
    requests = shown.series("overview-requests-domain")
    for hours_ago in (0, 5, 23):
        hour = TOP - timedelta(hours=hours_ago)
        expected = sum(1 for row in rows if hour <= row["received_at"] < hour + timedelta(hours=1))
        assert sum(values[23 - hours_ago] for values in requests.values()) == expected
    # Every embedded chart is drawn by a div naming it.
    assert set(shown.chart_divs) == set(shown.charts)


def test_overview_gauges_show_the_window_against_the_limit(data):
    shown = page(data["limited"], "/dashboard/")
    window = in_window(data["rows"])
    gauges = {gauge["data-account"]: gauge for gauge in shown.gauges}
    # acc_ledger has samples in the window but no request: still an active account.
    assert set(gauges) == {"acc_a", "acc_b", "(no account)", LEDGER_ACCOUNT}
    for account in (*ACCOUNTS, LEDGER_ACCOUNT):
        output = sum(row["output_tokens"] for row in window if row["account_id"] == account)
        name = label("account_id", account)
        assert gauges[name]["data-mode"] == "limit"
        chart_id = f"overview-gauge-{list(gauges).index(name) + 1}"
        point = shown.charts[chart_id]["series"][0]["data"][0]
        assert point == {"name": name, "value": round(output / LIMIT * 100, 2)}
        assert shown.charts[chart_id]["series"][0]["type"] == "gauge"


def test_overview_gauges_fall_back_on_the_upstream_utilization(data):
    shown = page(data["plain"], "/dashboard/")
    gauges = {gauge["data-account"]: gauge for gauge in shown.gauges}
    # acc_ledger has samples in the window but no request: still an active account.
    assert set(gauges) == {"acc_a", "acc_b", "(no account)", LEDGER_ACCOUNT}
    assert gauges["acc_a"]["data-mode"] == "upstream"
    gauge_ids = [name for name in shown.chart_divs if name.startswith("overview-gauge-")]
    assert len(gauge_ids) == 2  # acc_a and acc_ledger; acc_b's reset passed, no sample for None
    values = {shown.charts[i]["series"][0]["data"][0]["name"]:
              shown.charts[i]["series"][0]["data"][0]["value"] for i in gauge_ids}
    assert values == {"acc_a": 42.0, LEDGER_ACCOUNT: 1.0}  # the newest sample of each
    assert gauges["acc_b"]["data-mode"] == "number"
    assert gauges["(no account)"]["data-mode"] == "number"
    output = sum(row["output_tokens"] for row in in_window(data["rows"])
                 if row["account_id"] == "acc_b")
    assert f'<div class="gauge-number">{output:,}</div>' in shown.html


# --- the usage page -------------------------------------------------------------------------

def test_usage_page_daily_history_models_and_tools_add_up(data):
    shown = page(data["limited"], "/dashboard/usage")
    rows = last_days(data["rows"], 30)
    assert len(rows) == len(data["rows"]) - 1  # the 40-day-old row is out
    daily = shown.charts["usage-daily"]
    days = daily["xAxis"][0]["data"]
    assert len(days) == 30 and days[-1] == "2025-03-14" and days[0] == "2025-02-13"
    sums = shown.sums("usage-daily")
    cost = sums.pop("Cost (USD)")
    assert sums == {name: sum(row[column] for row in rows) for name, column in KINDS.items()}
    assert round(cost, 6) == round(sum(map(microusd, rows)) / 1_000_000, 6)
    # One point per day, in place.
    for offset in (0, 3):
        day = NOW.date() - timedelta(days=offset)
        expected = sum(row["output_tokens"] for row in rows if row["received_at"].date() == day)
        assert shown.series("usage-daily")["Output"][29 - offset] == expected
    cost_series = next(s for s in daily["series"] if s["name"] == "Cost (USD)")
    assert cost_series["type"] == "line" and cost_series["yAxisIndex"] == 1

    assert shown.pie("usage-models") == per(rows, "model", total_tokens)
    tools: dict[str, int] = {}
    for row in rows:
        for name in row["tool_names"]:
            tools[name] = tools.get(name, 0) + 1
    bars = shown.charts["usage-tools"]
    assert dict(zip(bars["yAxis"][0]["data"], bars["series"][0]["data"], strict=True)) == tools
    assert f"{sum(tools.values()):,} calls" in shown.html


def test_usage_page_window_table_and_gauges(data):
    shown = page(data["limited"], "/dashboard/usage")
    window = in_window(data["rows"])
    gauges = {gauge["data-account"] for gauge in shown.gauges}
    assert gauges == {"acc_a", "acc_b", "(no account)"}
    section = shown.html[shown.html.index('id="window"'):shown.html.index('id="daily"')]
    for account in ACCOUNTS:
        for domain in DOMAINS:
            mine = [r for r in window if r["account_id"] == account and r["domain"] == domain]
            if mine:
                oldest = min(r["received_at"] for r in mine) + timedelta(hours=5)
                assert oldest.strftime("%H:%M UTC") in section
    outputs = sum(row["output_tokens"] for row in window if row["account_id"] == "acc_a")
    assert f"{outputs:,} of {LIMIT:,} output tokens" in section


def test_usage_ledger_newest_first_with_pages(data):
    samples = sorted((s for s in data["samples"] if s["sampled_at"].date() >= NOW.date()
                      - timedelta(days=29)),
                     key=lambda s: (s["sampled_at"], s["id"]), reverse=True)
    first = page(data["limited"], "/dashboard/usage")
    assert first.samples == [str(s["id"]) for s in samples[:25]]
    assert f"{len(samples)} samples, newest first" in first.html
    assert "/dashboard/usage?page=2#ledger" in first.links
    second = page(data["limited"], "/dashboard/usage?page=2")
    assert second.samples == [str(s["id"]) for s in samples[25:50]]
    assert "/dashboard/usage?page=1#ledger" in second.links
    newest = samples[0]
    assert newest["sampled_at"].strftime("%Y-%m-%d %H:%M:%S") in first.html
    # The status badge and utilizations of the row.
    row = first.html[first.html.index(f'data-sample="{newest["id"]}"'):]
    row = row[:row.index("</tr>")]
    assert f'class="badge {newest["unified_status"]}"' in row
    assert f'{newest["unified_5h_utilization"] * 100:.0f}%' in row and "25%" in row


def test_usage_filters_narrow(data):
    rows = data["rows"]
    shown = page(data["limited"], "/dashboard/usage?account=acc_b")
    mine = [r for r in last_days(rows, 30) if r["account_id"] == "acc_b"]
    assert shown.sums("usage-daily")["Output"] == sum(r["output_tokens"] for r in mine)
    assert {g["data-account"] for g in shown.gauges} == {"acc_b"}
    assert shown.samples == [str(s["id"]) for s in data["samples"] if s["account_id"] == "acc_b"]
    assert '<option value="acc_b" selected>' in shown.html

    shown = page(data["limited"], "/dashboard/usage?domain=OTHER.example.com&days=7")
    mine = [r for r in last_days(rows, 7) if r["domain"] == "other.example.com"]
    assert len(shown.charts["usage-daily"]["xAxis"][0]["data"]) == 7
    assert shown.sums("usage-daily")["Input"] == sum(r["input_tokens"] for r in mine)
    assert shown.pie("usage-models") == per(mine, "model", total_tokens)
    assert "/dashboard/usage?page=2" not in " ".join(shown.links)

    shown = page(data["limited"], "/dashboard/usage?days=1")
    today = [r for r in rows if r["received_at"].date() == NOW.date()]
    assert shown.sums("usage-daily")["Cache read"] == sum(r["cache_read_input_tokens"]
                                                          for r in today)
    # Unusable values fall back to their defaults.
    shown = page(data["limited"], "/dashboard/usage?days=soon&page=-3&account=")
    assert len(shown.charts["usage-daily"]["xAxis"][0]["data"]) == 30

    shown = page(data["limited"], "/dashboard/usage?account=nobody")
    assert "Nothing recorded for these filters" in shown.html and not shown.charts


# --- the accounts page ----------------------------------------------------------------------

def test_accounts_page_lists_accounts_with_their_state(data):
    shown = page(data["plain"], "/dashboard/accounts")
    window = in_window(data["rows"])
    names = re.findall(r'<h2>(?:<a href="[^"]*">)?([^<]+)', shown.html)
    assert names == ["acc_a", "acc_b", LEDGER_ACCOUNT, "(no account)"]  # acc_old: 40 days ago
    assert "/dashboard/usage?account=acc_a" in shown.links
    assert "/dashboard/usage?account=acc_b&domain=other.example.com" in shown.links
    card = shown.html[shown.html.index('id="account-1"'):shown.html.index('id="account-2"')]
    assert 'class="badge allowed_warning"' in card and "42%" in card
    last = max(r["received_at"] for r in data["rows"] if r["account_id"] == "acc_a")
    assert last.strftime("%Y-%m-%d %H:%M UTC") in card
    count = sum(1 for r in window if r["account_id"] == "acc_a")
    assert f"{count} requests" in card
    card_b = shown.html[shown.html.index('id="account-2"'):shown.html.index('id="account-3"')]
    assert 'class="badge rejected"' in card_b
    gauges = {g["data-account"]: g["data-mode"] for g in shown.gauges}
    assert gauges == {"acc_a": "upstream", "acc_b": "number", LEDGER_ACCOUNT: "upstream",
                      "(no account)": "number"}


def test_accounts_days_narrow(data):
    shown = page(data["plain"], "/dashboard/accounts?days=60")
    assert "acc_old" in shown.html


# --- empty states and assets ----------------------------------------------------------------

def test_empty_database_shows_how_to_start(database_url, tmp_path):
    app = clocked_app(database_url, tmp_path)
    try:
        upgrade_on_start(app)
        for path in ("/dashboard/", "/dashboard/usage", "/dashboard/accounts",
                     "/dashboard/usage?account=acc_a&days=7"):
            shown = page(app, path)
            assert "export ANTHROPIC_BASE_URL=http://localhost" in shown.html, path
            assert not shown.charts, path
    finally:
        close_storage(app)


def test_pages_load_nothing_from_another_host(data):
    remote = re.compile(r'<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*"(?:https?:)?//',
                        re.IGNORECASE)
    for app in (data["limited"], data["plain"]):
        for path in ("/dashboard/", "/dashboard/usage", "/dashboard/usage?page=2",
                     "/dashboard/accounts"):
            shown = page(app, path)
            assert not remote.search(shown.html), path
            assert shown.charts or path.endswith("accounts")
            for options in shown.charts.values():
                assert "http" not in json.dumps(options), path
            assert "vendor/echarts.min.js" in shown.html


def test_hostile_names_stay_text(database_url, tmp_path):
    hostile = '</script><script>alert("x")</script>'
    app = clocked_app(database_url, tmp_path, ALERT_WINDOW_TOKEN_LIMIT="1000")
    try:
        upgrade_on_start(app)
        record_requests(request_row(received_at=NOW - timedelta(minutes=5), account_id=hostile,
                                    model=hostile, output_tokens=250, tool_call_count=1,
                                    tool_names=[hostile]))
        for path in ("/dashboard/", "/dashboard/usage", "/dashboard/accounts"):
            shown = page(app, path)
            assert '<script>alert("x")' not in shown.html, path
            assert shown.charts, path
            # Parsed back, the name is intact in the options (as a series or data name).
            assert json.dumps(hostile) in json.dumps(list(shown.charts.values())), path
        shown = page(app, "/dashboard/")
        assert {g["data-account"] for g in shown.gauges} == {hostile}
        assert shown.sums("overview-tokens-account_id") == {hostile: 12 + 250}
    finally:
        close_storage(app)
