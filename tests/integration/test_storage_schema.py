"""The storage schema on SQLite and PostgreSQL: migrations, partitions, models, start-up."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from app import create_app
from app.storage import schema, upgrade_on_start
from app.storage.database import StorageError, is_postgres
from app.storage.models import MODELS, DashboardUser, RateLimitSample, Request, RequestChunk
from app.storage.partitions import (
    add_months,
    drop_partitions_before,
    ensure_partitions,
    month_start,
    partition_name,
    partitions,
)
from tests.databases import fresh_postgres, opened
from tests.support import free_port

TABLES = {"requests", "request_chunks", "ratelimit_samples", "dashboard_users"}
INDEXES = {
    "requests": {"requests_received_at", "requests_domain_received_at",
                 "requests_account_received_at", "requests_conversation_received_at",
                 "requests_model_received_at", "requests_session",
                 "requests_current_message_hash", "requests_parent_message_hash",
                 "requests_type_received_at", "requests_account_model_received_at"},
    "ratelimit_samples": {"ratelimit_samples_sampled_at", "ratelimit_samples_account_sampled_at",
                          "ratelimit_samples_domain_sampled_at", "ratelimit_samples_request",
                          "ratelimit_samples_pair_sampled_at"},
}
SEARCH_INDEX = "requests_search_trgm"  # PostgreSQL only (pg_trgm)
MIGRATIONS = ["0001_initial", "0002_ratelimit_request", "0003_usage_rollups",
              "0004_conversations", "0005_search_and_lookup_indexes"]


@pytest.fixture
def db(database_url):
    with opened(database_url) as database:
        yield database


@pytest.fixture
def pg(postgres_dsn):
    """An empty PostgreSQL database, with the schema applied."""
    with fresh_postgres(postgres_dsn) as url, opened(url) as database:
        schema.upgrade(database)
        yield database


def columns(db, table: str) -> set[str]:
    return {column.name for column in db.get_columns(table)}


def index_names(db, table: str) -> set[str]:
    if is_postgres(db):
        sql = "SELECT indexname FROM pg_indexes WHERE tablename = %s"
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?"
    return {name for (name,) in db.execute_sql(sql, (table,)).fetchall()}


def primary_key(db, table: str) -> list[str]:
    if not is_postgres(db):
        return db.get_primary_keys(table)
    cursor = db.execute_sql(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary "
        "ORDER BY array_position(i.indkey, a.attnum)", (table,))
    return [name for (name,) in cursor.fetchall()]


def expected_partitions(now: datetime, months: int = 4) -> set[str]:
    first = month_start(now)
    return {f"{table}_default" for table in ("requests", "request_chunks")} | {
        partition_name(table, add_months(first, ahead))
        for table in ("requests", "request_chunks") for ahead in range(months)}


def where(db, table: str, column: str, value) -> str:
    """The partition holding a row."""
    return db.execute_sql(f"SELECT tableoid::regclass::text FROM {table} WHERE {column} = %s",
                          (value,)).fetchone()[0]


def test_upgrade_from_empty_builds_every_table_and_index(db):
    assert schema.status(db) == ([], MIGRATIONS)
    assert schema.upgrade(db) == MIGRATIONS
    assert TABLES <= set(db.get_tables())
    for model in MODELS:
        table = model._meta.table_name
        assert columns(db, table) == set(model._meta.columns), f"{table} differs from its model"
        assert INDEXES.get(table, set()) <= index_names(db, table)
    assert (SEARCH_INDEX in index_names(db, "requests")) == is_postgres(db)
    partition_key = ["received_at"] if is_postgres(db) else []
    assert primary_key(db, "requests") == ["id", *partition_key]
    assert primary_key(db, "request_chunks") == ["request_id", "seq", *partition_key]


def test_upgrade_is_idempotent_and_status_lists_applied(db):
    schema.upgrade(db)
    assert schema.upgrade(db) == []
    assert schema.status(db) == (MIGRATIONS, [])
    assert db.execute_sql("SELECT COUNT(*) FROM migratehistory").fetchone()[0] == len(MIGRATIONS)


def test_status_of_an_empty_database_writes_nothing(db):
    assert schema.status(db) == ([], MIGRATIONS)
    assert db.get_tables() == []


def test_downgrade_then_upgrade(db):
    schema.upgrade(db)
    with db.bind_ctx(MODELS):
        DashboardUser.create(name="ann", password_hash="x", created_at=datetime.now(UTC))
    assert schema.downgrade(db) == ["0005_search_and_lookup_indexes"]
    assert not {"requests_type_received_at", "requests_account_model_received_at",
                SEARCH_INDEX} & index_names(db, "requests")
    assert "ratelimit_samples_pair_sampled_at" not in index_names(db, "ratelimit_samples")
    assert schema.downgrade(db) == ["0004_conversations"]
    assert "conversations" not in db.get_tables()
    assert schema.downgrade(db) == ["0003_usage_rollups"]
    assert "usage_hourly" not in db.get_tables()
    assert schema.downgrade(db) == ["0002_ratelimit_request"]
    assert "ratelimit_samples_request" not in index_names(db, "ratelimit_samples")
    assert schema.downgrade(db, steps=5) == ["0001_initial"]
    assert set(db.get_tables()) == {"migratehistory"}, "partitions go with their tables"
    assert schema.status(db) == ([], MIGRATIONS)
    assert schema.downgrade(db) == []
    assert schema.upgrade(db) == MIGRATIONS
    with db.bind_ctx(MODELS):
        assert DashboardUser.select().count() == 0


def test_every_field_round_trips(db):
    schema.upgrade(db)
    received = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)
    body = '{"text": "' + ("héllo — 日本語 🙂 \\n" * 3000)[:76_000] + '"}'
    values = dict(
        id=str(uuid.uuid4()), received_at=received, completed_at=received + timedelta(seconds=3),
        domain="team.example.com", account_id="acc_team_1", auth_mode="domain_credential",
        method="POST", path="/v1/messages", query="beta=true", model="claude-sonnet-4-5",
        request_type="inference", stream=True, status="200", outcome="completed",
        error_type="overloaded_error", error_message="Überlastet ☁", attempts=2,
        attempts_detail=[{"number": 1, "status": 529, "duration_ms": 12.5},
                         {"number": 2, "status": 200, "duration_ms": 2048.25}],
        duration_ms=3000.125, first_byte_ms=850.5, first_token_ms=900.75, input_tokens=12,
        output_tokens=3456, cache_creation_input_tokens=2048, cache_creation_5m_tokens=1024,
        cache_creation_1h_tokens=1024, cache_read_input_tokens=65536, service_tier="standard",
        tool_call_count=2, tool_names=["Bash", "Read"], cost_usd=Decimal("123456.123456"),
        cost_flagged=True, request_headers=[["content-type", "application/json"],
                                            ["x-api-key", "sk-ant-…abcd"]],
        response_headers=[["request-id", "req_1"]], request_body=body,
        response_body="réponse 🙂", response_truncated=True, session_id="sess-ü",
        agent_id="agent_1", parent_agent_id="agent_0", user_agent="claude-cli/2.0 (external)",
        client_addr="::1", conversation_id=str(uuid.uuid4()), branch_id="main",
        parent_request_id=str(uuid.uuid4()), current_message_hash="a" * 64,
        parent_message_hash="b" * 64, system_hash="c" * 64, message_count=7, is_subtask=True,
        parent_task_request_id=str(uuid.uuid4()), is_compaction_request=True,
        is_compaction_continuation=True, is_retry=True, response_hash="d" * 64)
    assert set(values) == set(Request._meta.fields)
    sample = dict(account_id="acc_team_1", domain="team.example.com", request_id=values["id"],
                  sampled_at=received, headers={"anthropic-ratelimit-unified-status": "allowed"},
                  unified_status="allowed", unified_5h_utilization=0.25,
                  unified_5h_reset=received + timedelta(hours=5), unified_7d_utilization=0.5,
                  unified_7d_reset=received + timedelta(days=7),
                  unified_representative_claim="five_hour", unified_fallback_percentage=0.5,
                  unified_overage_status="rejected", requests_remaining=49,
                  requests_limit=50, tokens_remaining=3_999_999_999, tokens_limit=4_000_000_000)
    with db.bind_ctx(MODELS):
        Request.insert(values).execute()
        RequestChunk.insert_many([
            {"request_id": values["id"], "seq": seq, "offset_ms": seq * 10.5,
             "data": f"event: content_block_delta\ndata: {{\"n\": {seq}, \"t\": \"é\"}}\n\n",
             "received_at": received} for seq in range(3)]).execute()
        sample_id = RateLimitSample.insert(sample).execute()
        row = Request.get_by_id(values["id"])
        assert {name: getattr(row, name) for name in values} == values
        chunks = list(RequestChunk.select().where(RequestChunk.request_id == values["id"])
                      .order_by(RequestChunk.seq))
        assert [c.seq for c in chunks] == [0, 1, 2] and '"t": "é"' in chunks[2].data
        assert chunks[0].received_at == received
        stored = RateLimitSample.get_by_id(sample_id)
        assert {name: getattr(stored, name) for name in sample} == sample
        Request.update(status=499).where(Request.id == values["id"]).execute()
        assert Request.get_by_id(values["id"]).status == "499"


def test_tables_are_partitioned_by_month(pg):
    cursor = pg.execute_sql(
        "SELECT c.relname, pg_get_partkeydef(c.oid) FROM pg_partitioned_table p "
        "JOIN pg_class c ON c.oid = p.partrelid ORDER BY c.relname")
    assert cursor.fetchall() == [("request_chunks", "RANGE (received_at)"),
                                 ("requests", "RANGE (received_at)")]
    assert set(partitions(pg)) == expected_partitions(datetime.now(UTC))
    first = month_start(datetime.now(UTC))
    bound = pg.execute_sql("SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE relname = "
                           "%s", (partition_name("requests", first),)).fetchone()[0]
    assert bound == f"FOR VALUES FROM ('{first}') TO ('{add_months(first, 1)}')"


def test_ensure_partitions_is_idempotent_and_follows_the_clock(pg):
    assert ensure_partitions(pg) == []
    later = add_months(month_start(datetime.now(UTC)), 2)
    created = ensure_partitions(pg, now=later.replace(tzinfo=UTC))
    assert created == [partition_name(table, add_months(later, ahead))
                       for table in ("requests", "request_chunks") for ahead in (2, 3)]
    assert ensure_partitions(pg, now=later) == []
    assert set(partitions(pg)) == expected_partitions(datetime.now(UTC), months=6)


def test_drop_partitions_before_drops_only_whole_months(pg):
    first = month_start(datetime.now(UTC))
    ensure_partitions(pg, months_ahead=3, now=add_months(first, -3))
    last_month = add_months(first, -1)
    with pg.bind_ctx(MODELS):
        for when in (last_month + timedelta(days=20), first + timedelta(hours=1)):
            rid = str(uuid.uuid4())
            Request.insert(id=rid, received_at=when, domain="d", method="POST",
                           path="/v1/messages").execute()
            RequestChunk.insert(request_id=rid, seq=0, offset_ms=1.0, data="x",
                                received_at=when).execute()
    mid_last_month = (last_month + timedelta(days=10)).replace(tzinfo=UTC)
    assert drop_partitions_before(pg, mid_last_month) == sorted(
        partition_name(table, add_months(first, ago))
        for table in ("requests", "request_chunks") for ago in (-3, -2))
    with pg.bind_ctx(MODELS):
        assert Request.select().count() == 2 and RequestChunk.select().count() == 2
    assert drop_partitions_before(pg, first) == [partition_name("request_chunks", last_month),
                                                 partition_name("requests", last_month)]
    with pg.bind_ctx(MODELS):
        assert Request.select().count() == 1 and RequestChunk.select().count() == 1
    assert drop_partitions_before(pg, first) == []
    assert set(partitions(pg)) == expected_partitions(datetime.now(UTC))


def test_a_row_years_ahead_lands_in_default_then_moves_to_its_month(pg):
    future = datetime.now(UTC).replace(microsecond=0) + timedelta(days=730)
    rid = str(uuid.uuid4())
    with pg.bind_ctx(MODELS):
        Request.insert(id=rid, received_at=future, domain="d", method="POST",
                       path="/v1/messages", request_body="é" * 10).execute()
        RequestChunk.insert(request_id=rid, seq=0, offset_ms=0.5, data="data: {}\n\n",
                            received_at=future).execute()
    assert where(pg, "requests", "id", rid) == "requests_default"
    assert where(pg, "request_chunks", "request_id", rid) == "request_chunks_default"
    created = ensure_partitions(pg, months_ahead=0, now=future)
    month = month_start(future)
    assert created == [partition_name("requests", month), partition_name("request_chunks", month)]
    assert where(pg, "requests", "id", rid) == partition_name("requests", month)
    assert where(pg, "request_chunks", "request_id", rid) == \
        partition_name("request_chunks", month)
    with pg.bind_ctx(MODELS):
        row = Request.get_by_id(rid)
        assert row.received_at == future and row.request_body == "é" * 10
    assert pg.execute_sql("SELECT COUNT(*) FROM requests_default").fetchone()[0] == 0


def test_upgrade_on_start(database_url, tmp_path):
    app = create_app({"DATABASE_URL": database_url, "CREDENTIALS_DIR": str(tmp_path / "c")},
                     env_file=None)
    db = app.extensions["nexus.db"]
    try:
        assert db.is_closed(), "create_app must not connect"
        upgrade_on_start(app)
        upgrade_on_start(app)
        assert db.is_closed(), "the connection goes back once the schema is up to date"
        with db.connection_context():
            assert schema.status(db) == (MIGRATIONS, [])
            assert Request.select().count() == 0, "the models are bound to the app's database"
    finally:
        getattr(db, "close_all", db.close)()


def test_upgrade_on_start_reports_an_unreachable_database_in_one_line(tmp_path):
    url = f"postgresql://nexus:secret@127.0.0.1:{free_port()}/nexus"
    app = create_app({"DATABASE_URL": url, "CREDENTIALS_DIR": str(tmp_path / "c")},
                     env_file=None)
    with pytest.raises(StorageError) as caught:
        upgrade_on_start(app)
    message = str(caught.value)
    assert message.startswith("cannot upgrade the database (postgresql://nexus:***@127.0.0.1:")
    assert "\n" not in message and "secret" not in message
