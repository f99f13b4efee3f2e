"""Database faults under load: PostgreSQL stopped and restarted, the SQLite file locked by
another process, and the spool's disk full while the database is away.

Clients never notice (every answer is the upstream's); `/health` says `degraded` while it
lasts and the log says why; once the database answers, every exchange is in it exactly once —
except, with the spool's disk full too, the rows the proxy counted and reported as dropped.
The single-phase versions (outage with no traffic in flight, a lock and its latency, a spool
that is a file) are in tests/integration/test_spool.py.
"""

from __future__ import annotations

import os
import resource
import subprocess

import pytest

from tests.databases import fresh_postgres
from tests.fakes.upstream import Reply, text_block
from tests.integration.recording_support import database_locked
from tests.pg import PostgresCluster
from tests.reliability.clients import Load, eventually
from tests.reliability.outages import postgres_away

FAST = dict(STORAGE_BATCH_SIZE="20", STORAGE_BATCH_INTERVAL_MS="50")


@pytest.fixture
def streaming_upstream(upstream):
    """The fake answers every request with a short stream that takes ~0.2 s: under load, some
    exchanges are always in flight when the fault strikes."""
    before = upstream.default
    upstream.default = Reply(content=[text_block("a few words to stream slowly")],
                             event_delay_s=0.02)
    yield upstream
    upstream.default = before


def settled(report: dict) -> bool:
    writer = report["writer"]
    return report["status"] == "ok" and writer["queue_depth"] == 0 and \
        writer["spooled_rows_pending"] == 0


def all_answered(answers) -> None:
    assert answers and all(a is not None and a.status_code == 200 for a in answers), \
        [None if a is None else a.status_code for a in answers if a is None or a.status != 200]


def writer_log(proxy) -> list[str]:
    return [r["msg"] for r in proxy.records() if r.get("logger") == "app.storage.writer"]


def test_postgresql_stopped_and_restarted_under_load(start_proxy, streaming_upstream, ledger):
    book = ledger("database: PostgreSQL stopped, restarted")
    cluster = PostgresCluster().start()  # its own server: this test stops it
    try:
        proxy = start_proxy(DATABASE_URL=cluster.dsn, **FAST)
        load = Load(proxy, book).start()
        load.wait_sent(30)
        cluster.stop_server()  # fast shutdown: the writer's connections are cut
        eventually(proxy, lambda r: r["status"] == "degraded" and r["writer"]["degraded"],
                   "degraded while PostgreSQL is down")
        load.wait_sent(40)
        cluster.start_server()
        load.wait_sent(30)
        all_answered(load.stop())
        book.audit(cluster.dsn, timeout=60)
        eventually(proxy, settled, "back to ok")
        log = writer_log(proxy)
        assert any("cannot write to the database" in m for m in log), log
        assert any("answers again" in m for m in log), log
    finally:
        cluster.stop()


def test_sqlite_locked_by_another_process_under_load(start_proxy, streaming_upstream, ledger,
                                                     tmp_path):
    book = ledger("database: SQLite locked (BEGIN EXCLUSIVE)")
    database = f"sqlite:///{tmp_path}/locked.db"
    proxy = start_proxy(DATABASE_URL=database, **FAST)
    load = Load(proxy, book).start()
    load.wait_sent(20)
    with database_locked(database):  # a sqlite3 connection holding BEGIN EXCLUSIVE
        # An insert waits 5 s for the lock, then its batch goes to the spool.
        eventually(proxy, lambda r: r["writer"]["rows_spooled"] > 0 and r["status"] ==
                   "degraded", "spooling while the file is locked")
        load.wait_sent(20)
    load.wait_sent(20)
    all_answered(load.stop())
    book.audit(database, timeout=60)
    report = eventually(proxy, settled, "back to ok")
    assert report["writer"]["rows_replayed"] == report["writer"]["rows_spooled"] > 0
    assert any("database is locked" in m for m in writer_log(proxy) + [
        report["writer"]["last_error"] or ""])


@pytest.fixture(params=["tmpfs" if os.geteuid() == 0 else "rlimit"])
def full_spool(request, tmp_path):
    """A real full file system when root may mount a tiny tmpfs; else the file-size limit
    (RLIMIT_FSIZE: writes past it fail with EFBIG, as a full disk fails them with ENOSPC).
    The parameter names the one used."""
    # Yields (spool folder, apply(pid)): the spool can hold only ~64 KiB.
    folder = tmp_path / "spool"
    folder.mkdir()
    if request.param == "tmpfs":
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                       check=True)
        yield folder, lambda pid: None
        subprocess.run(["umount", "-l", str(folder)], check=True)
    else:
        limit = 64 << 10
        yield folder, lambda pid: resource.prlimit(pid, resource.RLIMIT_FSIZE, (limit, limit))


def test_spool_disk_full_while_the_database_is_away(start_proxy, streaming_upstream, ledger,
                                                    full_spool, postgres_dsn):
    book = ledger("database away + spool disk full")
    folder, limit = full_spool
    with fresh_postgres(postgres_dsn) as url:
        proxy = start_proxy(DATABASE_URL=url, SPOOL_DIR=str(folder), **FAST)
        limit(proxy.proc.pid)
        with postgres_away(postgres_dsn, url):
            load = Load(proxy, book).start()
            report = eventually(proxy, lambda r: r["writer"]["rows_dropped"] > 0,
                                "dropping rows once the spool is full")
            assert report["status"] == "degraded" and report["writer"]["degraded"]
            load.wait_sent(20)  # still serving with nowhere to put the rows
            all_answered(load.stop())
        report = eventually(proxy, lambda r: r["writer"]["queue_depth"] == 0 and
                            r["writer"]["spooled_rows_pending"] == 0 and
                            not r["writer"]["degraded"], "recovered", timeout=60)
        dropped = report["writer"]["rows_dropped"]
        audit = book.audit(url, may_lose=dropped, timeout=60)
        assert len(audit.lost) == dropped, "every row is recorded or counted as dropped"
        assert report["writer"]["rows_spooled"] > 0, "the spool took what it could"
        errors = [r["msg"] for r in proxy.records() if r.get("level") == "error"]
        assert any("cannot spool" in m and "dropped" in m for m in errors), errors
        proxy.stop()
