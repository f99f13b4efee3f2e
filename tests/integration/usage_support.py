"""A usage dataset for the usage API tests, and its figures computed here from the row dicts —
independently of app.usage.rollup and app.storage.usage — to compare the API's answers with."""

from __future__ import annotations

import random
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from app.storage.models import RateLimitSample, database_proxy
from app.storage.rows import SAMPLE
from tests.factories import record_requests, request_row

# Not on any boundary: the window's edges and the stats' partial hours are never trivial.
NOW = datetime(2025, 3, 14, 12, 34, 56, 789012, tzinfo=UTC)
TOKEN_LIMIT = 200_000
ACCOUNTS = ("acc_a", "acc_b", None)
DOMAINS = ("team.example.com", "other.example.com")
MODELS = ("claude-sonnet-4-5", "claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5", None)
TOOLS = ("Bash", "Read", "Edit", "Grep")
OUTCOMES = (("200", "completed"), ("200", "completed"), ("200", "completed"),
            ("429", "completed"), ("529", "completed"), ("502", "failed"), (None, "failed"),
            ("client_disconnected", "client_disconnected"), ("499", "client_disconnected"))
TOKENS = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
          "cache_creation_5m_tokens", "cache_creation_1h_tokens", "cache_read_input_tokens")
CONVERSATIONS = (str(uuid.uuid4()), str(uuid.uuid4()))
ISO = "%Y-%m-%dT%H:%M:%S.%fZ"


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).strftime(ISO)


@dataclass
class UsageData:
    rows: list[dict]
    named: dict[str, dict]
    samples: list[dict]          # with the `id` the database gave them


def build(seed: int = 314) -> UsageData:
    """Write, into the database the models are bound to, about 200 requests over 45 days (none
    between 4 h 58 and 5 h 02 ago), a few named ones for the window edges, and rate-limit
    samples for every account."""
    rng = random.Random(seed)
    rows = [_random_row(rng, _random_age(rng)) for _ in range(200)]
    named = {
        "inside": request_row(received_at=NOW - timedelta(hours=4, minutes=59),
                              account_id="acc_a", output_tokens=777),
        "outside": request_row(received_at=NOW - timedelta(hours=5, minutes=1),
                               account_id="acc_a", output_tokens=555),
        "future": request_row(received_at=NOW + timedelta(minutes=10), account_id="acc_b"),
        "old": request_row(received_at=NOW - timedelta(days=40), account_id="acc_old"),
    }
    rows += named.values()
    samples = _attach_samples(rng, rows)
    record_requests(*rows)  # takes and gives back a connection of its own
    orphans = [_sample(rng, NOW - timedelta(hours=3), "acc_samples_only", "solo.example.com",
                       None),
               _sample(rng, NOW - timedelta(hours=2), "acc_samples_only", "solo.example.com",
                       None)]
    with database_proxy.obj.connection_context():
        RateLimitSample.insert_many(orphans).execute()
        ids = {sample.sampled_at: sample.id for sample in RateLimitSample.select()}
    samples += orphans
    for sample in samples:
        sample["id"] = ids[sample["sampled_at"]]
    for row in rows:
        row.pop(SAMPLE, None)
    return UsageData(rows, named, samples)


def _random_age(rng: random.Random) -> timedelta:
    while True:
        age = timedelta(minutes=rng.choice((rng.uniform(0.5, 300), rng.uniform(300, 3000),
                                            rng.uniform(3000, 45 * 1440))))
        if not timedelta(hours=4, minutes=58) <= age <= timedelta(hours=5, minutes=2):
            return age


def _random_row(rng: random.Random, age: timedelta) -> dict:
    status, outcome = rng.choice(OUTCOMES)
    write_5m, write_1h = rng.choice((0, 0, 1200)), rng.choice((0, 2048))
    tools = [rng.choice(TOOLS) for _ in range(rng.choice((0, 0, 1, 2, 3)))]
    return request_row(
        received_at=NOW - age, domain=rng.choice(DOMAINS), account_id=rng.choice(ACCOUNTS),
        model=rng.choice(MODELS), status=status, outcome=outcome,
        input_tokens=rng.choice((None, rng.randint(1, 9000))),
        output_tokens=rng.randint(0, 4000), cache_creation_input_tokens=write_5m + write_1h,
        cache_creation_5m_tokens=write_5m, cache_creation_1h_tokens=write_1h,
        cache_read_input_tokens=rng.choice((0, rng.randint(1, 120_000))),
        cost_usd=rng.choice((None, Decimal(rng.randint(0, 9_999_999)) / 1_000_000)),
        cost_flagged=rng.random() < 0.15, tool_call_count=len(tools), tool_names=tools,
        # Quarters of a millisecond add up exactly in binary, in any order, on any engine.
        duration_ms=rng.choice((None, rng.randint(40, 400_000) / 4)),
        first_token_ms=rng.choice((None, rng.randint(4, 40_000) / 4)),
        conversation_id=rng.choice((None, *CONVERSATIONS)))


def _attach_samples(rng: random.Random, rows: list[dict]) -> list[dict]:
    samples = []
    for row in rng.sample(rows, 40):
        sample = _sample(rng, row["received_at"] + timedelta(seconds=2), row["account_id"],
                         row["domain"], row["id"])
        row[SAMPLE] = sample
        samples.append(sample)
    return samples


