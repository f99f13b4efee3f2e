"""Workload 5, step 4: every JSON API endpoint and dashboard page timed through
`python wsgi.py` on the million-row PostgreSQL database, with the database's share of each
(pg_stat_statements), the statements PostgreSQL logged as slow and their plans.

Used by bench/storage.py.
"""

from __future__ import annotations

import http.client
import re
import statistics
import sys
import time
from pathlib import Path

from bench.processes import HOST, ROOT, Service, clean_env, free_port

ENDPOINT_BUDGET_S = 25.0      # per endpoint: a very slow one is asked fewer times


def endpoints(ids: dict[str, str]) -> list[tuple[str, str]]:
    """(group, path) of every JSON API endpoint and dashboard page, with filters and paging."""
    needle = ids["needle"]
    return [
        ("api", "/api/requests"),
        ("api", "/api/requests?offset=10000"),
        ("api", "/api/requests?domain=team-1.example.com&since=7d"),
        ("api", "/api/requests?account=acc_7&model=claude-sonnet-4-5"),
        ("api", "/api/requests?status=5xx&since=24h"),
        ("api", "/api/requests?type=quota&limit=100"),
        ("api", f"/api/requests?conversation_id={ids['conversation']}"),
        ("api", f"/api/requests?q={needle}&since=24h"),
        ("api", f"/api/requests/{ids['request']}"),
        ("api", f"/api/requests/{ids['request']}/chunks"),
        ("api", "/api/usage/window"),
        ("api", "/api/usage/daily"),
        ("api", "/api/usage/daily?days=366&account=acc_3"),
        ("api", "/api/usage/tools"),
        ("api", "/api/usage/accounts"),
        ("api", "/api/ratelimits"),
        ("api", "/api/ratelimits?account=acc_3&offset=1000"),
        ("api", "/api/stats"),
        ("api", "/api/stats?since=7d"),
        ("api", "/api/conversations"),
        ("api", "/api/conversations?domain=team-1.example.com&q=module"),
        ("api", f"/api/conversations/{ids['conversation']}"),
        ("dashboard", "/dashboard/"),
        ("dashboard", "/dashboard/requests"),
        ("dashboard", f"/dashboard/requests?q={needle}"),
        ("dashboard", f"/dashboard/requests/{ids['request']}"),
        ("dashboard", f"/dashboard/requests/{ids['bulk_request']}"),
        ("dashboard", "/dashboard/conversations"),
        ("dashboard", f"/dashboard/conversations/{ids['conversation']}"),
        ("dashboard", "/dashboard/usage"),
        ("dashboard", "/dashboard/accounts"),
    ]


def pick_ids(dsn: str, writer_request: str) -> dict[str, str]:
    import psycopg2

    with psycopg2.connect(dsn) as conn, conn.cursor() as cur:
        cur.execute("SELECT id FROM conversations ORDER BY request_count DESC, "
                    "last_request_at DESC LIMIT 1")
        conversation = cur.fetchone()[0]
        cur.execute("SELECT id FROM requests WHERE request_type = 'inference' "
                    "AND status = '200' AND client_addr = '10.1.2.3' AND length(request_body) "
                    "> 60000 ORDER BY received_at LIMIT 1")
        bulk_request = cur.fetchone()[0]
    # A word no body holds, the usual case for a rare word: on PostgreSQL the trigram index
    # of migration 0005 answers it without reading a row (before it, a search read every body
    # of its range). A common word is another matter: its page stops at the first matches
    # newest first, but an exact total rechecks every match.
    return {"conversation": conversation, "request": writer_request,
            "bulk_request": bulk_request, "needle": "m997x"}


