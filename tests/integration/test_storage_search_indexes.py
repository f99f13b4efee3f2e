"""Migration 0005 on both engines: what text search (`q`) finds in its bounded search text, that
PostgreSQL serves it with the pg_trgm index (and applies without pg_trgm), and that the
accounts view's skip scan of the ledger finds the same (account, domain) pairs as grouping it."""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from app.storage import queries, schema, usage
from app.storage.models import MODELS, RateLimitSample, Request, database_proxy
from tests.databases import fresh_postgres, opened
from tests.factories import insert_requests, message_reply, messages_body, request_row

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def db(database_url):
    with opened(database_url) as database:
        schema.upgrade(database)
        database_proxy.initialize(database)
        with database.bind_ctx(MODELS):
            yield database


def found(text: str) -> set[str]:
    rows, total = queries.list_requests(queries.RequestFilter(text=text), 100, 0)
    assert total == len(rows)
    return {row["id"] for row in rows}


def conversation_body(*turns: str) -> str:
    """A Messages body carrying its history, as Claude Code sends every turn."""
    messages = [{"role": "user" if n % 2 == 0 else "assistant", "content": text}
                for n, text in enumerate(turns)]
    return json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 1024,
                       "system": "You are a careful engineer.", "messages": messages,
                       "tools": [{"name": "Bash", "description": "runs zebrafish commands"}]})


def test_search_looks_in_the_last_message_the_answer_and_the_error(db):
    rows = {
        "first": request_row(request_body=conversation_body("rename the walrus module"),
                             received_at=NOW - timedelta(minutes=3)),
        "later": request_row(request_body=conversation_body(
            "rename the walrus module", "Done.", "now add Pelican tests"),
            received_at=NOW - timedelta(minutes=2)),
        "answer": request_row(response_body=message_reply("the Ocelot answer")),
        "failed": request_row(outcome="failed", status="529", response_body=None,
                              error_message="Overloaded: try the heron later"),
        "plain": request_row(path="/v1/complete", request_body="Human: narwhal?\n\nAssistant:"),
        "escaped": request_row(request_body=messages_body('say "día" on\nits own line')),
        "long": request_row(request_body=messages_body("x" * 5000 + " capybara"),
                            response_body=message_reply("y" * 5000 + " capybara")),
    }
    insert_requests(*rows.values())
    ids = {name: row["id"] for name, row in rows.items()}
    assert found("WALRUS") == {ids["first"]}           # the turn that asked it, not its history
    assert found("pelican tests") == {ids["later"]}
    assert found("ocelot") == {ids["answer"]}
    assert found("heron later") == {ids["failed"]}
    assert found("narwhal") == {ids["plain"]}           # not a Messages body: the text itself
    assert found('"día" on\nits') == {ids["escaped"]}   # stored JSON-escaped
    assert found("capybara") == set()                   # past the bounds of the search text
    assert found("zebrafish") == set()                  # tools and system are not searched
    assert found("careful engineer") == set()
    # A body that is not JSON at all, and one PostgreSQL's jsonb refuses, are still searched.
    broken = request_row(request_body='{"messages": [{"content": "okapi"')
    nul = request_row(request_body='{"messages": [{"content": "quokka \\u0000"}]}')
    insert_requests(broken, nul)
    assert found("okapi") == {broken["id"]}
    assert found("quokka") == {nul["id"]}


@pytest.fixture
def pg_db(postgres_dsn):
    """PostgreSQL alone: SQLite has no search index (a search reads the rows of its range)."""
    with fresh_postgres(postgres_dsn) as url, opened(url) as database:
        schema.upgrade(database)
        database_proxy.initialize(database)
        with database.bind_ctx(MODELS):
            yield database


