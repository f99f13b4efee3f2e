"""Hourly usage roll-ups: `usage_hourly` and `usage_tool_hourly`, filled from existing requests.

The batch writer adds each newly inserted request to its hour's row in the same transaction
(app/storage/sink.py), so daily history, per-model splits and overview figures read a few
hundred rows instead of every request of the range. Keys hold no NULL (an absent account or
model is ''), because a NULL never matches in a primary key or an ON CONFLICT target on
either engine. Cost is kept as whole micro-dollars: SQLite would sum DECIMAL as floats.

Explicit DDL for both engines, and no import of the application.
"""

import peewee as pw

TYPES = {
    "postgres": {"timestamp": "TIMESTAMP", "float": "DOUBLE PRECISION", "bigint": "BIGINT"},
    "sqlite": {"timestamp": "DATETIME", "float": "REAL", "bigint": "INTEGER"},
}

KEY = (
    ("hour", "{timestamp} NOT NULL"),
    ("domain", "TEXT NOT NULL"),
    ("account_id", "TEXT NOT NULL DEFAULT ''"),
)

COUNTERS = (
    "request_count", "error_count", "disconnected_count", "input_tokens", "output_tokens",
    "cache_creation_input_tokens", "cache_creation_5m_tokens", "cache_creation_1h_tokens",
    "cache_read_input_tokens", "cost_microusd", "cost_flagged_count", "tool_call_count",
    "duration_count", "first_token_count",
)
SUMS = ("duration_ms_sum", "first_token_ms_sum")

# What each column adds up, per engine ({hour} is the hour of received_at).
_ERROR = ("CASE WHEN outcome = 'failed' OR (COALESCE(outcome, '') <> 'client_disconnected' "
          "AND status >= '400' AND status < '600') THEN 1 ELSE 0 END")
_SELECTS = {
    "request_count": "COUNT(*)",
    "error_count": f"SUM({_ERROR})",
    "disconnected_count": "SUM(CASE WHEN outcome = 'client_disconnected' THEN 1 ELSE 0 END)",
    "input_tokens": "SUM(COALESCE(input_tokens, 0))",
    "output_tokens": "SUM(COALESCE(output_tokens, 0))",
    "cache_creation_input_tokens": "SUM(COALESCE(cache_creation_input_tokens, 0))",
    "cache_creation_5m_tokens": "SUM(COALESCE(cache_creation_5m_tokens, 0))",
    "cache_creation_1h_tokens": "SUM(COALESCE(cache_creation_1h_tokens, 0))",
    "cache_read_input_tokens": "SUM(COALESCE(cache_read_input_tokens, 0))",
    "cost_microusd": "SUM({microusd})",
    "cost_flagged_count": "SUM(CASE WHEN cost_flagged THEN 1 ELSE 0 END)",
    "tool_call_count": "SUM(tool_call_count)",
    "duration_count": "COUNT(duration_ms)",
    "first_token_count": "COUNT(first_token_ms)",
    "duration_ms_sum": "SUM(COALESCE(duration_ms, 0))",
    "first_token_ms_sum": "SUM(COALESCE(first_token_ms, 0))",
}
_ENGINE = {
    "postgres": {"hour": "date_trunc('hour', received_at)",
                 "microusd": "ROUND(COALESCE(cost_usd, 0) * 1000000)::BIGINT",
                 "tools": "CROSS JOIN LATERAL json_array_elements_text(r.tool_names::json) "
                          "AS t(value)"},
    "sqlite": {"hour": "strftime('%Y-%m-%d %H:00:00', received_at)",
               "microusd": "CAST(ROUND(COALESCE(cost_usd, 0) * 1000000) AS INTEGER)",
               "tools": "JOIN json_each(r.tool_names) AS t"},
}


def _engine(database):
    if isinstance(database, pw.Proxy):
        database = database.obj
    return "postgres" if isinstance(database, pw.PostgresqlDatabase) else "sqlite"


def _table(name, columns, engine, key):
    lines = [f"{column} {definition.format(**TYPES[engine])}" for column, definition in columns]
    lines.append(f"PRIMARY KEY ({', '.join(key)})")
    return f"CREATE TABLE {name} (\n    " + ",\n    ".join(lines) + "\n)"


def migrate(migrator, database, **kwargs):
    """Create both tables, then add up every request already stored."""
    engine = _engine(database)
    spell = _ENGINE[engine]
    hourly = (*KEY, ("model", "TEXT NOT NULL DEFAULT ''"),
              *((name, "{bigint} NOT NULL DEFAULT 0") for name in COUNTERS),
              *((name, "{float} NOT NULL DEFAULT 0") for name in SUMS))
    tools = (*KEY, ("tool_name", "TEXT NOT NULL"), ("call_count", "{bigint} NOT NULL DEFAULT 0"))
    migrator.sql(_table("usage_hourly", hourly, engine, ("hour", "domain", "account_id", "model")))
    migrator.sql(_table("usage_tool_hourly", tools, engine,
                        ("hour", "domain", "account_id", "tool_name")))

    names = (*COUNTERS, *SUMS)
    selects = ", ".join(_SELECTS[name].format(**spell) for name in names)
    migrator.sql(
        f"INSERT INTO usage_hourly (hour, domain, account_id, model, {', '.join(names)}) "
        f"SELECT {spell['hour']}, domain, COALESCE(account_id, ''), COALESCE(model, ''), "
        f"{selects} FROM requests "
        f"GROUP BY {spell['hour']}, domain, COALESCE(account_id, ''), COALESCE(model, '')")
    hour = spell["hour"].replace("received_at", "r.received_at")
    migrator.sql(
        "INSERT INTO usage_tool_hourly (hour, domain, account_id, tool_name, call_count) "
        f"SELECT {hour}, r.domain, COALESCE(r.account_id, ''), t.value, COUNT(*) "
        f"FROM requests AS r {spell['tools']} WHERE r.tool_call_count > 0 "
        f"GROUP BY {hour}, r.domain, COALESCE(r.account_id, ''), t.value")


def rollback(migrator, database, **kwargs):
    """Drop both tables (requests keep every figure they were built from)."""
    for table in ("usage_tool_hourly", "usage_hourly"):
        migrator.sql(f"DROP TABLE IF EXISTS {table}")
