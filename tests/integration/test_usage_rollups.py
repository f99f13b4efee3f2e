"""The hourly usage roll-ups on both engines: the writer's sink adds exactly the rows it
inserts (a replay counts nothing twice), and migration 0003's backfill of existing rows gives
the very same tables."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from app.storage import schema
from app.storage.models import Request, UsageHourly, UsageToolHourly, bind
from app.storage.partitions import ensure_partitions
from app.storage.sink import make_sink
from tests.databases import opened
from tests.factories import insert_requests, record_requests, request_row

NOW = datetime.now(UTC).replace(microsecond=0)
TOKENS = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
          "cache_creation_5m_tokens", "cache_creation_1h_tokens", "cache_read_input_tokens")


@pytest.fixture
def db(database_url):
    with opened(database_url) as database:
        schema.upgrade(database)
        ensure_partitions(database, months_ahead=0, now=NOW - timedelta(days=40))
        bind(database)
        yield database


def varied_rows(count: int, seed: int = 5) -> list[dict]:
    """Requests over two days of hours, accounts (one missing), domains, models and outcomes."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        write_1h = rng.choice((0, 0, 2048))
        write_5m = rng.choice((0, 300))
        outcome, status = rng.choice((("completed", "200"), ("completed", "200"),
                                      ("completed", "429"), ("failed", "502"),
                                      ("client_disconnected", "client_disconnected")))
        tools = rng.sample(["Bash", "Read", "Edit", "Task"], rng.randint(0, 3))
        rows.append(request_row(
            received_at=NOW - timedelta(minutes=rng.randint(0, 48 * 60)),
            domain=rng.choice(("team.example.com", "solo.example.com")),
            account_id=rng.choice(("acc_a", "acc_b", None)),
            model=rng.choice(("claude-sonnet-4-5", "claude-opus-4-1", None)),
            status=status, outcome=outcome,
            input_tokens=rng.randint(0, 5000), output_tokens=rng.randint(0, 3000),
            cache_creation_input_tokens=write_1h + write_5m, cache_creation_5m_tokens=write_5m,
            cache_creation_1h_tokens=write_1h, cache_read_input_tokens=rng.randint(0, 90000),
            cost_usd=Decimal(rng.randint(0, 9_999_999)) / 1_000_000 if outcome != "failed"
            else None,
            cost_flagged=rng.random() < 0.1, tool_call_count=len(tools), tool_names=tools,
            duration_ms=None if outcome == "failed" else rng.uniform(10, 9000),
            first_token_ms=rng.choice((None, rng.uniform(5, 800)))))
    return rows


def expected(rows: list[dict]) -> tuple[dict, Counter]:
    """The roll-ups computed here from the rows, independently of app.usage.rollup."""
    hours: dict[tuple, Counter] = defaultdict(Counter)
    tools: Counter = Counter()
    for row in rows:
        hour = row["received_at"].replace(minute=0, second=0, microsecond=0)
        key = (hour, row["domain"], row["account_id"] or "", row["model"] or "")
        sums = hours[key]
        sums["request_count"] += 1
        sums["error_count"] += row["outcome"] == "failed" or row["status"] == "429"
        sums["disconnected_count"] += row["outcome"] == "client_disconnected"
        for name in TOKENS:
            sums[name] += row[name]
        sums["cost_microusd"] += int((row["cost_usd"] or 0) * 1_000_000)
        sums["cost_flagged_count"] += row["cost_flagged"]
        sums["tool_call_count"] += row["tool_call_count"]
        sums["duration_count"] += row["duration_ms"] is not None
        sums["first_token_count"] += row["first_token_ms"] is not None
        for name in row["tool_names"]:
            tools[(hour, row["domain"], row["account_id"] or "", name)] += 1
    return hours, tools


def stored() -> tuple[dict, Counter]:
    hours = {}
    for row in UsageHourly.select().dicts():
        key = (row.pop("hour"), row.pop("domain"), row.pop("account_id"), row.pop("model"))
        hours[key] = row
    tools = Counter({(r.hour, r.domain, r.account_id, r.tool_name): r.call_count
                     for r in UsageToolHourly.select()})
    return hours, tools


def assert_rollups_match(rows: list[dict]) -> None:
    want_hours, want_tools = expected(rows)
    got_hours, got_tools = stored()
    assert set(got_hours) == set(want_hours)
    for key, want in want_hours.items():
        got = got_hours[key]
        for name, value in want.items():
            assert got[name] == value, (key, name)
        durations = [r["duration_ms"] or 0 for r in rows if _key(r) == key]
        assert got["duration_ms_sum"] == pytest.approx(sum(durations))
    assert got_tools == want_tools


def _key(row: dict) -> tuple:
    return (row["received_at"].replace(minute=0, second=0, microsecond=0), row["domain"],
            row["account_id"] or "", row["model"] or "")


def test_sink_adds_each_inserted_request_once(db):
    rows = varied_rows(400)
    record_requests(*rows[:250])
    record_requests(*rows[200:])   # 50 replayed rows: inserted nothing, so add nothing
    assert Request.select().count() == 400
    assert_rollups_match(rows)


def test_the_sink_reports_which_rows_it_inserted(db):
    rows = varied_rows(30, seed=9)
    sink = make_sink(db)
    try:
        first = sink.execute(sink.statements([(row, []) for row in rows[:20]]))
        again = sink.execute(sink.statements([(row, []) for row in rows]))
    finally:
        sink.close()
    assert first.inserted == {row["id"] for row in rows[:20]}
    assert again.inserted == {row["id"] for row in rows[20:]}


def test_backfill_of_existing_rows_equals_the_writers_sums(db):
    rows = varied_rows(300, seed=11)
    record_requests(*rows[:150])
    insert_requests(*rows[150:])   # stored before the roll-ups existed
    assert schema.downgrade(db, steps=3) == ["0005_search_and_lookup_indexes",
                                             "0004_conversations", "0003_usage_rollups"]
    assert schema.upgrade(db) == ["0003_usage_rollups", "0004_conversations",
                                  "0005_search_and_lookup_indexes"]
    assert_rollups_match(rows)
