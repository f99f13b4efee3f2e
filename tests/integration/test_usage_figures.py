"""Usage figures end to end (issue 5's acceptance): a mixed run of streamed and plain requests
across two accounts, two domains and three models, with 5-minute and 1-hour cache writes and
cache reads, goes through a real proxy process; every figure the usage API reports equals the
sum computed here from the fake upstream's own log, to the token, and every cost equals a hand
computation from the bundled price file. Two processes on one PostgreSQL agree."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pytest
import requests

from tests.fakes.upstream import Reply
from tests.integration.recording_support import wait_writer, written

DOMAINS = ("team.example.com", "solo.example.com")
ACCOUNTS = ("8f1c0a52-0000-4000-8000-00000000000a", "8f1c0a52-0000-4000-8000-00000000000b")
MODELS = ("claude-sonnet-4-5-20250929", "claude-opus-4-8", "claude-haiku-4-5-20251001")
TOKENS = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
          "cache_creation_5m_tokens", "cache_creation_1h_tokens", "cache_read_input_tokens")
PRICES = json.loads((Path(__file__).parents[2] / "app" / "usage" / "prices.json").read_text(),
                    parse_float=Decimal)


def plan(count: int, seed: int) -> list[tuple[str, dict, Reply]]:
    """(domain, body, reply) for each request: who asks, streamed or not, what usage comes back."""
    rng = random.Random(seed)
    out = []
    for seq in range(count):
        account = rng.choice(ACCOUNTS)
        write_5m, write_1h = rng.choice((0, 0, 1200)), rng.choice((0, 0, 4096))
        usage = {"input_tokens": rng.randint(1, 900), "output_tokens": rng.randint(1, 2500),
                 "cache_read_input_tokens": rng.choice((0, rng.randint(1000, 60000))),
                 "cache_creation_input_tokens": write_5m + write_1h,
                 "cache_creation": {"ephemeral_5m_input_tokens": write_5m,
                                    "ephemeral_1h_input_tokens": write_1h}}
        body = {"model": rng.choice(MODELS), "max_tokens": 4096, "stream": rng.random() < 0.5,
                "metadata": {"user_id": json.dumps({"account_uuid": account,
                                                    "session_id": f"s-{seq}"})},
                "tools": [{"name": "Bash", "input_schema": {"type": "object"}}],
                "messages": [{"role": "user", "content": f"request {seq}"}]}
        out.append((rng.choice(DOMAINS), body, Reply(usage=usage)))
    return out


def send_all(proxy_url: str, upstream, requests_plan: list) -> None:
    def one(item):
        domain, body, _ = item
        answer = requests.post(f"{proxy_url}/v1/messages", json=body, timeout=30,
                               headers={"Host": domain, "x-api-key": "sk-ant-api03-client-k",
                                        "anthropic-version": "2023-06-01",
                                        "x-test-domain": domain})
        assert answer.status_code == 200, answer.text
        assert answer.content  # a stream is read to its end

    # The fake pops replies in arrival order: whichever request gets which usage, its log
    # says which it was, and the sums below come from that log.
    upstream.script(*(reply for _, _, reply in requests_plan))
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, requests_plan))


def cost(usage: dict, model: str) -> Decimal:
    """USD by hand from the price file: tokens times rates per million, rounded per request."""
    rates = PRICES["models"][model]
    split = usage["cache_creation"]
    total = (usage["input_tokens"] * rates["input"] + usage["output_tokens"] * rates["output"]
             + usage["cache_read_input_tokens"] * rates["cache_read"]
             + split["ephemeral_5m_input_tokens"] * rates["cache_write_5m"]
             + split["ephemeral_1h_input_tokens"] * rates["cache_write_1h"])
    return (total / 1_000_000).quantize(Decimal("0.000001"), rounding=ROUND_HALF_EVEN)


def from_log(upstream) -> dict[tuple[str, str, str], Counter]:
    """Sums per (account, domain, model) of what the fake upstream says it answered."""
    sums: dict[tuple[str, str, str], Counter] = defaultdict(Counter)
    for received in upstream.received:
        usage = received.usage
        account = json.loads(received.json["metadata"]["user_id"])["account_uuid"]
        key = (account, received.header("x-test-domain"), received.json["model"])
        figures = sums[key]
        figures["request_count"] += 1
        figures["input_tokens"] += usage["input_tokens"]
        figures["output_tokens"] += usage["output_tokens"]
        figures["cache_creation_input_tokens"] += usage["cache_creation_input_tokens"]
        figures["cache_creation_5m_tokens"] += usage["cache_creation"]["ephemeral_5m_input_tokens"]
        figures["cache_creation_1h_tokens"] += usage["cache_creation"]["ephemeral_1h_input_tokens"]
        figures["cache_read_input_tokens"] += usage["cache_read_input_tokens"]
        figures["cost_microusd"] += int(cost(usage, received.json["model"]) * 1_000_000)
    return sums


def total(sums: dict, account=None, domain=None, model=None) -> Counter:
    out: Counter = Counter()
    for (a, d, m), figures in sums.items():
        if account in (None, a) and domain in (None, d) and model in (None, m):
            out.update(figures)
    return out


def assert_figures(reported: dict, expected: Counter) -> None:
    for name in ("request_count", *TOKENS):
        assert reported[name] == expected[name], (name, reported, expected)
    assert reported["total_tokens"] == sum(expected[name] for name in (
        "input_tokens", "output_tokens", "cache_creation_input_tokens",
        "cache_read_input_tokens"))
    assert round(reported["cost_usd"] * 1_000_000) == expected["cost_microusd"], reported


def get(proxy_url: str, path: str, **params) -> dict:
    answer = requests.get(f"{proxy_url}{path}", params=params, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_usage_api_equals_the_upstreams_log(database_url, start_proxy, upstream):
    proxy = start_proxy(DATABASE_URL=database_url, STORAGE_BATCH_INTERVAL_MS="50")
    run = plan(160, seed=20261129)
    send_all(proxy.url, upstream, run)
    wait_writer(proxy, written(len(run)))
    sums = from_log(upstream)
    assert {received.json["stream"] for received in upstream.received} == {True, False}
    assert total(sums)["cache_creation_1h_tokens"] > 0 and total(sums)["cache_read_input_tokens"]

    # the 5-hour window: per account and domain, per account, per domain, in all
    for account in (*ACCOUNTS, None):
        for domain in (*DOMAINS, None):
            window = get(proxy.url, "/api/usage/window", account=account or "",
                         domain=domain or "", hours=5)
            assert_figures(window, total(sums, account, domain))
            for item in window["models"]:
                assert_figures(item, total(sums, account, domain, item["model"]))
            assert {item["model"] for item in window["models"]} == {
                m for (a, d, m) in sums if account in (None, a) and domain in (None, d)}

    # daily history: one row per day and model (a run crossing midnight spreads over two)
    for account in ACCOUNTS:
        daily = get(proxy.url, "/api/usage/daily", account=account, days=2)
        for model in MODELS:
            rows = [row for row in daily["daily"] if row["model"] == model]
            merged = Counter()
            for row in rows:
                merged.update({name: row[name] for name in ("request_count", *TOKENS)})
            merged["cost_microusd"] = round(sum(row["cost_usd"] for row in rows) * 1_000_000)
            expected = total(sums, account, model=model)
            for name in ("request_count", *TOKENS, "cost_microusd"):
                assert merged[name] == expected[name], (account, model, name)

    # accounts: window over all domains, and per domain
    accounts = {item["account_id"]: item for item in get(proxy.url, "/api/usage/accounts")[
        "accounts"]}
    assert set(accounts) == set(ACCOUNTS)
    for account in ACCOUNTS:
        assert_figures(accounts[account]["window"], total(sums, account))
        for item in accounts[account]["domains"]:
            assert_figures(item["window"], total(sums, account, item["domain"]))

    # overview figures, with their splits
    stats = get(proxy.url, "/api/stats", since="1h")
    assert_figures(stats, total(sums))
    assert stats["error_count"] == 0 and stats["tool_call_count"] == 0
    for item in stats["by_model"]:
        assert_figures(item, total(sums, model=item["model"]))
    for item in stats["by_account"]:
        assert_figures(item, total(sums, account=item["account_id"]))
    for item in stats["by_domain"]:
        assert_figures(item, total(sums, domain=item["domain"]))


def test_two_processes_on_one_postgresql_report_identical_windows(
        postgres_database_url, start_proxy, upstream):
    first = start_proxy(DATABASE_URL=postgres_database_url, STORAGE_BATCH_INTERVAL_MS="50")
    second = start_proxy(DATABASE_URL=postgres_database_url, STORAGE_BATCH_INTERVAL_MS="50")
    run = plan(80, seed=7)
    send_all(first.url, upstream, run[:40])
    send_all(second.url, upstream, run[40:])
    wait_writer(first, written(40))
    wait_writer(second, written(40))
    sums = from_log(upstream)

    def views(proxy) -> list[dict]:
        out = [get(proxy.url, "/api/usage/window", account=account, domain=domain)
               for account in ACCOUNTS for domain in DOMAINS]
        out.append(get(proxy.url, "/api/usage/accounts"))
        return [_timeless(view) for view in out]

    assert views(first) == views(second)
    for account in ACCOUNTS:
        assert_figures(get(second.url, "/api/usage/window", account=account),
                       total(sums, account))


def _timeless(value):
    """The answer without the moment it was asked (`since`/`until` move with the clock)."""
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if k not in ("since", "until")}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


@pytest.fixture
def postgres_database_url(request, tmp_path):
    from tests.databases import engine_url

    with engine_url("postgresql", tmp_path, request) as url:
        yield url
