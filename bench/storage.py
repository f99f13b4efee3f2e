"""Workload 5: storage — the batch writer's rows/s on SQLite and PostgreSQL, conversation linking
per request and every JSON API endpoint and dashboard page with a million stored requests.

    .venv/bin/python -m bench.storage [--quick] [--storage-rows N] [--storage-writer-rows N]
                                      [--storage-repeats N] [--storage-only writer] [--json PATH]

1. **Batch writer** (both engines, each from an empty database): the app is built as the
   server builds it (`create_app`, the schema migrated, the writer with its price table, alert
   watch and live-feed hook) and its writer is fed synthetic Claude Code exchanges
   (bench/synthetic.py: streamed, 20-80 KB bodies, ~25 SSE events kept each, usage, rate-limit
   headers, conversations of 10-20 turns with sub-agents and quota checks). The feeder keeps
   the queue full (never past 1,000 exchanges) and the clock runs from the first exchange
   handed over to the last one committed: building rows, masking secrets, hashing histories,
   linking, inserting requests, chunks and rate-limit samples, the roll-up and conversation
   upserts, all counted. Default settings (batches of 200 exchanges or 250 ms).
2. **A million rows** on PostgreSQL (bench/bulkfill.py, in SQL): requests shaped like the
   writer's, 30 days of them, with the ledger, anchors, roll-ups and conversations derived
   from them.
3. **Linking** at that size: requests continuing conversations the writer stored in step 1
   (and, for comparison, first requests of new conversations), one at a time: the history
   hashing (before the transaction) and the linker's reads and decision (inside it) timed
   apart, then the same request written as a batch of one, timed too. The writer is then run
   again on the full database.
4. **Queries**: `python wsgi.py` on that database (loopback, no key, no user: no login), each
   endpoint and page asked once unmeasured, then N times (20; quick 10) in a row, or as many
   as fit in 25 s (one slower than that: its single answer); p50/p95 of the whole HTTP answer,
   the database's share from pg_stat_statements, and the statements the server logged as
   slower than 200 ms, EXPLAIN ANALYZEd afterwards.

The PostgreSQL server is a throwaway one (bench/postgres.py) with PostgreSQL's default
durability settings, pg_stat_statements loaded and max_wal_size 4GB.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.endpoints import (
    SLOW_STATEMENT_MS,
    explain,
    log_slow_statements,
    percentiles,
    pick_ids,
    plan_summary,
    serve_and_time,
    slow_statements,
)

TARGET_ROWS_S = 3000
TARGET_LINK_MS = 5.0
TARGET_P95_MS = 300.0
QUEUE_CAP = 1000              # exchanges waiting for the writer, at most (memory, not speed)
# The server: PostgreSQL's defaults (fsync and all), pg_stat_statements for the database's
# share of each endpoint, room for the WAL of a million-row fill.
PG_OPTIONS = "-c shared_preload_libraries=pg_stat_statements -c max_wal_size=4GB"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This workload's options (bench/run takes them too)."""
    parser.add_argument("--storage-rows", type=int, metavar="N",
                        help="workload 5: stored requests for linking and queries "
                             "(1,000,000; --quick 50,000)")
    parser.add_argument("--storage-writer-rows", type=int, metavar="N",
                        help="workload 5: exchanges per writer run (10,000; --quick 3,000)")
    parser.add_argument("--storage-repeats", type=int, metavar="N",
                        help="workload 5: measured requests per endpoint (20; --quick 10)")
    parser.add_argument("--storage-only", choices=("writer",),
                        help="workload 5: only step 1, the writer on both empty databases "
                             "(no fill, linking or endpoints)")


def sizes(args: argparse.Namespace) -> dict[str, int]:
    quick = args.quick
    return {
        "writer_rows": getattr(args, "storage_writer_rows", None) or (3000 if quick else 10000),
        "bulk_rows": getattr(args, "storage_rows", None) or (50_000 if quick else 1_000_000),
        "link_requests": 100 if quick else 300,
        "repeats": getattr(args, "storage_repeats", None) or (10 if quick else 20),
    }


@contextlib.contextmanager
def _clean_settings():
    """No setting of the caller's shell (DATABASE_URL, STORAGE_BATCH_SIZE, ...) may reach the
    app built here: they are set aside while it is built."""
    from app.config import BY_NAME

    saved = {name: os.environ.pop(name) for name in list(os.environ) if name in BY_NAME}
    try:
        yield
    finally:
        os.environ.update(saved)


