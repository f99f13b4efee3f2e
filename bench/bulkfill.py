"""Fill a PostgreSQL database with N stored requests fast, in SQL (`INSERT … SELECT` over
`generate_series`), shaped like the batch writer's rows, for the storage workload's
"at a million rows" measurements.

What the rows look like (all received before `end`, spread evenly over `days`):
- conversations of 10-20 turns of Claude Code traffic (Opus, streamed, 45 s apart), each
  request linked to the one before it as the writer links them: `conversation_id`, `branch_id`
  `main`, `parent_request_id`, chained `current_message_hash` / `parent_message_hash` (64 hex
  characters, unique per history, like the real sha256 hashes), `system_hash` (40 distinct
  system prompts), `response_hash`, `message_count`; one conversation in six has a sub-agent:
  a spawn anchor at turn 3 (claimed) and three `subtask_1` requests (`is_subtask`,
  `agent_id`);
- one `quota` side request (Haiku, not streamed, no conversation, the same history hash every
  time, as Claude Code's quota check has) before each conversation;
- request bodies of 20-80 KB (growing with the turn; sub-agents 10 KB) and answers of about
  2 KB, valid JSON of the Messages API's shape. Their text repeats a 2 KB excerpt of the real
  system prompt, so TOAST compresses them to a few KB (a real body compresses 3-5×, not 20×):
  the logical sizes are real — what a text search reads, what a detail page parses — while a
  million rows fit in minutes and a few GB;
- 1% answered 529 (overloaded), 0.3% client hang-ups; tokens, cache reads (a quarter of the
  body's bytes), 1-hour cache writes, cost, one tool call per answer;
- headers as the writer stores them (about 1 KB each way, the unified rate-limit headers);
- one rate-limit sample per answered request (the ledger), with its parsed columns;
- then the roll-ups and conversation rows, derived from those requests with the same SQL as
  `migrations/0003_usage_rollups.py` (whose definitions are imported) and the writer's
  definitions of a conversation's figures, so the usage pages and conversation lists read
  tables consistent with the requests;
- finally VACUUM (ANALYZE), as autovacuum leaves tables that have lived a while (statistics,
  visibility map).

Secondary indexes of `requests` and `ratelimit_samples` are dropped before the load and built
again after it from their own definitions (the catalogue's), which is ten times faster than
inserting random hashes into them row by row. Bodies are compressed with lz4 when the server
has it (pglz, the default the writer's rows get, is 3× slower to fill).

Not filled: `request_chunks` for these rows (a stream's events are read only by one request's
detail, by primary key); the rows the writer itself stored keep theirs.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.processes import ROOT

DATA = Path(__file__).resolve().parent / "data"
TURNS_MEAN = 15
SUBAGENT_EVERY = 6
SUBAGENT_TURNS = 3
DOMAINS = 5
ACCOUNTS = 20


def _rollup_definitions():
    """migrations/0003_usage_rollups.py, loaded by path (its name starts with a digit)."""
    path = ROOT / "migrations" / "0003_usage_rollups.py"
    spec = importlib.util.spec_from_file_location("nexus_bench_rollups", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _block() -> str:
    """2 KB of the real system prompt, escaped to sit inside a JSON string."""
    base = json.loads((DATA / "claude_code_request.json").read_text())
    text = " ".join(block["text"] for block in base["system"])[500:2500]
    return json.dumps(text)[1:-1]


def _ratelimit() -> tuple[str, dict]:
    from app.usage.ratelimits import parse_ratelimit_headers
    try:
        from tests.fakes.api_headers import unified_headers
        headers = unified_headers()
    except ImportError:
        headers = [("anthropic-ratelimit-unified-status", "allowed")]
    parsed = parse_ratelimit_headers(headers)
    return json.dumps(parsed["headers"], separators=(",", ":")), parsed


REQUEST_HEADERS = (
    '[["host","{domain}"],["accept","application/json"],["content-type","application/json"],'
    '["user-agent","claude-cli/2.1.197 (external, cli)"],["x-claude-code-session-id","{sid}"],'
    '["x-stainless-lang","js"],["x-stainless-package-version","0.94.0"],'
    '["x-stainless-retry-count","0"],["x-stainless-timeout","600"],'
    '["anthropic-beta","claude-code-20250219,context-1m-2025-08-07,'
    'interleaved-thinking-2025-05-14"],["anthropic-version","2023-06-01"],["x-app","cli"],'
    '["authorization","Bearer sk-ant-oat01-…[masked]"],["content-length","48213"]]')

COLUMNS = (
    "id", "received_at", "completed_at", "domain", "account_id", "auth_mode", "method", "path",
    "query", "model", "request_type", "stream", "status", "outcome", "error_type",
    "error_message", "attempts", "attempts_detail", "duration_ms", "first_byte_ms",
    "first_token_ms", "input_tokens", "output_tokens", "cache_creation_input_tokens",
    "cache_creation_5m_tokens", "cache_creation_1h_tokens", "cache_read_input_tokens",
    "service_tier", "tool_call_count", "tool_names", "cost_usd", "cost_flagged",
    "request_headers", "response_headers", "request_body", "response_body",
    "response_truncated", "session_id", "agent_id", "parent_agent_id", "user_agent",
    "client_addr", "conversation_id", "branch_id", "parent_request_id", "current_message_hash",
    "parent_message_hash", "system_hash", "message_count", "is_subtask",
    "parent_task_request_id", "is_compaction_request", "is_compaction_continuation",
    "is_retry", "response_hash")

# One row per (conversation c, turn t); turns t >= p.turns are the sub-agent's (subtask k).
TURN_ROWS = """
SELECT {columns} FROM (
  SELECT p.*, t, t >= p.turns AS sub, t - p.turns AS k,
         mod(p.c * 7919 + t * 104729, 100003) AS r,
         CASE WHEN mod(p.c * 13 + t * 7, 100) = 3 THEN '529'
              WHEN mod(p.c * 17 + t * 3, 333) = 5 THEN 'client_disconnected'
              ELSE '200' END AS st,
         p.start + (CASE WHEN t >= p.turns THEN 3.5 + (t - p.turns) ELSE t END)
                   * interval '45 seconds'
                 + mod(p.c * 31 + t * 17, 20) * interval '1 second' AS at,
         CASE WHEN t >= p.turns THEN 5 ELSE 10 + (30 * t) / p.turns END AS blocks
  FROM bench_plan p CROSS JOIN LATERAL generate_series(0, p.rows - 1) AS t
  WHERE p.c >= %(first)s AND p.c < %(last)s
) AS x JOIN bench_blocks ON bench_blocks.n = x.blocks
"""

TURN_VALUES = {
    "id": "md5('r' || c || ':' || t)::uuid::text",
    "received_at": "at",
    "completed_at": "at + (2000 + mod(r, 30000)) * interval '1 millisecond'",
    "domain": "domain", "account_id": "account", "auth_mode": "'domain_credential'",
    "method": "'POST'", "path": "'/v1/messages'", "query": "'beta=true'", "model": "model",
    "request_type": "'inference'", "stream": "true", "status": "st",
    "outcome": "CASE WHEN st = 'client_disconnected' THEN st ELSE 'completed' END",
    "error_type": "CASE WHEN st = '529' THEN 'overloaded_error' "
                  "WHEN st = 'client_disconnected' THEN st END",
    "error_message": "CASE WHEN st = '529' THEN 'Overloaded' "
                     "WHEN st = 'client_disconnected' THEN 'client closed the connection' END",
    "attempts": "1",
    "attempts_detail": "'[{\"number\":1,\"started_ms\":0.4,\"duration_ms\":' "
                       "|| (2000 + mod(r, 30000)) || ',\"status\":' "
                       "|| CASE WHEN st = '529' THEN '529' ELSE '200' END "
                       "|| ',\"error\":null,\"retry_delay_s\":null}]'",
    "duration_ms": "2000 + mod(r, 30000)",
    "first_byte_ms": "CASE WHEN st = '200' THEN 800 + mod(r, 1500) END",
    "first_token_ms": "CASE WHEN st = '200' THEN 1100 + mod(r, 1500) END",
    "input_tokens": "CASE WHEN st = '200' THEN 3 + mod(r, 30) END",
    "output_tokens": "CASE WHEN st = '200' THEN 100 + mod(r, 1500) END",
    "cache_creation_input_tokens": "CASE WHEN st = '200' THEN 900 END",
    "cache_creation_5m_tokens": "CASE WHEN st = '200' THEN 0 END",
    "cache_creation_1h_tokens": "CASE WHEN st = '200' THEN 900 END",
    "cache_read_input_tokens": "CASE WHEN st = '200' THEN blocks * 512 END",
    "service_tier": "CASE WHEN st = '200' THEN 'standard' END",
    "tool_call_count": "CASE WHEN st = '200' THEN 1 ELSE 0 END",
    "tool_names": "CASE WHEN st <> '200' THEN '[]' "
                  "WHEN NOT sub AND t = 3 AND mod(c, 6) = 0 THEN '[\"Agent\"]' "
                  "ELSE (ARRAY['[\"Bash\"]', '[\"Read\"]', '[\"Edit\"]', '[\"Bash\"]', "
                  "'[\"Read\"]', '[\"Write\"]'])[1 + mod(r, 6)] END",
    "cost_usd": "CASE WHEN st = '200' THEN round(((3 + mod(r, 30)) * 5 + (100 + mod(r, 1500))"
                " * 25 + blocks * 512 * 0.5 + 900 * 10) / 1000000.0, 6) END",
    "cost_flagged": "false",
    "request_headers": "replace(replace(%(request_headers)s, '{domain}', domain), '{sid}', sid)",
    "response_headers": "%(response_headers)s",
    "request_body": (
        "concat('{\"model\":\"', model, '\",\"max_tokens\":64000,\"stream\":true,"
        "\"metadata\":{\"user_id\":\"bench\"},\"messages\":[{\"role\":\"user\",\"content\":"
        "[{\"type\":\"text\",\"text\":\"', title, '\"}]}],\"system\":[{\"type\":\"text\","
        "\"text\":\"', system_text, '\"}],\"tools\":[]}')"),
    "response_body": (
        "CASE WHEN st = '200' THEN '{\"id\":\"msg_' || substr(md5('m' || c || ':' || t), 1, 24)"
        " || '\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"' || model || '\","
        "\"content\":[{\"type\":\"text\",\"text\":\"' || substr(%(block)s, 1 + mod(r, 200), "
        "1600) || '\"},{\"type\":\"tool_use\",\"id\":\"toolu_' || substr(md5('u' || c || ':' "
        "|| t), 1, 24) || '\",\"name\":\"Bash\",\"input\":{\"command\":\"ls -la\"}}],"
        "\"stop_reason\":\"tool_use\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,"
        "\"output_tokens\":345}}' "
        "WHEN st = '529' THEN '{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
        "\"message\":\"Overloaded\"}}' END"),
    "response_truncated": "false", "session_id": "sid",
    "agent_id": "CASE WHEN sub THEN md5('a' || c)::uuid::text END", "parent_agent_id": "NULL",
    "user_agent": "'claude-cli/2.1.197 (external, cli)'", "client_addr": "'10.1.2.3'",
    "conversation_id": "conv", "branch_id": "CASE WHEN sub THEN 'subtask_1' ELSE 'main' END",
    "parent_request_id": "CASE WHEN sub AND k = 0 THEN md5('r' || c || ':3')::uuid::text "
                         "WHEN t = 0 THEN NULL ELSE md5('r' || c || ':' || (t - 1))::uuid::text "
                         "END",
    "current_message_hash": "md5('h' || c || ':' || t) || md5('H' || c || ':' || t)",
    "parent_message_hash": "CASE WHEN t = 0 OR (sub AND k = 0) THEN NULL "
                           "ELSE md5('h' || c || ':' || (t - 1)) || md5('H' || c || ':' "
                           "|| (t - 1)) END",
    "system_hash": "CASE WHEN sub THEN md5('sub') || md5('SUB') "
                   "ELSE md5('s' || mod(c, 40)) || md5('S' || mod(c, 40)) END",
    "message_count": "CASE WHEN sub THEN 1 + 2 * k ELSE 1 + 2 * t END",
    "is_subtask": "sub",
    "parent_task_request_id": "CASE WHEN sub THEN md5('r' || c || ':3')::uuid::text END",
    "is_compaction_request": "false", "is_compaction_continuation": "false",
    "is_retry": "false",
    "response_hash": "CASE WHEN st = '200' THEN md5('a' || c || ':' || t) "
                     "|| md5('A' || c || ':' || t) END",
}

# Claude Code's quota check before each conversation: one side request, no conversation.
SIDE_VALUES = {
    **TURN_VALUES,
    "id": "md5('q' || c)::uuid::text",
    "received_at": "start - interval '2 seconds'",
    "completed_at": "start - interval '1600 milliseconds'",
    "model": "'claude-haiku-4-5'", "request_type": "'quota'", "stream": "false",
    "status": "'200'", "outcome": "'completed'", "error_type": "NULL", "error_message": "NULL",
    "attempts_detail": "'[{\"number\":1,\"started_ms\":0.4,\"duration_ms\":400,"
                       "\"status\":200,\"error\":null,\"retry_delay_s\":null}]'",
    "duration_ms": "400", "first_byte_ms": "350", "first_token_ms": "NULL",
    "input_tokens": "8", "output_tokens": "1", "cache_creation_input_tokens": "0",
    "cache_creation_5m_tokens": "0", "cache_creation_1h_tokens": "0",
    "cache_read_input_tokens": "0", "service_tier": "'standard'", "tool_call_count": "0",
    "tool_names": "'[]'", "cost_usd": "0.000013",
    "request_body": "'{\"model\":\"claude-haiku-4-5\",\"max_tokens\":1,\"messages\":"
                    "[{\"role\":\"user\",\"content\":\"quota\"}],\"metadata\":"
                    "{\"user_id\":\"bench\"}}'",
    "response_body": "'{\"id\":\"msg_' || substr(md5('q' || c), 1, 24) || '\",\"type\":"
                     "\"message\",\"role\":\"assistant\",\"model\":\"claude-haiku-4-5\","
                     "\"content\":[{\"type\":\"text\",\"text\":\"#\"}],\"stop_reason\":"
                     "\"max_tokens\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":8,"
                     "\"output_tokens\":1}}'",
    "agent_id": "NULL", "conversation_id": "NULL", "branch_id": "NULL",
    "parent_request_id": "NULL",
    "current_message_hash": "md5('quota') || md5('QUOTA')", "parent_message_hash": "NULL",
    "system_hash": "NULL", "message_count": "1", "is_subtask": "false",
    "parent_task_request_id": "NULL", "response_hash": "md5('#') || md5('##')",
}

# The system prompt text of each body size, built once (repeat() per row is slow).
BLOCKS = """
CREATE UNLOGGED TABLE bench_blocks AS
SELECT n, repeat(%(block)s, n) AS system_text FROM generate_series(1, 40) AS n
"""

PLAN = """
CREATE UNLOGGED TABLE bench_plan AS
SELECT c, md5('c' || c)::uuid::text AS conv, md5('s' || c)::uuid::text AS sid,
       10 + mod(c * 7, 11) AS turns,
       10 + mod(c * 7, 11) + CASE WHEN mod(c, {every}) = 0 THEN {sub_turns} ELSE 0 END AS rows,
       'team-' || mod(mod(c, {accounts}), {domains}) || '.example.com' AS domain,
       'acc_' || mod(c, {accounts}) AS account,
       CASE WHEN mod(c, 10) < 7 THEN 'claude-opus-4-5' ELSE 'claude-sonnet-4-5' END AS model,
       'Task ' || c || ': fix the failing test in module m' || mod(c, 997)
           || ' and explain the change' AS title,
       %(start)s::timestamp + (c::float8 / %(count)s) * %(span)s * interval '1 second' AS start
