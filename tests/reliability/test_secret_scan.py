"""The suite's secret scan (tests/secret_scan.py) finds what it must: shaped and literal secrets,
in SQLite rows (through the WAL), in files, and — run as the real plugin around a small suite
of planted leaks — in a PostgreSQL database that is dropped before the run ends, in a proxy
process's log, in captured output, in a test-sample file and in a rendered page. The planted
run must fail because of the scan alone, and name every place."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from tests.secret_scan import Scanner, literal_secrets
from tests.support import REPO

SHAPED_KEY = "sk-ant-api03-scanner-unit-test-ABCDEFGHIJ-1234"
CLIENT_KEY = "cnp_live_scannerunittest0123456789"
LITERAL = "literal-secret-for-the-scanner-5678"


def test_shaped_and_literal_secrets_are_found_and_masked_forms_are_not():
    scanner = Scanner({LITERAL})
    scanner.scan(f"x-api-key: {SHAPED_KEY}", "a")
    scanner.scan(f'{{"client_api_key": "{CLIENT_KEY}"}}', "b")
    scanner.scan(f"password={LITERAL}&x=1".encode(), "c")
    scanner.scan("sk-ant-…1234 cnp_live_…6789 Bearer [redacted] sk-ant-api03", "d")
    scanner.scan("input_tokens=12 sk-ant- cnp_live_", "e")
    assert [(f.where, f.secret.decode()) for f in scanner.findings] == [
        ("a", SHAPED_KEY), ("b", CLIENT_KEY), ("c", LITERAL)]
    assert SHAPED_KEY not in str(scanner.findings[0])  # reported masked
    assert str(scanner.findings[0]).endswith("ending in …1234 (46 characters)")


def test_a_tree_is_read_row_by_row_and_file_by_file():
    scanner = Scanner({LITERAL})
    with tempfile.TemporaryDirectory() as folder:  # outside the suite's temp: never swept
        root = Path(folder)
        db = sqlite3.connect(root / "nexus.db")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE requests (id TEXT, request_headers TEXT, body BLOB)")
        db.execute("INSERT INTO requests VALUES ('1', ?, ?)",
                   (f'[["x-api-key", "{SHAPED_KEY}"]]', LITERAL.encode()))
        db.commit()  # still in the WAL file, not checkpointed: read through it
        (root / "samples").mkdir()
        (root / "samples" / "one.json").write_text(f'{{"key": "{CLIENT_KEY}"}}')
        (root / "masked.json").write_text('{"x-api-key": "sk-ant-…1234"}')
        (root / "team.example.com.credentials.json").write_text(f'{{"api_key": "{SHAPED_KEY}"}}')
        (root / ".env").write_text(f"DASHBOARD_API_KEY={LITERAL}\n")
        scanner.scan_tree(root)
        db.close()
    found = sorted((re.sub(r" /\S+/", " ", f.where), f.secret.decode())
                   for f in scanner.findings)
    assert found == sorted([("file one.json", CLIENT_KEY),
                            ("sqlite nexus.db table requests", LITERAL),
                            ("sqlite nexus.db table requests", SHAPED_KEY)]), found


def test_the_suites_own_secrets_are_known_and_field_names_are_not():
    literals = literal_secrets()
    assert {"dashboard-key-abuse-0123456789abcdef", "correct horse battery",
            "dashboard-key-0123456789abcdef", "k" * 32} <= literals
    assert not {"input_tokens", "access_token", "x-api-key", "Authorization",
                "DASHBOARD_API_KEY"} & literals


PLANTS = '''
"""Leaks planted on purpose; run only by test_secret_scan.py, as a pytest run of its own."""
import json

import flask
import psycopg2
import requests

from tests import secret_scan

KEY = "sk-ant-api03-planted-by-the-scanner-test-0000-PLNT"
NOTE = "planted-literal-note-for-the-scan-9999"
secret_scan.register(NOTE)


def test_a_row_in_each_engine(database_url):
    if database_url.startswith("sqlite"):
        import sqlite3
        from pathlib import Path
        path = Path(database_url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE requests (body TEXT)")
            db.execute("INSERT INTO requests VALUES (?)", (KEY,))
    else:
        with psycopg2.connect(database_url) as db, db.cursor() as cursor:
            cursor.execute("CREATE TABLE requests (body TEXT)")
            cursor.execute("INSERT INTO requests VALUES (%s)", (KEY,))
        db.close()  # the database is dropped after this test: scanned just before


def test_a_proxy_log_line(start_proxy):
    # A header the proxy has no reason to think secret is logged (DEBUG) as sent.
    proc = start_proxy(DEBUG="true", LOG_LEVEL="debug")
    requests.get(proc.url + "/v1/models", headers={"X-Note": NOTE, "x-api-key": KEY},
                 timeout=10)


def test_captured_output():
    print("oops", KEY)


def test_a_sample_file(tmp_path):
    (tmp_path / "test-samples").mkdir()
    (tmp_path / "test-samples" / "one.json").write_text(json.dumps({"key": KEY}))


def test_a_rendered_page():
    app = flask.Flask("plant")
    app.add_url_rule("/dashboard/leak", "leak", lambda: f"<p>{KEY}</p>")
    assert app.test_client().get("/dashboard/leak").status_code == 200
'''


def test_the_plugin_fails_a_run_that_leaks_and_names_every_place(postgres_dsn):
    with tempfile.TemporaryDirectory() as folder:  # outside the suite's temp: never swept
        root = Path(folder)
        (root / "pytest.ini").write_text("[pytest]\n")
        (root / "test_plants.py").write_text(textwrap.dedent(PLANTS))
        env = {**os.environ, "NEXUS_TEST_POSTGRES_DSN": postgres_dsn,
               "PYTHONPATH": str(REPO)}
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p",
             "tests.conftest", "-c", str(root / "pytest.ini"), "--rootdir", str(root),
             "--basetemp", str(root / "base"), str(root / "test_plants.py")],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr
    assert "6 passed" in out, out[-3000:]  # the tests themselves pass ...
    assert done.returncode == 1, out[-3000:]  # ... and the scan fails the run
    summary = out[out.index("secret scan"):]
    for place in (r"sqlite \S+/test_a_row_in_each_engine_sqli\d+/data/nexus\.db table requests",
                  r"postgresql nexus_[0-9a-f]+ table requests",
                  r"log of the proxy on port \d+: a secret ending in …9999",
                  r"test_captured_output captured stdout call",
                  r"file \S+/test-samples/one\.json",
                  r"page /dashboard/leak \(in-process app\)"):
        assert re.search(place, summary), (place, summary)
    assert "PLNT" in summary and "sk-ant-api03-planted" not in out  # masked in the report