def test_the_search_index_serves_the_query(pg_db):
    db = pg_db
    insert_requests(*(request_row(request_body=messages_body(f"row {n}")) for n in range(20)))
    db.execute_sql("ANALYZE requests")
    query = queries.page_query(queries.RequestFilter(text="needle in a haystack")).limit(50)
    sql, params = query.sql()
    with db.atomic():
        db.execute_sql("SET LOCAL enable_seqscan = off")  # a table of 20 rows would be scanned
        plan = "\n".join(row[0] for row in db.execute_sql("EXPLAIN " + sql, params).fetchall())
    # Each partition has its own copy of requests_search_trgm, named after the expression.
    assert "Bitmap Index Scan on requests_y" in plan and "_nexus_search_text_idx" in plan, plan


def test_migration_applies_without_pg_trgm(postgres_dsn):
    """A role that may not create extensions: every table and index but the search's, and the
    search still answers (by reading its range)."""
    role = "nexus_limited_" + uuid.uuid4().hex[:8]
    try:
        with fresh_postgres(postgres_dsn) as url:
            _run(postgres_dsn, f'CREATE ROLE "{role}" LOGIN')
            # Tables in public, but no CREATE on the database: no (trusted) extension.
            _run(url, f'GRANT CREATE ON SCHEMA public TO "{role}"')
            with opened(url.replace("postgres@", f"{role}@", 1)) as database:
                assert schema.upgrade(database)[-1] == "0005_search_and_lookup_indexes"
                indexes = {row[0] for row in database.execute_sql(
                    "SELECT indexname FROM pg_indexes WHERE tablename = 'requests'").fetchall()}
                assert "requests_type_received_at" in indexes
                assert "requests_search_trgm" not in indexes
                database_proxy.initialize(database)
                with database.bind_ctx(MODELS):
                    row = request_row(request_body=messages_body("tapir"))
                    insert_requests(row)
                    assert found("TAPIR") == {row["id"]}
    finally:
        # Its database is gone, unless a failure above left it (with the role's grant) behind.
        with contextlib.suppress(psycopg2.Error):
            _run(postgres_dsn, f'DROP ROLE IF EXISTS "{role}"')


def _run(dsn: str, statement: str) -> None:
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(statement)
    finally:
        conn.close()


def sample(account: str | None, domain: str, at: datetime) -> dict:
    return {"account_id": account, "domain": domain, "request_id": str(uuid.uuid4()),
            "sampled_at": at, "headers": {}}


def test_sampled_pairs_match_grouping_the_ledger(db):
    since = NOW - timedelta(days=7)
    samples = [
        sample("acc_a", "one.example.com", NOW - timedelta(hours=1)),
        sample("acc_a", "one.example.com", NOW - timedelta(days=30)),
        sample("acc_a", "two.example.com", NOW - timedelta(days=8)),     # only before `since`
        sample("acc_b", "two.example.com", NOW - timedelta(days=8)),
        sample("acc_b", "two.example.com", since),                        # `since` is included
        sample("acc_b", "one.example.com", NOW),
        sample("acc_c", "one.example.com", NOW - timedelta(days=20)),
        sample(None, "one.example.com", NOW - timedelta(days=1)),
        sample(None, "three.example.com", NOW - timedelta(days=9)),
        sample(None, "two.example.com", NOW - timedelta(minutes=5)),
        sample("", "one.example.com", NOW - timedelta(minutes=5)),
    ]
    RateLimitSample.insert_many(samples).execute()
    grouped = set(RateLimitSample.select(RateLimitSample.account_id, RateLimitSample.domain)
                  .where(RateLimitSample.sampled_at >= since)
                  .group_by(RateLimitSample.account_id, RateLimitSample.domain).tuples())
    pairs = usage.sampled_pairs(since)
    assert len(pairs) == len(set(pairs))
    assert set(pairs) == grouped == {
        ("acc_a", "one.example.com"), ("acc_b", "two.example.com"),
        ("acc_b", "one.example.com"), (None, "one.example.com"), (None, "two.example.com"),
        ("", "one.example.com")}
    assert usage.sampled_pairs(NOW + timedelta(seconds=1)) == []
    # The accounts view: '' and NULL are one unknown account, listed last.
    found = usage.active_accounts(since)
    assert found == {"acc_a": {"one.example.com"}, "acc_b": {"one.example.com", "two.example.com"},
                     None: {"one.example.com", "two.example.com"}}
    assert Request.select().count() == 0