FROM generate_series(0, %(count)s - 1) AS c
"""


def _select(values: dict[str, str]) -> str:
    return ", ".join(values[name] for name in COLUMNS)


def fill(dsn: str, total: int, end: datetime, days: float, log, workers: int = 2) -> dict:
    """Fill the database of `dsn` (its schema migrated) with about `total` requests received
    in the `days` before `end`, and everything derived from them; returns counts and times."""
    import time

    import psycopg2

    end = end.astimezone(UTC).replace(tzinfo=None)
    start = end - timedelta(days=days)
    conversations = max(1, round(total / (TURNS_MEAN + 1 + SUBAGENT_TURNS / SUBAGENT_EVERY)))
    span = days * 86400 - 3600  # the last conversation starts an hour before `end`
    ratelimit_headers, sample = _ratelimit()
    params = {"start": start, "count": conversations, "span": span, "block": _block(),
              "request_headers": REQUEST_HEADERS,
              "response_headers": json.dumps(
                  [["content-type", "text/event-stream"], ["request-id", "req_bench"],
                   ["anthropic-organization-id", "4f6c9a2e-8b1d-4c7e-9f3a-2d5b8e1c6a90"],
                   *json.loads(ratelimit_headers), ["via", "1.1 google"],
                   ["cf-cache-status", "DYNAMIC"], ["server", "cloudflare"]],
                  separators=(",", ":"))}
    times: dict[str, float] = {}
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()

    def step(name: str, sql: str, args: dict | None = None) -> None:
        began = time.monotonic()
        cur.execute(sql, args if args is not None else params)
        times[name] = time.monotonic() - began

    _partitions(cur, start, end)
    # Secondary indexes are dropped and built again after the load (sorted, compact): inserting
    # a million random hashes into them one by one takes ten times longer. The same
    # definitions, read from the catalogue, so the schema ends exactly as the migrations made it.
    began = time.monotonic()
    dropped = _drop_indexes(cur, ("requests", "ratelimit_samples"))
    times["drop indexes"] = time.monotonic() - began
    step("leftovers", "DROP TABLE IF EXISTS bench_plan, bench_blocks", {})
    step("blocks", BLOCKS)
    step("plan", PLAN.format(every=SUBAGENT_EVERY, sub_turns=SUBAGENT_TURNS,
                             accounts=ACCOUNTS, domains=DOMAINS))
    columns = ", ".join(COLUMNS)
    insert = f"INSERT INTO requests ({columns}) " + TURN_ROWS.format(
        columns=_select(TURN_VALUES))
    began = time.monotonic()
    errors: list[BaseException] = []

    def part(first: int, last: int) -> None:
        try:
            worker_conn = psycopg2.connect(dsn)
            with worker_conn, worker_conn.cursor() as worker:
                worker.execute("SET synchronous_commit = off")
                worker.execute(f"SET default_toast_compression = {compression}")
                for low in range(first, last, 2000):
                    worker.execute(insert, {**params, "first": low,
                                            "last": min(last, low + 2000)})
                    worker_conn.commit()
            worker_conn.close()
        except BaseException as err:  # reported by the caller
            errors.append(err)

    cur.execute("SELECT count(*) FROM pg_settings WHERE name = 'default_toast_compression' "
                "AND 'lz4' = ANY(enumvals)")
    compression = "lz4" if cur.fetchone()[0] else "pglz"
    bounds = [conversations * n // workers for n in range(workers + 1)]
    threads = [threading.Thread(target=part, args=(bounds[n], bounds[n + 1]))
               for n in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    times["requests"] = time.monotonic() - began
    log(f"  bulk: {conversations} conversations' requests in {times['requests']:.0f}s")
    step("side requests", f"INSERT INTO requests ({columns}) SELECT {_select(SIDE_VALUES)} "
         "FROM bench_plan")
    before = {"before": end}
    step("ratelimit_samples", _SAMPLES, {**before, "headers": ratelimit_headers, **{
        key: sample.get(key) for key in ("unified_status", "unified_representative_claim",
                                         "unified_fallback_percentage",
                                         "unified_overage_status")}})
    step("conversation_anchors", _ANCHORS.format(every=SUBAGENT_EVERY), before)
    rollups = _rollup_definitions()
    hourly, tools = _rollup_sql(rollups)
    step("usage_hourly", hourly, before)
    step("usage_tool_hourly", tools, before)
    step("conversations", _CONVERSATIONS, before)
    step("drop plan", "DROP TABLE bench_plan, bench_blocks", {})
    began = time.monotonic()
    _create_indexes(dsn, dropped, workers)
    times["indexes"] = time.monotonic() - began
    # As autovacuum leaves a table that has lived a while: statistics, and the visibility map
    # set (without it a count reads every heap page instead of the indexes).
    step("vacuum analyze", "VACUUM (ANALYZE)", {})
    counts = {}
    for table in ("requests", "ratelimit_samples", "conversations", "conversation_anchors",
                  "usage_hourly", "usage_tool_hourly"):
        cur.execute(f"SELECT count(*) FROM {table}")
        counts[table] = cur.fetchone()[0]
    cur.execute("SELECT pg_database_size(current_database()), "
                "pg_total_relation_size('requests_default')")
    size, _ = cur.fetchone()
    cur.execute("SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits "
                "WHERE inhparent = 'requests'::regclass")
    requests_size = cur.fetchone()[0]
    conn.close()
    return {"conversations": conversations, "counts": counts, "times_s": times,
            "database_mb": size / 2**20, "requests_mb": int(requests_size or 0) / 2**20}


def _drop_indexes(cur, tables: tuple[str, ...]) -> list[str]:
    """Drop the indexes of `tables` that back no constraint; returns their definitions."""
    cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
                "AND tablename = ANY(%s) AND indexname NOT IN (SELECT conname FROM pg_constraint)",
                (list(tables),))
    found = cur.fetchall()
    for name, _ in found:
        cur.execute(f'DROP INDEX "{name}"')
    return [definition.replace(" ON ONLY ", " ON ") for _, definition in found]


def _create_indexes(dsn: str, definitions: list[str], workers: int) -> None:
    """Build the indexes again, `workers` at a time (each on every partition)."""
    import psycopg2

    # The trigram index of text search (migration 0005) takes longest by far (it parses every
    # body): started first, the B-trees are built beside it rather than after it.
    pending = sorted(definitions, key=lambda definition: " USING gin " not in definition)
    lock = threading.Lock()
    errors: list[BaseException] = []

    def build() -> None:
        try:
            conn = psycopg2.connect(dsn)
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SET maintenance_work_mem = '512MB'")
                while True:
                    with lock:
                        if not pending:
                            return
                        definition = pending.pop(0)
                    cur.execute(definition)
            conn.close()
        except BaseException as err:  # reported by the caller
            errors.append(err)

    threads = [threading.Thread(target=build) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def _partitions(cur, start: datetime, end: datetime) -> None:
    """The monthly partitions of the months the rows fall in (a deployment that has run that
    long has them: start-up creates each month's ahead of time)."""
    month = datetime(start.year, start.month, 1)
    while month <= end:
        following = datetime(month.year + month.month // 12, month.month % 12 + 1, 1)
        for table in ("requests", "request_chunks"):
            name = f"{table}_y{month.year:04d}m{month.month:02d}"
            cur.execute("SELECT to_regclass(%s)", (name,))
            if cur.fetchone()[0] is None:
                cur.execute(f'CREATE TABLE "{name}" PARTITION OF "{table}" FOR VALUES FROM '
                            f"('{month:%Y-%m-%d}') TO ('{following:%Y-%m-%d}')")
        month = following


_SAMPLES = """
INSERT INTO ratelimit_samples (account_id, domain, request_id, sampled_at, headers,
    unified_status, unified_5h_utilization, unified_5h_reset, unified_7d_utilization,
    unified_7d_reset, unified_representative_claim, unified_fallback_percentage,
    unified_overage_status)
SELECT account_id, domain, id, completed_at, %(headers)s, %(unified_status)s,
       mod(abs(hashtext(id)), 1000) / 1000.0, date_trunc('hour', completed_at)
           + interval '3 hours', mod(abs(hashtext(id)), 700) / 1000.0,
       date_trunc('day', completed_at) + interval '5 days', %(unified_representative_claim)s,
       %(unified_fallback_percentage)s, %(unified_overage_status)s
FROM requests WHERE received_at < %(before)s AND status = '200'
"""

_ANCHORS = """
INSERT INTO conversation_anchors (kind, domain, key_hash, request_id, received_at, session_id,
    conversation_id, tool_use_id, summary_key, child_request_id)
SELECT 'spawn', domain, md5('p' || c) || md5('P' || c), md5('r' || c || ':3')::uuid::text,
       start + 3 * interval '45 seconds', sid, conv, 'toolu_' || substr(md5('t' || c), 1, 24),
       NULL, md5('r' || c || ':' || turns)::uuid::text
FROM bench_plan WHERE mod(c, {every}) = 0
"""

_CONVERSATIONS = """
INSERT INTO conversations (id, domain, account_id, session_id, first_request_id, created_at,
    last_request_at, title, request_count, message_count, branch_count, subtask_count,
    compact_count, input_tokens, output_tokens, cache_creation_input_tokens,
    cache_read_input_tokens, cost_microusd)
SELECT a.conversation_id, p.domain, p.account, p.sid, a.first_id, a.created, a.last, p.title,
       a.requests, a.messages, 0, a.subtasks, 0, a.input, a.output, a.cache_creation,
       a.cache_read, a.cost
FROM (
    SELECT conversation_id, (array_agg(id ORDER BY received_at, id))[1] AS first_id,
           min(received_at) AS created, max(received_at) AS last, count(*) AS requests,
           max(message_count) AS messages,
           count(DISTINCT branch_id) FILTER (WHERE branch_id LIKE 'subtask%%') AS subtasks,
           sum(COALESCE(input_tokens, 0)) AS input, sum(COALESCE(output_tokens, 0)) AS output,
           sum(COALESCE(cache_creation_input_tokens, 0)) AS cache_creation,
           sum(COALESCE(cache_read_input_tokens, 0)) AS cache_read,
           sum(ROUND(COALESCE(cost_usd, 0) * 1000000)::BIGINT) AS cost
    FROM requests WHERE conversation_id IS NOT NULL AND received_at < %(before)s
    GROUP BY conversation_id
) AS a JOIN bench_plan p ON p.conv = a.conversation_id
"""


def _rollup_sql(m) -> tuple[str, str]:
    """The migration's roll-up INSERTs, for the rows received before %(before)s, adding to
    the hours the writer may have filled already."""
    spell = m._ENGINE["postgres"]
    names = (*m.COUNTERS, *m.SUMS)
    selects = ", ".join(m._SELECTS[name].format(**spell) for name in names)
    adds = ", ".join(f"{name} = usage_hourly.{name} + excluded.{name}" for name in names)
    hourly = (f"INSERT INTO usage_hourly (hour, domain, account_id, model, {', '.join(names)}) "
              f"SELECT {spell['hour']}, domain, COALESCE(account_id, ''), COALESCE(model, ''), "
              f"{selects} FROM requests WHERE received_at < %(before)s "
              f"GROUP BY {spell['hour']}, domain, COALESCE(account_id, ''), "
              f"COALESCE(model, '') ON CONFLICT (hour, domain, account_id, model) "
              f"DO UPDATE SET {adds}")
    hour = spell["hour"].replace("received_at", "r.received_at")
    tools = ("INSERT INTO usage_tool_hourly (hour, domain, account_id, tool_name, call_count) "
             f"SELECT {hour}, r.domain, COALESCE(r.account_id, ''), t.value, COUNT(*) "
             f"FROM requests AS r {spell['tools']} WHERE r.tool_call_count > 0 "
             "AND r.received_at < %(before)s "
             f"GROUP BY {hour}, r.domain, COALESCE(r.account_id, ''), t.value "
             "ON CONFLICT (hour, domain, account_id, tool_name) "
             "DO UPDATE SET call_count = usage_tool_hourly.call_count + excluded.call_count")
    return hourly, tools