def _sample(rng: random.Random, at: datetime, account: str | None, domain: str,
            request_id: str | None) -> dict:
    used = rng.randint(0, 100) / 100
    return {
        "account_id": account, "domain": domain, "request_id": request_id,
        "sampled_at": at.replace(microsecond=rng.randint(0, 999_999)),
        "headers": [["anthropic-ratelimit-unified-status", "allowed"],
                    ["anthropic-ratelimit-unified-5h-utilization", str(used)]],
        "unified_status": rng.choice(("allowed", "allowed_warning", "rejected")),
        "unified_5h_utilization": used, "unified_5h_reset": at.replace(microsecond=0)
        + timedelta(hours=2), "unified_7d_utilization": 0.5,
        "unified_7d_reset": at.replace(microsecond=0) + timedelta(days=3),
        "unified_representative_claim": "five_hour", "unified_fallback_percentage": 0.5,
        "unified_overage_status": "rejected", "requests_remaining": rng.randint(0, 50),
        "requests_limit": 50, "tokens_remaining": None, "tokens_limit": None}


# --- figures computed from the rows -------------------------------------------------------

def is_error(row: dict) -> bool:
    if row["outcome"] == "failed":
        return True
    return row["outcome"] != "client_disconnected" and row["status"] in ("429", "502", "529")


def microusd(row: dict) -> int:
    cost = row["cost_usd"]
    return 0 if cost is None else int(cost * 1_000_000)


def figures(rows: list[dict]) -> dict:
    """The counters every usage answer shows, as the API must spell them."""
    tokens = {name: sum(row[name] or 0 for row in rows) for name in TOKENS}
    return {"request_count": len(rows), "error_count": sum(map(is_error, rows)), **tokens,
            "total_tokens": tokens["input_tokens"] + tokens["output_tokens"]
            + tokens["cache_creation_input_tokens"] + tokens["cache_read_input_tokens"],
            "cost_usd": round(sum(map(microusd, rows)) / 1_000_000, 6),
            "tool_call_count": sum(row["tool_call_count"] for row in rows)}


def window(rows: list[dict], hours: int = 5, limit: int | None = TOKEN_LIMIT) -> dict:
    """The window figures of the rows received in the `hours` up to NOW."""
    inside = [row for row in rows if NOW - timedelta(hours=hours) <= row["received_at"] <= NOW]
    oldest = min((row["received_at"] for row in inside), default=None)
    counted = figures(inside)
    return {"hours": hours, "since": iso(NOW - timedelta(hours=hours)), "until": iso(NOW),
            **counted, "oldest_request_at": iso(oldest),
            "oldest_leaves_at": iso(oldest + timedelta(hours=hours)) if oldest else None,
            "token_limit": limit,
            "used_percent": round(counted["output_tokens"] / limit * 100, 2) if limit else None}


def none_last(value):
    return (value is None, value or "")


def breakdown(rows: list[dict], name: str) -> list[dict]:
    keys = {row[name] for row in rows}
    items = [{name: key, **figures([row for row in rows if row[name] == key])} for key in keys]
    return sorted(items, key=lambda item: (-item["request_count"], none_last(item[name])))


def stats(rows: list[dict], since: datetime, until: datetime) -> dict:
    """The overview figures of the rows received in [since, until)."""
    inside = [row for row in rows if since <= row["received_at"] < until]
    counted = figures(inside)
    durations = [row["duration_ms"] for row in inside if row["duration_ms"] is not None]
    firsts = [row["first_token_ms"] for row in inside if row["first_token_ms"] is not None]
    return {
        "since": iso(since), "until": iso(until), **counted,
        "disconnected_count": sum(row["outcome"] == "client_disconnected" for row in inside),
        "error_rate": counted["error_count"] / len(inside) if inside else 0,
        "cost_flagged_count": sum(row["cost_flagged"] for row in inside),
        "avg_duration_ms": round(sum(durations) / len(durations), 2) if durations else None,
        "avg_first_token_ms": round(sum(firsts) / len(firsts), 2) if firsts else None,
        "account_count": len({row["account_id"] for row in inside} - {None}),
        "domain_count": len({row["domain"] for row in inside}),
        "model_count": len({row["model"] for row in inside} - {None}),
        "by_model": breakdown(inside, "model"), "by_account": breakdown(inside, "account_id"),
        "by_domain": breakdown(inside, "domain")}


def daily(rows: list[dict], days: int) -> list[dict]:
    today = NOW.date()
    first = today - timedelta(days=days - 1)
    keys = {(row["received_at"].date(), row["model"]) for row in rows
            if first <= row["received_at"].date() <= today}
    items = [{"date": day.isoformat(), "model": model,
              **figures([row for row in rows
                         if row["received_at"].date() == day and row["model"] == model])}
             for day, model in keys]
    return sorted(items, key=lambda item: (item["date"], none_last(item["model"])))


def tool_days(rows: list[dict], days: int) -> Counter:
    today = NOW.date()
    first = today - timedelta(days=days - 1)
    return Counter((row["received_at"].date().isoformat(), row["account_id"], name)
                   for row in rows if first <= row["received_at"].date() <= today
                   for name in row["tool_names"])


def ratelimit(sample: dict | None) -> dict | None:
    """A ledger sample as the API must show it."""
    if sample is None:
        return None
    return {name: iso(value) if isinstance(value, datetime) else value
            for name, value in sample.items()}


def newest_first(samples: list[dict]) -> list[dict]:
    return sorted(samples, key=lambda sample: (sample["sampled_at"], sample["id"]),
                  reverse=True)
