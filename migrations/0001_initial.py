"""The initial schema: requests, request chunks, rate-limit samples, dashboard users.

Explicit DDL for both engines, and no import of the application: this file must build the
schema exactly as version 1 was, whatever the models become later.

On PostgreSQL `requests` and `request_chunks` are partitioned by month of `received_at`, so
retention drops whole partitions instead of deleting rows; their primary keys therefore include
`received_at`. A DEFAULT partition takes any row no monthly partition covers, so an insert is
never refused. Chunks carry no foreign key to their request on either engine: PostgreSQL will not
drop a partition that a foreign key references, and both tables are purged by `received_at`.
"""

import datetime as dt

import peewee as pw

# Per-engine spellings used in the column definitions below.
TYPES = {
    "postgres": {"timestamp": "TIMESTAMP", "float": "DOUBLE PRECISION", "bool": "BOOLEAN",
                 "false": "FALSE", "money": "NUMERIC(12, 6)", "bigint": "BIGINT",
                 "serial": "SERIAL PRIMARY KEY", "bigserial": "BIGSERIAL PRIMARY KEY"},
    "sqlite": {"timestamp": "DATETIME", "float": "REAL", "bool": "INTEGER", "false": "0",
               "money": "DECIMAL(12, 6)", "bigint": "INTEGER",
               "serial": "INTEGER PRIMARY KEY", "bigserial": "INTEGER PRIMARY KEY"},
}

REQUESTS = (
    ("id", "VARCHAR(36) NOT NULL"),
    ("received_at", "{timestamp} NOT NULL"),
    ("completed_at", "{timestamp}"),
    ("domain", "TEXT NOT NULL"),
    ("account_id", "TEXT"),
    ("auth_mode", "VARCHAR(32)"),
    ("method", "VARCHAR(16) NOT NULL"),
    ("path", "TEXT NOT NULL"),
    ("query", "TEXT NOT NULL DEFAULT ''"),
    ("model", "TEXT"),
    ("request_type", "VARCHAR(32)"),
    ("stream", "{bool} NOT NULL DEFAULT {false}"),
    ("status", "VARCHAR(32)"),
    ("outcome", "VARCHAR(32)"),
    ("error_type", "TEXT"),
    ("error_message", "TEXT"),
    ("attempts", "INTEGER NOT NULL DEFAULT 0"),
    ("attempts_detail", "TEXT"),
    ("duration_ms", "{float}"),
    ("first_byte_ms", "{float}"),
    ("first_token_ms", "{float}"),
    ("input_tokens", "INTEGER"),
    ("output_tokens", "INTEGER"),
    ("cache_creation_input_tokens", "INTEGER"),
    ("cache_creation_5m_tokens", "INTEGER"),
    ("cache_creation_1h_tokens", "INTEGER"),
    ("cache_read_input_tokens", "INTEGER"),
    ("service_tier", "TEXT"),
    ("tool_call_count", "INTEGER NOT NULL DEFAULT 0"),
    ("tool_names", "TEXT"),
    ("cost_usd", "{money}"),
    ("cost_flagged", "{bool} NOT NULL DEFAULT {false}"),
    ("request_headers", "TEXT"),
    ("response_headers", "TEXT"),
    ("request_body", "TEXT"),
    ("response_body", "TEXT"),
    ("response_truncated", "{bool} NOT NULL DEFAULT {false}"),
    ("session_id", "TEXT"),
    ("agent_id", "TEXT"),
    ("parent_agent_id", "TEXT"),
    ("user_agent", "TEXT"),
    ("client_addr", "TEXT"),
    ("conversation_id", "VARCHAR(64)"),
    ("branch_id", "VARCHAR(64)"),
    ("parent_request_id", "VARCHAR(36)"),
    ("current_message_hash", "VARCHAR(64)"),
    ("parent_message_hash", "VARCHAR(64)"),
    ("system_hash", "VARCHAR(64)"),
    ("message_count", "INTEGER"),
    ("is_subtask", "{bool} NOT NULL DEFAULT {false}"),
    ("parent_task_request_id", "VARCHAR(36)"),
    ("is_compaction_request", "{bool} NOT NULL DEFAULT {false}"),
    ("is_compaction_continuation", "{bool} NOT NULL DEFAULT {false}"),
    ("is_retry", "{bool} NOT NULL DEFAULT {false}"),
)

REQUEST_CHUNKS = (
    ("request_id", "VARCHAR(36) NOT NULL"),
    ("seq", "INTEGER NOT NULL"),
    ("offset_ms", "{float} NOT NULL"),
    ("data", "TEXT NOT NULL"),
    ("received_at", "{timestamp} NOT NULL"),
)

