"""`/health` (SPEC §9.3): every part reported, on both engines; a database that stops or hangs
makes it degraded within ~2 s, never slower, and never stalls the rest of the process."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import requests

from app.storage.checks import DatabaseCheck
from app.storage.database import make_database
from app.storage.schema import migrations_dir, upgrade
from app.version import __version__
from tests.databases import fresh_postgres
from tests.pg import PostgresCluster
from tests.support import free_port

HEADERS = {"x-api-key": "sk-ant-api03-health-test-0000000000",
           "anthropic-version": "2023-06-01"}
BODY = {"model": "claude-sonnet-4-5", "max_tokens": 16,
        "messages": [{"role": "user", "content": "Hi"}]}
LATEST = sorted(p.stem for p in migrations_dir().glob("[0-9][0-9][0-9][0-9]_*.py"))[-1]


def health(proxy, limit_s: float = 3.0) -> dict:
    started = time.monotonic()
    response = requests.get(proxy.url + "/health", timeout=10)
    assert time.monotonic() - started < limit_s, "health must answer quickly"
    assert response.status_code == 200
    return response.json()


def wait_health(proxy, done, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    report = health(proxy)
    while not done(report):
        assert time.monotonic() < deadline, f"health never got there: {report}"
        time.sleep(0.1)
        report = health(proxy)
    return report


def test_health_reports_every_part(database_url, start_proxy, tmp_path):
    secret = "hunter2-not-for-health"
    if database_url.startswith("postgresql"):  # trust auth: the password is never asked for
        database_url = database_url.replace("postgres@", f"postgres:{secret}@", 1)
    spool = tmp_path / "spool"
    proxy = start_proxy(DATABASE_URL=database_url, SPOOL_DIR=str(spool))
    assert requests.post(proxy.url + "/v1/messages", json=BODY, headers=HEADERS,
                         timeout=10).ok
    response = requests.get(proxy.url + "/health", timeout=5)
    assert secret not in response.text
    report = wait_health(proxy, lambda r: r["writer"]["rows_written"] == 1)

    assert report["status"] == "ok" and report["version"] == __version__
    assert report["uptime_s"] > 0 and report["in_flight"] == 0
    assert report["upstream"]["last_seen"]["status"] == 200
    database = report["database"]
    if database_url.startswith("postgresql"):
        assert database["engine"] == "postgresql"
        assert database["url"] == database_url.replace(secret, "***")
    else:
        assert database == {**database, "engine": "sqlite", "url": database_url}
    assert database["reachable"] is True and database["error"] is None
    assert database["latency_ms"] >= 0 and database["checked_at"].endswith("+00:00")
    assert database["schema"] == {"version": LATEST, "pending": 0}
    assert report["spool"] == {"dir": str(spool), "pending_rows": 0, "files": 0, "bytes": 0,
                               "rejected_files": 0, "writable": True,
                               "last_append_failed": False}
    assert report["writer"]["state"] == "running" and report["writer"]["queue_depth"] == 0
    notifications = report["notifications"]
    assert notifications["state"] == "running" and notifications["sent"] == 0
    assert notifications["queued"] == 0
    assert report["live"]["running"] is True and report["live"]["clients"] == 0
    # A scraper polling /health does not poll the database: the check is kept a few seconds.
    assert health(proxy)["database"]["checked_at"] == database["checked_at"]


def test_health_when_postgresql_stops_then_comes_back(start_proxy):
    cluster = PostgresCluster().start()  # its own server: this test stops it
    try:
        proxy = start_proxy(DATABASE_URL=cluster.dsn)
        assert health(proxy)["database"]["reachable"] is True
        cluster.stop_server()
        report = wait_health(proxy, lambda r: not r["database"]["reachable"])
        assert report["status"] == "degraded" and report["database"]["error"]
        assert report["database"]["schema"] is None
        cluster.start_server()
        report = wait_health(proxy, lambda r: r["database"]["reachable"])
        assert report["status"] == "ok" and report["database"]["schema"]["version"] == LATEST
    finally:
        cluster.stop()


class Relay:
    """A TCP relay to PostgreSQL that can turn into a black hole: new connections are accepted
    and then never answered (a server that hangs, a firewall dropping packets)."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.black_hole = False
        self.port = free_port()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._sockets.append(client)
            if self.black_hole:
                continue
            server = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets.append(server)
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._listener.close()
        for sock in self._sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def test_a_hanging_database_is_degraded_within_two_seconds(postgres_dsn, start_proxy):
    with fresh_postgres(postgres_dsn) as url:
        target = int(url.rsplit(":", 1)[1].split("/", 1)[0])
        relay = Relay(target)
        try:
            relayed = url.replace(f":{target}/", f":{relay.port}/")
            proxy = start_proxy(DATABASE_URL=relayed)
            relay.black_hole = True
            checked: dict = {}
            thread = threading.Thread(target=lambda: checked.update(health(proxy)))
            thread.start()
            time.sleep(0.3)  # the check is now waiting on the silent server
            started = time.monotonic()
            assert requests.get(proxy.url + "/health/live", timeout=5).ok
            assert time.monotonic() - started < 0.5, "the hub is not blocked by the check"
            thread.join(5)
            assert checked["status"] == "degraded"
            assert checked["database"]["reachable"] is False
            assert "no answer within 2s" in checked["database"]["error"]
        finally:
            relay.close()


def test_spool_that_cannot_be_written_is_reported(start_proxy, tmp_path):
    not_a_folder = tmp_path / "spool"
    not_a_folder.write_text("a file where the spool folder should be")
    proxy = start_proxy(SPOOL_DIR=str(not_a_folder))
    assert health(proxy)["spool"]["writable"] is False


def test_database_check_caches_and_notices_recovery(tmp_path):
    path = Path(tmp_path) / "nexus.db"
    db = make_database(f"sqlite:///{path}", 1)
    progress = [0]
    check = DatabaseCheck(db, progress=lambda: progress[0])
    missing = check.result()
    assert missing["reachable"] is False and "unable to open" in missing["error"]
    with db.connection_context():
        upgrade(db)
    assert check.result() is missing, "a failure is kept a moment..."
    progress[0] += 1
    found = check.result()
    assert found["reachable"] is True, "...unless the writer has committed since"
    assert found["schema"] == {"version": LATEST, "pending": 0}
    assert check.result() is found
    db.close()


def test_database_check_without_gevent_on_postgresql(postgres_dsn):
    with fresh_postgres(postgres_dsn) as url:
        db = make_database(url, 1)
        with db.connection_context():
            upgrade(db)
        found = DatabaseCheck(db).result()
        assert found["reachable"] is True and found["engine"] == "postgresql"
        assert found["schema"] == {"version": LATEST, "pending": 0}
        db.close_all()
    closed = make_database(f"postgresql://postgres@127.0.0.1:{free_port()}/none", 1)
    started = time.monotonic()
    down = DatabaseCheck(closed).result()
    assert down["reachable"] is False and down["schema"] is None
    assert time.monotonic() - started < 3
