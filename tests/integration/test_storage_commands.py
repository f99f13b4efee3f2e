"""`flask --app wsgi db …` run as a user would, and psycopg2 under gevent, as the server runs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from app.storage import schema
from tests.integration.test_storage_schema import opened
from tests.support import REPO, free_port


def flask_env(database_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def flask_args(*args: str) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", str(REPO / "wsgi.py"), *args]


def flask(cwd, *args, database_url=None, stdin=None):
    return subprocess.run(flask_args(*args), cwd=cwd, env=flask_env(database_url), input=stdin,
                          capture_output=True, text=True, timeout=60)


ALL = ("0001_initial, 0002_ratelimit_request, 0003_usage_rollups, 0004_conversations, "
       "0005_search_and_lookup_indexes")


def test_db_commands(database_url, tmp_path):
    status = flask(tmp_path, "db", "status", database_url=database_url)
    assert status.returncode == 0, status.stderr
    assert f"Applied: none\nPending: {ALL}" in status.stdout
    # Processes starting together: each migration is applied once, the others wait and agree.
    racing = [subprocess.Popen(flask_args("db", "upgrade"), cwd=tmp_path,
                               env=flask_env(database_url), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [(proc.wait(60), *proc.communicate()) for proc in racing]
    assert [code for code, _, _ in results] == [0, 0, 0], results
    outputs = sorted(out.strip() for _, out, _ in results)
    assert outputs[0].startswith(f"Applied {ALL} to "), outputs
    assert all(out.endswith("is up to date (0005_search_and_lookup_indexes).")
               for out in outputs[1:]), outputs
    assert all(err == "" for _, _, err in results), results
    status = flask(tmp_path, "db", "status", database_url=database_url)
    assert f"Applied: {ALL}\nPending: none" in status.stdout
    refused = flask(tmp_path, "db", "downgrade", database_url=database_url, stdin="n\n")
    assert refused.returncode == 1 and "Aborted" in refused.stderr
    downgraded = flask(tmp_path, "db", "downgrade", "--steps", "1", "--yes",
                       database_url=database_url)
    assert downgraded.returncode == 0, downgraded.stderr
    assert downgraded.stdout.startswith("Rolled back 0005_search_and_lookup_indexes on ")
    assert status.stderr == downgraded.stderr == ""
    with opened(database_url) as db:
        assert schema.status(db) == (
            ["0001_initial", "0002_ratelimit_request", "0003_usage_rollups",
             "0004_conversations"], ["0005_search_and_lookup_indexes"])


def test_default_sqlite_file_is_relative_to_the_working_directory(tmp_path):
    upgraded = flask(tmp_path, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert upgraded.stdout.strip() == \
        f"Applied {ALL} to sqlite data/nexus.db."
    assert (tmp_path / "data" / "nexus.db").is_file()


def test_unreachable_or_bad_database_is_one_clear_line(tmp_path):
    url = f"postgresql://nexus:secret@127.0.0.1:{free_port()}/nexus"
    helped = flask(tmp_path, "db", "--help", database_url=url)
    assert helped.returncode == 0 and "upgrade" in helped.stdout, "help needs no database"
    for args in (["status"], ["upgrade"], ["downgrade", "--yes"]):
        result = flask(tmp_path, "db", *args, database_url=url)
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "secret" not in result.stderr, result.stderr
        assert lines[0].startswith("Error: cannot ")
        assert "(postgresql://nexus:***@127.0.0.1:" in lines[0]
        assert "Connection refused" in lines[0]
    bad = flask(tmp_path, "db", "status", database_url="postgresql://nexus:secret@h/db?bogus=1")
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1
    assert bad.stderr.startswith("error: invalid setting DATABASE_URL=")
    assert "secret" not in bad.stderr


GREEN = textwrap.dedent("""
    from gevent import monkey; monkey.patch_all()
    import socket, sys, time
    import gevent, psycopg2.extensions
    from app.storage import database
    db = database.make_database(sys.argv[1], 2)
    database.make_database(sys.argv[1], 2)  # a second database: patching stays once
    print(psycopg2.extensions.get_wait_callback().__module__)
    started = time.monotonic()
    def sleep():
        with db.connection_context():
            db.execute_sql("SELECT pg_sleep(0.5)")
    gevent.joinall([gevent.spawn(sleep), gevent.spawn(sleep)], raise_error=True)
    print(round(time.monotonic() - started, 2))
    silent = socket.socket(); silent.bind(("127.0.0.1", 0)); silent.listen(1)
    mute = database.make_database(
        "postgresql://x@127.0.0.1:%d/x?connect_timeout=1" % silent.getsockname()[1], 1)
    started = time.monotonic()
    try:
        mute.connect()
    except Exception as err:
        print(type(err).__name__, err, round(time.monotonic() - started, 1))
""")


def test_psycopg2_cooperates_with_gevent(postgres_dsn):
    result = subprocess.run([sys.executable, "-c", GREEN, postgres_dsn], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    module, elapsed, timeout = result.stdout.splitlines()
    assert module == "psycogreen.gevent"
    assert float(elapsed) < 0.9, "two pg_sleep(0.5) in two greenlets must overlap"
    assert timeout.startswith("OperationalError no answer from the server within 1s")
    assert float(timeout.split()[-1]) < 3