def _build_app(url: str, work: Path):
    from app import create_app
    from app.storage import upgrade_on_start

    with _clean_settings():
        app = create_app(config={"DATABASE_URL": url, "SPOOL_DIR": str(work / "spool"),
                                 "LOG_LEVEL": "warning"}, env_file=None)
    upgrade_on_start(app)
    return app


# ------------------------------------------------------------------------------ 1. the writer


def _postgres_cpu_s(data_dir: Path | None) -> float:
    """CPU seconds of the cluster's server processes (the postmaster and its children)."""
    if data_dir is None:
        return 0.0
    try:
        postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == postmaster or int(fields[1]) == postmaster:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def writer_rate(url: str, traffic, count: int, work: Path, log,
                pg_data: Path | None = None) -> dict:
    """Feed `count` exchanges of `traffic` to a writer on `url`; rows/s and what was stored."""
    from app.events import EventBus
    from app.storage import close

    app = _build_app(url, work)
    writer = app.extensions["nexus.writer"]
    bus = EventBus()          # only the writer listens: nothing else costs the feeder time
    writer.subscribe(bus)
    began = time.perf_counter()
    exchanges = traffic.exchanges(count)
    built_s = time.perf_counter() - began
    body_kb = statistics.median(len(x.request_body) for x in exchanges if x.stream) / 1024
    chunks = sum(len(x.chunks) for x in exchanges)
    writer.start()
    cpu0, pg0, t0 = time.process_time(), _postgres_cpu_s(pg_data), time.perf_counter()
    for exchange in exchanges:
        while writer.queue_depth >= QUEUE_CAP:
            time.sleep(0.0005)
        bus.publish(exchange.ended)
    deadline = time.monotonic() + 120 + count / 100
    while writer.rows_written < count and time.monotonic() < deadline:
        if writer.metrics()["rows_spooled"] or writer.metrics()["rows_rejected"]:
            break
        time.sleep(0.002)
    elapsed = time.perf_counter() - t0
    cpu_s, pg_s = time.process_time() - cpu0, _postgres_cpu_s(pg_data) - pg0
    metrics = writer.metrics()
    del exchanges
    close(app)
    stored = _stored(url)
    rate = metrics["rows_written"] / elapsed if elapsed else 0.0
    cpu_us = 1e6 * cpu_s / metrics["rows_written"] if metrics["rows_written"] else 0.0
    log(f"  writer on {url.split(':', 1)[0]}: {metrics['rows_written']} exchanges in "
        f"{elapsed:.1f}s = {rate:.0f}/s, {cpu_us:.0f} µs CPU each (median body "
        f"{body_kb:.0f} KB, {chunks} chunks)")
    return {"exchanges": count, "written": metrics["rows_written"], "elapsed_s": elapsed,
            "rows_s": rate, "chunk_rows_s": chunks / elapsed if elapsed else 0.0,
            "chunks": chunks, "median_body_kb": body_kb, "generate_s": built_s,
            "writer_cpu_pct": 100 * cpu_s / elapsed if elapsed else 0.0,
            "writer_cpu_us": cpu_us,
            "postgres_cpu_pct": 100 * pg_s / elapsed if elapsed and pg_data else None,
            "spooled": metrics["rows_spooled"], "rejected": metrics["rows_rejected"],
            "last_error": metrics["last_error"], "stored": stored}


def _stored(url: str) -> dict[str, int]:
    """What the database holds after a writer run (a check that linking worked)."""
    from app.storage.database import make_database

    db = make_database(url, 1, 0)
    queries = {"requests": "SELECT count(*) FROM requests",
               "linked": "SELECT count(*) FROM requests WHERE conversation_id IS NOT NULL",
               "with_parent": "SELECT count(*) FROM requests WHERE parent_request_id IS NOT NULL",
               "subtask": "SELECT count(*) FROM requests WHERE is_subtask",
               "chunks": "SELECT count(*) FROM request_chunks",
               "ratelimit_samples": "SELECT count(*) FROM ratelimit_samples",
               "conversations": "SELECT count(*) FROM conversations"}
    try:
        with db.connection_context():
            return {name: db.execute_sql(sql).fetchone()[0] for name, sql in queries.items()}
    finally:
        if hasattr(db, "close_all"):
            db.close_all()


# ------------------------------------------------------------------------------ 3. linking


