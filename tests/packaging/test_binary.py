"""The single-file binary (SPEC §1, §10): dist/nexus-proxy serves like `make run` with SQLite in
the user's data folder, and runs the operations CLI.

The binary is built by the `binary` fixture when it is missing or older than what goes into it,
so `make test` builds and tests it while a subset run (`PYTEST_ARGS=-k …`) never builds. Every
run starts in an empty folder outside the checkout with its own HOME and XDG_DATA_HOME: what it
serves can only come from the bundle.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import requests

from app.config import SETTINGS
from app.version import __version__
from tests.databases import fresh_postgres
from tests.fakes.upstream import Reply, fold_sse, text_block
from tests.support import REPO, free_port

# Building takes ~20-60 s, within the first test that asks for the binary.
pytestmark = pytest.mark.timeout(300)

BINARY = REPO / "dist" / "nexus-proxy"
# What the spec bundles or reads: a change to any of them makes the binary stale.
SOURCES = ("app", "templates", "static", "migrations", "packaging/nexus_proxy.py",
           "packaging/nexus-proxy.spec", "packaging/hooks", "packaging/build", "requirements.txt")
GROUPS = ("conversations", "credentials", "db", "keys", "retention", "samples", "serve", "users")


def _newest_source() -> float:
    newest = 0.0
    for name in SOURCES:
        root = REPO / name
        paths = [root] if root.is_file() else root.rglob("*")
        for path in paths:
            if path.is_file() and "__pycache__" not in path.parts:
                newest = max(newest, path.stat().st_mtime)
    return newest


@pytest.fixture(scope="session")
def binary() -> Path:
    """dist/nexus-proxy, built by packaging/build unless it is newer than its sources."""
    if not BINARY.is_file() or BINARY.stat().st_mtime < _newest_source():
        built = subprocess.run([str(REPO / "packaging" / "build")], cwd=REPO,
                               capture_output=True, text=True, timeout=280)
        assert built.returncode == 0, f"packaging/build failed:\n{built.stdout}{built.stderr}"
    return BINARY


@pytest.fixture
def place(tmp_path):
    """An empty working folder, a home and a data home of the test's own, outside the repo."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    return cwd, tmp_path / "home", tmp_path / "xdg"