class StatementStats:
    """The database's share of an endpoint's time, from pg_stat_statements (reset before each
    endpoint, read after it); does nothing when the extension cannot be had."""

    def __init__(self, dsn: str):
        import psycopg2

        self.conn = psycopg2.connect(dsn)
        self.conn.autocommit = True
        try:
            with self.conn.cursor() as cur:
                cur.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                cur.execute("SELECT pg_stat_statements_reset()")
            self.ok = True
        except psycopg2.Error:
            self.ok = False

    def reset(self) -> None:
        if self.ok:
            with self.conn.cursor() as cur:
                cur.execute("SELECT pg_stat_statements_reset()")

    def read(self) -> tuple[float, int, str | None]:
        """(execution ms, statements, the costliest statement) since the last reset."""
        if not self.ok:
            return 0.0, 0, None
        with self.conn.cursor() as cur:
            cur.execute("SELECT total_exec_time, calls, query FROM pg_stat_statements "
                        "WHERE query NOT ILIKE '%%pg_stat_statements%%' "
                        "ORDER BY total_exec_time DESC")
            rows = cur.fetchall()
        top = " ".join(rows[0][2].split()) if rows else None
        return sum(r[0] for r in rows), sum(r[1] for r in rows), top

    def close(self) -> None:
        self.conn.close()


def time_endpoints(port: int, paths: list[tuple[str, str]], repeats: int, log,
                   stats: StatementStats | None = None) -> list[dict]:
    """Each path asked once unmeasured, then `repeats` times in a row — or as many times as
    fit in ENDPOINT_BUDGET_S; one slower than the budget is asked once, and that is its
    figure."""
    out = []
    for group, path in paths:
        if stats is not None:
            stats.reset()
        asked = 0
        conn = http.client.HTTPConnection(HOST, port, timeout=600)
        times, statuses, size = [], set(), 0
        started, first = time.monotonic(), True
        while len(times) < repeats:
            t0 = time.perf_counter()
            conn.request("GET", path, headers={"Accept": "text/html,application/json"})
            answer = conn.getresponse()
            body = answer.read()
            elapsed = (time.perf_counter() - t0) * 1000
            asked += 1
            statuses.add(answer.status)
            size = len(body)
            if not first or elapsed > ENDPOINT_BUDGET_S * 1000:
                times.append(elapsed)  # the first warms up, unless too slow to ask again
            first = False
            if times and time.monotonic() - started > ENDPOINT_BUDGET_S:
                break
        conn.close()
        db_ms, statements, top = stats.read() if stats is not None else (0.0, 0, None)
        figures = percentiles(times)
        out.append({"group": group, "path": path, "n": len(times), "statuses": sorted(statuses),
                    "bytes": size, **figures, "db_ms": db_ms / asked,
                    "statements": statements / asked, "top_statement": top})
        log(f"  {path[:64]:<64} p50 {figures['p50']:8.1f} ms  p95 {figures['p95']:8.1f} ms "
            f"(n={len(times)}, {sorted(statuses)}; database {db_ms / asked:.1f} ms in "
            f"{statements / asked:.0f} statements)")
    return out


def serve_and_time(dsn: str, ids: dict[str, str], repeats: int, work: Path, log) -> list[dict]:
    port = free_port()
    proxy_dir = work / "proxy"
    proxy_dir.mkdir()
    env = clean_env(HOST=HOST, PORT=str(port), LOG_LEVEL="warning", DATABASE_URL=dsn,
                    CLAUDE_API_BASE_URL=f"http://{HOST}:9")
    proxy = Service("proxy_w5", [sys.executable, str(ROOT / "wsgi.py")], port, proxy_dir, env,
                    proxy_dir)
    stats = None
    try:
        proxy.wait_ready("/health/live", timeout_s=60)
        stats = StatementStats(dsn)
        return time_endpoints(port, endpoints(ids), repeats, log, stats)
    finally:
        if stats is not None:
            stats.close()
        proxy.stop()


SLOW_STATEMENT_MS = 200       # logged by PostgreSQL while the endpoints are timed
EXPLAIN_ANALYZE_MAX_MS = 15_000  # slower ones are only EXPLAINed (not run again)
_LOGGED = re.compile(r"LOG:  duration: ([\d.]+) ms  statement: (.*)")
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
_TIMES = re.compile(r"'\d{4}-\d\d-\d\d[ T][\d:.+]+'")