RATELIMIT_SAMPLES = (
    ("id", "{bigserial}"),
    ("account_id", "TEXT"),
    ("domain", "TEXT NOT NULL"),
    ("request_id", "VARCHAR(36)"),
    ("sampled_at", "{timestamp} NOT NULL"),
    ("headers", "TEXT NOT NULL"),
    ("unified_status", "TEXT"),
    ("unified_5h_utilization", "{float}"),
    ("unified_5h_reset", "{timestamp}"),
    ("unified_7d_utilization", "{float}"),
    ("unified_7d_reset", "{timestamp}"),
    ("unified_representative_claim", "TEXT"),
    ("unified_fallback_percentage", "{float}"),
    ("unified_overage_status", "TEXT"),
    ("requests_remaining", "{bigint}"),
    ("requests_limit", "{bigint}"),
    ("tokens_remaining", "{bigint}"),
    ("tokens_limit", "{bigint}"),
)

DASHBOARD_USERS = (
    ("id", "{serial}"),
    ("name", "TEXT NOT NULL UNIQUE"),
    ("password_hash", "TEXT NOT NULL"),
    ("created_at", "{timestamp} NOT NULL"),
    ("last_login_at", "{timestamp}"),
)

# The primary key of an id lookup comes first in each key, so ids need no index of their own.
INDEXES = (
    ("requests_received_at", "requests", "received_at"),
    ("requests_domain_received_at", "requests", "domain, received_at"),
    ("requests_account_received_at", "requests", "account_id, received_at"),
    ("requests_conversation_received_at", "requests", "conversation_id, received_at"),
    ("requests_model_received_at", "requests", "model, received_at"),
    ("requests_session", "requests", "session_id"),
    ("requests_current_message_hash", "requests", "current_message_hash"),
    ("requests_parent_message_hash", "requests", "parent_message_hash"),
    ("ratelimit_samples_sampled_at", "ratelimit_samples", "sampled_at"),
    ("ratelimit_samples_account_sampled_at", "ratelimit_samples", "account_id, sampled_at"),
    ("ratelimit_samples_domain_sampled_at", "ratelimit_samples", "domain, sampled_at"),
)

PARTITIONED = ("requests", "request_chunks")
MONTHS_AHEAD = 3


def _create_table(name, columns, engine, suffix=""):
    lines = [f"{column} {definition.format(**TYPES[engine])}".strip()
             for column, definition in columns]
    return f"CREATE TABLE {name} (\n    " + ",\n    ".join(lines) + f"\n){suffix}"


def _month(year, month):
    year, month = year + (month - 1) // 12, (month - 1) % 12 + 1
    return dt.date(year, month, 1)


def _monthly_partitions(table, today):
    """This month's and the next MONTHS_AHEAD months' partitions (later ones come at start-up)."""
    statements = []
    for ahead in range(MONTHS_AHEAD + 1):
        start = _month(today.year, today.month + ahead)
        end = _month(start.year, start.month + 1)
        statements.append(
            f"CREATE TABLE {table}_y{start.year:04d}m{start.month:02d} PARTITION OF {table} "
            f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')")
    return statements


def _postgres_statements():
    today = dt.datetime.now(dt.UTC).date()
    by_month = " PARTITION BY RANGE (received_at)"
    statements = [
        _create_table("requests", (*REQUESTS, ("", "PRIMARY KEY (id, received_at)")),
                      "postgres", by_month),
        _create_table("request_chunks",
                      (*REQUEST_CHUNKS, ("", "PRIMARY KEY (request_id, seq, received_at)")),
                      "postgres", by_month),
    ]
    for table in PARTITIONED:
        statements.append(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        statements.extend(_monthly_partitions(table, today))
    return statements


def _sqlite_statements():
    return [
        _create_table("requests", (*REQUESTS, ("", "PRIMARY KEY (id)")), "sqlite"),
        _create_table("request_chunks",
                      (*REQUEST_CHUNKS, ("", "PRIMARY KEY (request_id, seq)")), "sqlite"),
    ]


def migrate(migrator, database, **kwargs):
    """Create every table and index from empty."""
    if isinstance(database, pw.Proxy):
        database = database.obj
    engine = "postgres" if isinstance(database, pw.PostgresqlDatabase) else "sqlite"
    statements = _postgres_statements() if engine == "postgres" else _sqlite_statements()
    statements.append(_create_table("ratelimit_samples", RATELIMIT_SAMPLES, engine))
    statements.append(_create_table("dashboard_users", DASHBOARD_USERS, engine))
    # On a partitioned table PostgreSQL creates the index on every partition, present and future.
    statements.extend(f"CREATE INDEX {name} ON {table} ({columns})"
                      for name, table, columns in INDEXES)
    for statement in statements:
        migrator.sql(statement)


def rollback(migrator, database, **kwargs):
    """Drop every table (on PostgreSQL with their partitions): all recorded data is lost."""
    for table in ("request_chunks", "requests", "ratelimit_samples", "dashboard_users"):
        migrator.sql(f"DROP TABLE IF EXISTS {table}")