def _env(home: Path, xdg: Path, **settings: str) -> dict[str, str]:
    drop = {s.name for s in SETTINGS} | {"NEXUS_HOME", "XDG_DATA_HOME", "HTTP_PROXY",
                                         "HTTPS_PROXY", "http_proxy", "https_proxy"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(HOME=str(home), XDG_DATA_HOME=str(xdg), **settings)
    return env


def _run(binary: Path, place, *args: str, **settings: str) -> subprocess.CompletedProcess:
    cwd, home, xdg = place
    return subprocess.run([str(binary), *args], cwd=cwd, env=_env(home, xdg, **settings),
                          capture_output=True, text=True, timeout=60)


def test_serves_streams_records_and_stops(binary, place, upstream):
    cwd, home, xdg = place
    data = xdg / "claude-nexus-proxy"
    upstream.script(Reply(content=[text_block("Hello from the single binary.")]))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = _env(home, xdg, HOST="127.0.0.1", PORT=str(port), SHUTDOWN_GRACE_S="5",
               CLAUDE_API_BASE_URL=upstream.base_url)
    started = time.monotonic()
    proc = subprocess.Popen([str(binary)], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_live(url, proc)
        print(f"binary start-up to /health/live: {time.monotonic() - started:.2f} s")

        body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True,
                "messages": [{"role": "user", "content": "Hi"}]}
        answer = requests.post(f"{url}/v1/messages", json=body, timeout=30, headers={
            "x-api-key": "sk-ant-api03-binary-test", "anthropic-version": "2023-06-01"})
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        request_id = answer.headers["x-nexus-request-id"]
        sent = upstream.wait_for(1)[0]
        assert answer.content == sent.response_body  # the whole stream, byte for byte
        assert fold_sse(answer.content)["content"] == [text_block("Hello from the single "
                                                                  "binary.")]

        page = requests.get(f"{url}/dashboard/", timeout=10)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        asset = requests.get(f"{url}/static/vendor/htmx.min.js", timeout=10)
        assert asset.status_code == 200
        assert asset.content == (REPO / "static" / "vendor" / "htmx.min.js").read_bytes()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert f"Data folder: {data} (nexus.db, spool/, credentials/, test-samples/, secret_key)" \
        in out
    assert "Traceback" not in err

    assert (data / "secret_key").stat().st_mode & 0o777 == 0o600
    assert not (cwd / "data").exists()  # nothing written where it was started
    with sqlite3.connect(data / "nexus.db") as db:
        rows = db.execute("SELECT stream, outcome, output_tokens FROM requests WHERE id = ?",
                          (request_id,)).fetchall()
    assert rows == [(1, "completed", sent.usage["output_tokens"])]


def _wait_live(url: str, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the binary exited at start:\n{proc.communicate()}")
        try:
            if requests.get(url + "/health/live", timeout=1).ok:
                return
        except requests.ConnectionError:
            time.sleep(0.05)
    raise AssertionError("the binary did not answer /health/live")


def test_help_lists_every_group_and_the_data_folder(binary, place):
    done = _run(binary, place, "--help")
    assert done.returncode == 0, done.stderr
    listed = [line.split()[0] for line in done.stdout.split("Commands:")[1].splitlines()
              if line.startswith("  ") and line.split()[0].islower()]
    assert set(GROUPS) <= set(listed)
    assert str(place[2] / "claude-nexus-proxy") in done.stdout


def test_version(binary, place):
    done = _run(binary, place, "--version")
    assert (done.returncode, done.stdout.strip()) == (0, f"nexus-proxy {__version__}")


def test_db_commands_use_the_data_folder(binary, place):
    database = place[2] / "claude-nexus-proxy" / "nexus.db"
    upgraded = _run(binary, place, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    status = _run(binary, place, "db", "status")
    assert status.returncode == 0, status.stderr
    assert f"sqlite {database}" in status.stdout
    assert "0001_initial" in status.stdout and "Pending: none" in status.stdout


def test_env_file_and_nexus_home(binary, place, tmp_path):
    cwd = place[0]
    (cwd / ".env").write_text("DATABASE_URL=sqlite:///from-env-file.db\n")
    done = _run(binary, place, "db", "status", NEXUS_HOME=str(tmp_path / "nexus-home"))
    assert done.returncode == 0, done.stderr
    assert "sqlite from-env-file.db" in done.stdout  # the user's setting wins
    assert (tmp_path / "nexus-home" / "secret_key").is_file()  # the rest goes to NEXUS_HOME


def test_db_upgrade_on_postgresql(binary, place, postgres_dsn):
    """The bundled psycopg2 (and its libpq) works: DATABASE_URL may name a PostgreSQL."""
    with fresh_postgres(postgres_dsn) as url:
        upgraded = _run(binary, place, "db", "upgrade", DATABASE_URL=url)
        assert upgraded.returncode == 0, upgraded.stderr
        status = _run(binary, place, "db", "status", DATABASE_URL=url)
    assert status.returncode == 0, status.stderr
    assert "Pending: none" in status.stdout
    assert not (place[2] / "claude-nexus-proxy" / "nexus.db").exists()


@pytest.mark.parametrize("args", [("db", "status", "--bogus"), ("frobnicate",),
                                  ("serve", "--port", "http")])
def test_a_wrong_argument_is_one_line(binary, place, args):
    done = _run(binary, place, *args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith("Error: ")


def test_a_bad_setting_is_one_line(binary, place):
    done = _run(binary, place, "db", "status", PORT="abc")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: invalid setting PORT='abc': expected a whole number"


def test_credentials_status_reads_the_data_folder(binary, place):
    folder = place[2] / "claude-nexus-proxy" / "credentials"
    folder.mkdir(parents=True)
    (folder / "team.example.com.credentials.json").write_text(json.dumps(
        {"type": "api_key", "accountId": "acc_binary", "api_key": "sk-ant-api03-" + "x" * 40}))
    done = _run(binary, place, "credentials", "status")
    assert done.returncode == 0, done.stderr
    assert str(folder) in done.stdout and "team.example.com" in done.stdout