def link_times(url: str, pairs: list, label: str) -> dict:
    """Link each (exchange, expected parent id) alone: hashing, then the linker's reads and
    decision in a transaction rolled back, then the real write of a batch of one."""
    from app.storage.database import make_database
    from app.storage.linking import BatchLinker
    from app.storage.rows import items
    from app.storage.sink import linkable, make_sink
    from app.usage.pricing import load_prices

    db = make_database(url, 2, 0)
    sink = make_sink(db)
    built, _ = items([x for x, _ in pairs], True, load_prices())
    hash_ms, link_ms, write_ms = [], [], []
    right = wrong = 0
    try:
        for (request, chunks), (_, parent) in zip(built, pairs, strict=True):
            t0 = time.perf_counter()
            facts = linkable([request])
            t1 = time.perf_counter()
            with db.connection_context(), db.atomic() as transaction:
                t2 = time.perf_counter()
                linker = BatchLinker(db, lambda sql, params: db.execute_sql(sql,
                                                                            params).fetchall(),
                                     facts)
                links, _ = linker.link_all()
                t3 = time.perf_counter()
                transaction.rollback()
            found = links.get(request["id"])
            if (found.parent_request_id if found else None) == parent:
                right += 1
            else:
                wrong += 1
            t4 = time.perf_counter()
            sink.execute(sink.statements([(request, chunks)]))
            t5 = time.perf_counter()
            hash_ms.append((t1 - t0) * 1000)
            link_ms.append((t3 - t2) * 1000)
            write_ms.append((t5 - t4) * 1000)
    finally:
        sink.close()
        db.close_all()
    return {"label": label, "requests": len(pairs), "expected_links": right, "other": wrong,
            "hash": percentiles(hash_ms), "link": percentiles(link_ms),
            "write": percentiles(write_ms)}


# ------------------------------------------------------------------------------ the run


def run(args: argparse.Namespace, log) -> dict:
    from bench.bulkfill import fill
    from bench.postgres import PostgresServer
    from bench.synthetic import Traffic

    n = sizes(args)
    work = Path(tempfile.mkdtemp(prefix="nexus-bench-w5-"))
    results: dict[str, Any] = {"quick": bool(args.quick), "sizes": n}
    began = time.monotonic()
    try:
        log(f"workload 5: batch writer, {n['writer_rows']} exchanges per engine")
        sqlite_dir = work / "sqlite"
        sqlite_dir.mkdir()
        results["writer_sqlite"] = writer_rate(f"sqlite:///{sqlite_dir / 'nexus.db'}",
                                               Traffic(seed=1), n["writer_rows"], sqlite_dir,
                                               log)
        pg = _start_postgres(PostgresServer, log)
        if pg is None:
            results["postgres_unavailable"] = True
        else:
            try:
                if getattr(args, "storage_only", None) == "writer":
                    pg_work = work / "pg"
                    pg_work.mkdir()
                    results["writer_postgres"] = writer_rate(
                        pg.dsn, Traffic(seed=2, start=datetime.now(UTC)), n["writer_rows"],
                        pg_work, log, pg.data)
                else:
                    results.update(_postgres(pg, n, work, log, fill, Traffic))
            finally:
                pg.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results["elapsed_s"] = time.monotonic() - began
    # What makes bench/run exit 1: an endpoint that did not answer 200, a row refused.
    results["errors"] = (sum(1 for item in results.get("endpoints", [])
                             if item["statuses"] != [200])
                         + sum(results.get(key, {}).get("rejected", 0) for key in (
                             "writer_sqlite", "writer_postgres", "writer_postgres_full")))
    return results


def _start_postgres(server_class, log):
    """The throwaway server; without pg_stat_statements if it cannot be loaded (the database
    column is then empty); None, said on stderr, when PostgreSQL is not installed."""
    for options in (PG_OPTIONS, PG_OPTIONS.replace(
            "-c shared_preload_libraries=pg_stat_statements", "")):
        server = server_class(options)
        try:
            return server.start()
        except (RuntimeError, OSError) as err:
            server.stop()
            log(f"  PostgreSQL did not start with {options!r}: {str(err)[:300]}")
    log("workload 5: PostgreSQL unavailable: only the SQLite writer was measured")
    return None