def log_slow_statements(dsn: str, on: bool) -> None:
    """Have the server log every statement slower than SLOW_STATEMENT_MS (or stop it)."""
    import psycopg2

    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    with conn.cursor() as cur:
        if on:
            cur.execute(f"ALTER SYSTEM SET log_min_duration_statement = {SLOW_STATEMENT_MS}")
        else:
            cur.execute("ALTER SYSTEM RESET log_min_duration_statement")
        cur.execute("SELECT pg_reload_conf()")
    conn.close()


def slow_statements(log_text: str) -> list[dict]:
    """The statements the server logged as slow, grouped (times in them aside), slowest
    first: how often, the slowest duration and its full text."""
    found: list[tuple[float, str]] = []
    current: list[str] | None = None
    duration = 0.0
    for line in log_text.splitlines():
        if _LOG_PREFIX.match(line):
            if current is not None:
                found.append((duration, "\n".join(current)))
            match = _LOGGED.search(line)
            current, duration = ([match[2]], float(match[1])) if match else (None, 0.0)
        elif current is not None:
            current.append(line)
    if current is not None:
        found.append((duration, "\n".join(current)))
    groups: dict[str, dict] = {}
    for ms, sql in found:
        key = _TIMES.sub("'…'", sql)
        group = groups.setdefault(key, {"count": 0, "max_ms": 0.0, "statement": sql})
        group["count"] += 1
        if ms >= group["max_ms"]:
            group["max_ms"], group["statement"] = ms, sql
    return sorted(groups.values(), key=lambda g: -g["max_ms"])


def explain(dsn: str, statements: list[dict], limit: int = 8) -> list[dict]:
    """EXPLAIN (ANALYZE, BUFFERS) of the slowest statements; plain EXPLAIN for those that took
    longer than EXPLAIN_ANALYZE_MAX_MS (they are not run again)."""
    import psycopg2

    out = []
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            for item in statements[:limit]:
                analyze = item["max_ms"] <= EXPLAIN_ANALYZE_MAX_MS
                prefix = "EXPLAIN (ANALYZE, BUFFERS) " if analyze else "EXPLAIN "
                try:
                    cur.execute(prefix + item["statement"])
                    plan = "\n".join(row[0] for row in cur.fetchall())
                except psycopg2.Error as err:
                    plan = f"(not explained: {str(err).strip()})"
                out.append({**item, "analyzed": analyze, "plan": plan})
    finally:
        conn.close()
    return out


_ROWS = re.compile(r"rows=(\d+)")


def plan_summary(plan: str, nodes: int = 3) -> list[str]:
    """The plan's top line, its biggest scans (by rows; empty partitions left out) with their
    filters, and its execution time."""
    rows = plan.splitlines()
    if not rows:
        return []
    scans = []
    for index, row in enumerate(rows):
        if "Scan" in row:
            details = []
            for detail in rows[index + 1:]:
                if not detail.strip().startswith(("Filter:", "Rows Removed", "Index Cond:")):
                    break
                details.append(detail)
            removed = [int(d.split(":")[1]) for d in details if "Rows Removed" in d]
            size = max([int(n) for n in _ROWS.findall(row)] or [0]) + sum(removed)
            scans.append((size, index, [row, *details]))
    big = [scan for scan in scans if scan[0] > 1] or scans
    biggest = sorted(sorted(big, key=lambda s: -s[0])[:nodes], key=lambda s: s[1])
    tail = [row for row in rows if row.startswith("Execution Time")]
    return [rows[0][:160], *(line[:160] for _, _, block in biggest for line in block), *tail]


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p95": 0.0, "max": 0.0}
    ordered = sorted(values)
    return {"p50": statistics.median(ordered),
            "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
            "max": ordered[-1]}
