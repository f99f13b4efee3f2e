"""Process faults: SIGTERM under load, and kill -9 followed by a restart.

SIGTERM: in-flight streams finish (within SHUTDOWN_GRACE_S), new connections are refused, the
queue is written (or spooled) and the process exits 0; a restart finds every exchange recorded
once. kill -9: what was spooled is replayed by the next start, exactly once even when that
replay is itself killed; only the rows still queued in memory are lost, as documented.
tests/integration/test_lifecycle.py has the single-stream and grace-period cases.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time

import pytest

from tests.databases import fresh_postgres
from tests.fakes.upstream import Reply, text_block
from tests.reliability.clients import (
    Crowd,
    Load,
    eventually,
    message,
    request_bytes,
    sse_events,
)
from tests.reliability.outages import postgres_away


def test_sigterm_under_load(start_proxy, upstream, ledger, tmp_path):
    book = ledger("process: SIGTERM under load")
    settings = dict(DATABASE_URL=f"sqlite:///{tmp_path}/term.db", SPOOL_DIR=str(tmp_path / "sp"),
                    SHUTDOWN_GRACE_S="20",
                    # Nothing is written before the shutdown: its drain does all the work.
                    STORAGE_BATCH_INTERVAL_MS="60000", STORAGE_BATCH_SIZE="10000")
    proxy = start_proxy(**settings)
    load = Load(proxy, book, workers=4).start()
    load.wait_sent(40)
    streams = 12
    upstream.script(*[Reply(content=[text_block("slow " * 40)], event_delay_s=0.05)
                      for _ in range(streams)])
    body = json.dumps(message(stream=True)).encode()
    crowd = Crowd(proxy.port, [(entry, request_bytes(proxy.port, entry, body))
                               for entry in (book.new() for _ in range(streams))])
    reader = threading.Thread(target=crowd.run, args=(60,))
    reader.start()
    deadline = time.monotonic() + 10
    while sum(r.header("user-agent", ) in {f"reliability/{e.tag}" for e, _ in crowd.requests}
              for r in upstream.received) < streams:
        assert time.monotonic() < deadline, "the streams never reached the upstream"
        time.sleep(0.02)
    proxy.proc.send_signal(signal.SIGTERM)
    load.stop()  # keep-alive clients get their last answers or a closed connection
    refused = False
    deadline = time.monotonic() + 5
    while not refused and time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()
            time.sleep(0.02)
        except OSError:
            refused = True
    assert refused, "still accepting connections after SIGTERM"
    reader.join(timeout=60)
    assert proxy.proc.wait(timeout=30) == 0
    for entry, _ in crowd.requests:
        assert entry.status == 200 and sse_events(entry.body)[-1][0] == "message_stop", \
            "in-flight streams finish during the grace period"
    # Load clients cut at the signal never reached the proxy; drop them from the book.
    for entry in [e for e in book.sent.values() if e.status is None]:
        del book.sent[entry.tag]
    assert "spooling them" not in proxy.log_text(), "the drain wrote the queue in time"
    restarted = start_proxy(**settings)
    book.audit(settings["DATABASE_URL"])
    restarted.stop()


@pytest.mark.parametrize("replay_killed", [False, True], ids=["restart", "replay-killed-too"])
def test_kill_9_then_restart(start_proxy, upstream, ledger, tmp_path, postgres_dsn,
                             replay_killed):
    book = ledger("process: kill -9, restart")
    queued = 5
    spool = str(tmp_path / "spool")
    with fresh_postgres(postgres_dsn) as database:
        # Past STORAGE_QUEUE_MAX exchanges go to the spool at once (fsynced), and with the
        # database away they stay there; the queued ones wait for an interval that never
        # comes: they are the rows a kill -9 may lose.
        first = start_proxy(DATABASE_URL=database, SPOOL_DIR=spool,
                            STORAGE_QUEUE_MAX=str(queued), STORAGE_BATCH_INTERVAL_MS="60000",
                            STORAGE_BATCH_SIZE="10000")
        with postgres_away(postgres_dsn, database):
            load = Load(first, book, workers=4).start()
            load.wait_sent(60)
            answers = load.stop()
            assert all(a is not None and a.status_code == 200 for a in answers)
            report = eventually(first, lambda r: r["writer"]["rows_spooled"] ==
                                len(answers) - queued, "everything past the queue spooled")
            assert report["writer"]["queue_depth"] == queued
            assert report["writer"]["rows_written"] == 0
            first.stop(signal.SIGKILL)
        settings = dict(DATABASE_URL=database, SPOOL_DIR=spool, STORAGE_BATCH_SIZE="5",
                        STORAGE_BATCH_INTERVAL_MS="50")
        second = start_proxy(**settings)
        if replay_killed:  # killed again in the middle of its replay (or just after it)
            eventually(second, lambda r: r["writer"]["rows_replayed"] > 0, "replaying")
            second.stop(signal.SIGKILL)
            second = start_proxy(**settings)
        eventually(second, lambda r: r["writer"]["spooled_rows_pending"] == 0 and
                   r["status"] == "ok", "replayed")
        audit = book.audit(database, may_lose=queued)
        assert len(audit.lost) == queued, "only the queued rows are lost"
        second.stop()