def _postgres(pg, n: dict[str, int], work: Path, log, fill, traffic_class) -> dict:
    out: dict[str, Any] = {}
    pg_work = work / "pg"
    pg_work.mkdir()
    start = datetime.now(UTC)
    traffic = traffic_class(seed=2, start=start)
    out["writer_postgres"] = writer_rate(pg.dsn, traffic, n["writer_rows"], pg_work, log,
                                         pg.data)
    last_request = traffic.last_streamed_id
    log(f"workload 5: filling PostgreSQL with {n['bulk_rows']:,} requests (SQL)")
    out["fill"] = fill(pg.dsn, n["bulk_rows"], start - timedelta(minutes=1), 30, log)
    log(f"  filled in {sum(out['fill']['times_s'].values()):.0f}s: {out['fill']['counts']}")
    count = n["link_requests"]
    continuing = traffic.continuations(count)
    fresh = traffic_class(seed=3, start=datetime.now(UTC)).first_requests(count)
    out["linking"] = [link_times(pg.dsn, continuing, "continuing a stored conversation"),
                      link_times(pg.dsn, fresh, "first request of a new conversation")]
    for item in out["linking"]:
        log(f"  linking, {item['label']}: p50 {item['link']['p50']:.2f} ms, "
            f"p95 {item['link']['p95']:.2f} ms ({item['expected_links']}/{item['requests']} "
            "as expected)")
    big = work / "pg_big"
    big.mkdir()
    out["writer_postgres_full"] = writer_rate(
        pg.dsn, traffic_class(seed=4, start=datetime.now(UTC)), n["writer_rows"], big, log,
        pg.data)
    log(f"workload 5: API and dashboard, {n['repeats']} requests each")
    ids = pick_ids(pg.dsn, last_request)
    out["ids"] = ids
    server_log = pg.root / "log"
    offset = server_log.stat().st_size if server_log.exists() else 0
    log_slow_statements(pg.dsn, True)
    try:
        out["endpoints"] = serve_and_time(pg.dsn, ids, n["repeats"], work, log)
    finally:
        log_slow_statements(pg.dsn, False)
    with open(server_log, errors="replace") as f:
        f.seek(offset)
        slow = slow_statements(f.read())
    log(f"  {len(slow)} distinct statement(s) slower than {SLOW_STATEMENT_MS} ms: explaining")
    out["slow_statements"] = explain(pg.dsn, slow)
    return out


# ------------------------------------------------------------------------------ the tables


def render(results: dict) -> str:
    r = results
    n = r["sizes"]
    rows = n["bulk_rows"]
    lines = [f"### 5. Storage ({'quick' if r['quick'] else 'full'} run: "
             f"{n['writer_rows']:,} exchanges per writer run, {rows:,} stored requests for "
             f"linking and queries; {r.get('elapsed_s', 0):.0f} s)", ""]
    lines += ["**Batch writer** (synthetic Claude Code exchanges, median body "
              f"{r['writer_sqlite']['median_body_kb']:.0f} KB, SSE chunks kept; rows = "
              "exchanges)", "",
              "| engine | database | **exchanges/s** | chunk rows/s | writer CPU % | "
              "writer CPU µs / exchange | PostgreSQL CPU % | linked / with parent | "
              "spooled / rejected |",
              "|---|---|---|---|---|---|---|---|---|"]
    for key, engine, where in (("writer_sqlite", "SQLite", "empty"),
                               ("writer_postgres", "PostgreSQL", "empty"),
                               ("writer_postgres_full", "PostgreSQL", f"{rows:,} rows")):
        w = r.get(key)
        if not w:
            continue
        pg_cpu = "–" if w["postgres_cpu_pct"] is None else f"{w['postgres_cpu_pct']:.0f}"
        stored = w["stored"]
        lines.append(f"| {engine} | {where} | **{w['rows_s']:,.0f}** | {w['chunk_rows_s']:,.0f} "
                     f"| {w['writer_cpu_pct']:.0f} | {w.get('writer_cpu_us', 0):,.0f} "
                     f"| {pg_cpu} | {stored['linked']:,} / "
                     f"{stored['with_parent']:,} | {w['spooled']} / {w['rejected']} |")
    lines.append("")
    fill = r.get("fill")
    if fill:
        lines.append(f"Filled in {sum(fill['times_s'].values()):.0f} s: "
                     + ", ".join(f"{table} {count:,}" for table, count in fill["counts"].items())
                     + f"; database {fill['database_mb'] / 1024:.1f} GiB.")
        lines.append("")
    if r.get("linking"):
        lines += [f"**Conversation linking** with {rows:,} stored requests, one request at a "
                  "time (ms)", "",
                  "| request | n | as expected | hash p50 / p95 | **link p50 / p95** | "
                  "write (batch of 1) p50 / p95 |", "|---|---|---|---|---|---|"]
        for item in r["linking"]:
            lines.append(
                f"| {item['label']} | {item['requests']} | {item['expected_links']} "
                f"| {item['hash']['p50']:.2f} / {item['hash']['p95']:.2f} "
                f"| **{item['link']['p50']:.2f} / {item['link']['p95']:.2f}** "
                f"| {item['write']['p50']:.2f} / {item['write']['p95']:.2f} |")
        lines.append("")
    if r.get("endpoints"):
        lines += [f"**JSON API and dashboard** on PostgreSQL with {rows:,} requests (ms, the "
                  "whole HTTP answer; *database*: PostgreSQL's execution time per request, from "
                  "pg_stat_statements — the rest is the proxy's Python and the round trips)", "",
                  "| path | n | p50 | **p95** | max | database ms / statements | status | KB |",
                  "|---|---|---|---|---|---|---|---|"]
        for item in r["endpoints"]:
            mark = " ⚠" if item["p95"] > TARGET_P95_MS else ""
            lines.append(f"| `{item['path']}` | {item['n']} | {item['p50']:.1f} "
                         f"| **{item['p95']:.1f}**{mark} | {item['max']:.1f} "
                         f"| {item.get('db_ms', 0):.1f} / {item.get('statements', 0):.0f} "
                         f"| {','.join(map(str, item['statuses']))} | {item['bytes'] / 1024:.0f} |")
        lines.append("")
    if r.get("postgres_unavailable"):
        lines += ["PostgreSQL could not be started (see stderr): only the SQLite writer was "
                  "measured.", ""]
    lines.append(_reading(r))
    slow = [item for item in r.get("endpoints", [])
            if item["p95"] > TARGET_P95_MS and item.get("top_statement")]
    if slow:
        lines += ["", "**Where the slow endpoints' time goes** (pg_stat_statements: the database's "
                  "share of the p50, and the statement that cost the most):", ""]
        for item in slow:
            top = re.sub(r"^SELECT .{40,}? FROM ", "SELECT … FROM ", item["top_statement"],
                         count=1)
            lines.append(f"- `{item['path'][:60]}`: database {item['db_ms']:,.0f} of "
                         f"{item['p50']:,.0f} ms, {item['statements']:.0f} statements; "
                         f"`{top[:200]}{'…' if len(top) > 200 else ''}`")
    if r.get("slow_statements"):
        lines += ["", f"**Statements slower than {SLOW_STATEMENT_MS} ms** while the endpoints "
                  "were timed (server log), with their plans (EXPLAIN ANALYZE afterwards; "
                  "whole plans in --json):", ""]
        for item in r["slow_statements"]:
            sql = re.sub(r"^SELECT .{40,}? FROM ", "SELECT … FROM ",
                         " ".join(item["statement"].split()), count=1)
            lines.append(f"- {item['max_ms']:,.0f} ms (×{item['count']}): `{sql[:220]}"
                         f"{'…' if len(sql) > 220 else ''}`")
            lines += [f"  - `{line.strip()}`" for line in plan_summary(item["plan"])]
    return "\n".join(lines) + "\n"


