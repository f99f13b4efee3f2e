"""The Dockerfile and docker-compose.yml, checked statically (no Docker engine here), and the
image's entrypoint script run for real outside Docker: it waits for PostgreSQL, migrates,
serves with gunicorn and stops gracefully."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import psycopg2
import pytest
import requests
import yaml

from app.config import load_settings
from tests.fakes.upstream import fold_sse
from tests.packaging.served import Served
from tests.pg import PostgresCluster
from tests.support import REPO

ENTRYPOINT = REPO / "packaging" / "entrypoint.sh"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    out, pending = [], ""
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def test_dockerfile():
    steps = _instructions()
    kinds = [kind for kind, _ in steps]
    assert steps[0][0] == "FROM" and steps[0][1].startswith("python:3.11-slim")
    assert kinds.count("FROM") == 1

    user = [args for kind, args in steps if kind == "USER"]
    assert user and user[-1] not in ("root", "0"), "runs as a user of its own"
    last_run = max(i for i, kind in enumerate(kinds) if kind == "RUN")
    assert kinds.index("USER") > last_run, "nothing runs as root after USER"
    assert "useradd" in next(args for kind, args in steps if kind == "RUN" and "useradd" in args)

    installs = [args for kind, args in steps if kind == "RUN" and "pip install" in args]
    assert installs == ["pip install -r requirements.txt"], "only pinned packages, from PyPI"
    assert not any(word in args for kind, args in steps if kind == "RUN"
                   for word in ("curl", "wget", "http://", "https://"))

    for kind, args in steps:
        if kind == "COPY":
            *sources, _ = args.split()
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: not in the repository"

    env = " ".join(args for kind, args in steps if kind == "ENV")
    assert "HOST=0.0.0.0" in env and "LOG_FORMAT=json" in env
    assert ("EXPOSE", "3000") in steps

    health = next(args for kind, args in steps if kind == "HEALTHCHECK")
    assert "/health/ready" in health and "--interval=" in health and "--timeout=" in health
    entry = next(args for kind, args in steps if kind == "ENTRYPOINT")
    assert entry == '["packaging/entrypoint.sh"]'
    assert os.access(ENTRYPOINT, os.X_OK)

    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".venv", ".git", "data", "credentials", ".env"} <= set(ignored)


def test_compose_file():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    db, proxy = compose["services"]["db"], compose["services"]["proxy"]
    assert db["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    volume = db["volumes"][0].split(":")
    assert volume[1] == "/var/lib/postgresql/data" and volume[0] in compose["volumes"], \
        "the database lives in a named volume"

    assert proxy["build"] == "."
    assert proxy["depends_on"]["db"]["condition"] == "service_healthy"
    assert proxy["environment"]["DATABASE_URL"].startswith("postgresql://nexus:")
    assert "@db:5432/nexus" in proxy["environment"]["DATABASE_URL"]
    mounts = {mount.split(":")[1]: mount.split(":") for mount in proxy["volumes"]}
    credentials = mounts["/app/credentials"]
    assert len(credentials) == 2, "credentials mounted read-write (OAuth refresh rewrites)"
    assert mounts["/app/data"][0] in compose["volumes"]
    grace = load_settings(environ={}, env_file=None).shutdown_grace_s
    assert int(proxy["stop_grace_period"].rstrip("s")) > grace


def test_entrypoint_runs_other_commands_given_as_arguments(tmp_path):
    run = subprocess.run([str(ENTRYPOINT), sys.executable, "-c", "print('as asked')"],
                         capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert (run.returncode, run.stdout) == (0, "as asked\n")


@pytest.fixture
def stopped_postgres():
    cluster = PostgresCluster().start()
    cluster.stop_server()
    yield cluster
    cluster.stop()


def test_entrypoint_waits_for_the_database_migrates_and_serves(fake_upstream_server, upstream,
                                                               tmp_path, stopped_postgres):
    url = stopped_postgres.dsn
    # The database comes up a few seconds after the proxy's container, as in docker compose.
    threading.Timer(3.0, stopped_postgres.start_server).start()
    served = Served([str(ENTRYPOINT)], tmp_path, {
        "PYTHON": sys.executable, "DATABASE_URL": url, "WEB_CONCURRENCY": "2",
        "CLAUDE_API_BASE_URL": fake_upstream_server.base_url, "DATABASE_WAIT_S": "30"})
    try:
        log = served.log_text()
        assert "Waiting for the database: cannot connect to the database" in log, log
        assert "Applied 0001_initial" in log
        assert "migrations:" not in log, "gunicorn does not apply them a second time"
        body = {"model": "claude-sonnet-4-5", "max_tokens": 32, "stream": True,
                "messages": [{"role": "user", "content": "hello"}]}
        answer = requests.post(served.url + "/v1/messages", json=body, timeout=30,
                               headers={"x-api-key": "sk-ant-api03-entrypoint-test-0000"})
        assert answer.status_code == 200
        assert fold_sse(answer.content)["stop_reason"] == "end_turn"
        assert served.stop() == 0
    finally:
        served.stop(signal.SIGKILL)
    with psycopg2.connect(url) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT id FROM requests")
        assert [row[0] for row in cursor.fetchall()] == [answer.headers["x-nexus-request-id"]]
