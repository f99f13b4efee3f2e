"""Conversation tracking (CONVERSATIONS.md): one row per conversation, the anchors sub-agents
and compaction continuations link to, the recorded answer's hash, and the lookups linking makes.

- `conversations`: figures kept by the writer as it links requests (counts, branches, tokens,
  cost, last activity), so listing conversations never adds up their requests.
- `conversation_anchors`: what a later request may link to that its history does not show:
  a `Task`/`Agent` tool_use of an answer (`spawn`, keyed by the hash of its prompt) and an answer
  to a summarisation request (`compaction`, with the start of its summary).
- `requests.response_hash`: the recorded answer as a later request replays it, which ranks
  continuation candidates.

Explicit DDL for both engines, and no import of the application.
"""

import peewee as pw

TYPES = {
    "postgres": {"timestamp": "TIMESTAMP", "bigint": "BIGINT", "serial": "BIGSERIAL PRIMARY KEY"},
    "sqlite": {"timestamp": "DATETIME", "bigint": "INTEGER", "serial": "INTEGER PRIMARY KEY"},
}

CONVERSATIONS = (
    ("id", "VARCHAR(64) NOT NULL PRIMARY KEY"),
    ("domain", "TEXT NOT NULL"),
    ("account_id", "TEXT"),
    ("session_id", "TEXT"),
    ("first_request_id", "VARCHAR(36) NOT NULL"),
    ("created_at", "{timestamp} NOT NULL"),
    ("last_request_at", "{timestamp} NOT NULL"),
    ("title", "TEXT"),
    ("request_count", "{bigint} NOT NULL DEFAULT 0"),
    ("message_count", "INTEGER NOT NULL DEFAULT 0"),
    ("branch_count", "INTEGER NOT NULL DEFAULT 0"),
    ("subtask_count", "INTEGER NOT NULL DEFAULT 0"),
    ("compact_count", "INTEGER NOT NULL DEFAULT 0"),
    ("input_tokens", "{bigint} NOT NULL DEFAULT 0"),
    ("output_tokens", "{bigint} NOT NULL DEFAULT 0"),
    ("cache_creation_input_tokens", "{bigint} NOT NULL DEFAULT 0"),
    ("cache_read_input_tokens", "{bigint} NOT NULL DEFAULT 0"),
    ("cost_microusd", "{bigint} NOT NULL DEFAULT 0"),
)

ANCHORS = (
    ("id", "{serial}"),
    ("kind", "VARCHAR(16) NOT NULL"),
    ("domain", "TEXT NOT NULL"),
    ("key_hash", "VARCHAR(64) NOT NULL DEFAULT ''"),
    ("request_id", "VARCHAR(36) NOT NULL"),
    ("received_at", "{timestamp} NOT NULL"),
    ("session_id", "TEXT"),
    ("conversation_id", "VARCHAR(64)"),
    ("tool_use_id", "TEXT NOT NULL DEFAULT ''"),
    ("summary_key", "TEXT"),
    ("child_request_id", "VARCHAR(36)"),
)

INDEXES = (
    ("conversations_last_request_at", "conversations", "last_request_at"),
    ("conversations_domain_last_request_at", "conversations", "domain, last_request_at"),
    ("conversations_account_last_request_at", "conversations", "account_id, last_request_at"),
    ("conversation_anchors_lookup", "conversation_anchors", "domain, kind, key_hash, received_at"),
    ("conversation_anchors_received_at", "conversation_anchors", "received_at"),
    ("requests_parent_request", "requests", "parent_request_id"),
)
UNIQUE = ("conversation_anchors_request", "conversation_anchors",
          "request_id, kind, tool_use_id")


def _engine(database):
    if isinstance(database, pw.Proxy):
        database = database.obj
    return "postgres" if isinstance(database, pw.PostgresqlDatabase) else "sqlite"


def _table(name, columns, engine):
    lines = [f"{column} {definition.format(**TYPES[engine])}" for column, definition in columns]
    return f"CREATE TABLE {name} (\n    " + ",\n    ".join(lines) + "\n)"


def migrate(migrator, database, **kwargs):
    """Create both tables, the response hash column and the indexes."""
    engine = _engine(database)
    migrator.sql(_table("conversations", CONVERSATIONS, engine))
    migrator.sql(_table("conversation_anchors", ANCHORS, engine))
    migrator.sql("ALTER TABLE requests ADD COLUMN response_hash VARCHAR(64)")
    for name, table, columns in INDEXES:
        migrator.sql(f"CREATE INDEX {name} ON {table} ({columns})")
    name, table, columns = UNIQUE
    migrator.sql(f"CREATE UNIQUE INDEX {name} ON {table} ({columns})")


def rollback(migrator, database, **kwargs):
    """Drop both tables, the column and the index on requests (links in requests stay)."""
    migrator.sql("DROP INDEX IF EXISTS requests_parent_request")
    migrator.sql("ALTER TABLE requests DROP COLUMN response_hash")
    for table in ("conversation_anchors", "conversations"):
        migrator.sql(f"DROP TABLE IF EXISTS {table}")