def _reading(r: dict) -> str:
    misses = []
    for key, name in (("writer_sqlite", "SQLite writer"), ("writer_postgres", "PostgreSQL writer"),
                      ("writer_postgres_full", "PostgreSQL writer at full size")):
        w = r.get(key)
        if w and w["rows_s"] < TARGET_ROWS_S:
            misses.append(f"{name} {w['rows_s']:,.0f}/s < {TARGET_ROWS_S:,}")
    for item in r.get("linking", []):
        if item["link"]["p95"] > TARGET_LINK_MS:
            misses.append(f"linking ({item['label']}) p95 {item['link']['p95']:.1f} ms > "
                          f"{TARGET_LINK_MS:g}")
    slow = [item for item in r.get("endpoints", []) if item["p95"] > TARGET_P95_MS]
    if slow:
        misses.append(f"{len(slow)} of {len(r['endpoints'])} endpoints p95 > "
                      f"{TARGET_P95_MS:g} ms (" + ", ".join(
                          f"`{item['path'].split('?')[0]}`" + (
                              "?" + item["path"].split("?", 1)[1][:24] if "?" in item["path"]
                              else "") + f" {item['p95']:.0f}" for item in slow) + ")")
    bad = [item for item in r.get("endpoints", []) if item["statuses"] != [200]]
    if bad:
        misses.append("not 200: " + ", ".join(item["path"] for item in bad))
    verdict = "all targets met" if not misses else "missed: " + "; ".join(misses)
    return (f"**Reading it.** Targets: ≥ {TARGET_ROWS_S:,} exchanges/s on both engines, linking "
            f"≤ {TARGET_LINK_MS:g} ms, every endpoint p95 ≤ {TARGET_P95_MS:g} ms at a million "
            f"rows — {verdict}. A full run (a million rows) takes about 10 minutes on a quiet "
            "machine, 8 of them filling (the trigram index of text search is most of it); the "
            "quick one (50,000) about 1.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.storage",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="3,000 exchanges per writer run, 50,000 stored requests")
    add_arguments(parser)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    results = run(args, lambda line: print(line, file=sys.stderr, flush=True))
    print(render(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
