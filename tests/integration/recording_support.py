"""Helpers of the recording tests: traffic through a proxy process, its writer's health, the
rows it stored, and a database made slow on purpose (a lock held by the test)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg2
import requests

from tests.databases import opened

KEY = "sk-ant-api03-recording-secret-key-0123456789abcdef"
PROMPT_KEY = "sk-ant-oat01-pasted-in-a-prompt-ZYXWVUTSRQ"
BEARER = "cnp_live_bearer-secret-9f8e7d6c5b4a"
COOKIE = "session=cookie-secret-5a4b3c2d1e"
SECRETS = (KEY, PROMPT_KEY, BEARER, COOKIE)


@dataclass
class Sent:
    """One request through the proxy: what was sent, how the client saw it."""

    seq: int
    body: dict | None
    status: int
    request_id: str
    seconds: float


def message_body(seq: int, stream: bool, text: str = "", **extra) -> dict:
    """A Messages request whose prompt names its sequence number (matched at the upstream)."""
    return {"model": "claude-sonnet-4-5", "max_tokens": 256, "stream": stream,
            "messages": [{"role": "user", "content": f"request {seq}: {text}"}], **extra}


def send(base_url: str, seq: int, body: dict | None, path: str = "/v1/messages",
         timeout: float = 30, session: requests.Session | None = None,
         headers: dict | None = None) -> Sent:
    """One request with a client key; `body=None` sends a GET."""
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01", "x-test-seq": str(seq),
               **(headers or {})}
    http = session or requests
    started = time.monotonic()
    if body is None:
        response = http.get(base_url + path, headers=headers, timeout=timeout)
    else:
        response = http.post(base_url + path, json=body, headers=headers, timeout=timeout)
    _ = response.content  # a stream counts once it is all read
    return Sent(seq, body, response.status_code, response.headers.get("x-nexus-request-id", ""),
                time.monotonic() - started)


def send_many(base_url: str, bodies: dict[int, dict], concurrency: int = 16,
              timeout: float = 30) -> list[Sent]:
    """Send every body concurrently (a keep-alive session per worker); results in seq order."""
    sessions: dict[int, requests.Session] = {}

    def one(item):
        import threading

        session = sessions.setdefault(threading.get_ident(), requests.Session())
        return send(base_url, item[0], item[1], timeout=timeout, session=session)

    with ThreadPoolExecutor(concurrency) as pool:
        sent = list(pool.map(one, sorted(bodies.items())))
    for session in sessions.values():
        session.close()
    return sent


def health(proxy) -> dict:
    return requests.get(proxy.url + "/health", timeout=5).json()


def wait_writer(proxy, done: Callable[[dict], bool], timeout: float = 30.0) -> dict:
    """The /health report once `done(report)` holds (AssertionError with the last one)."""
    deadline = time.monotonic() + timeout
    report = health(proxy)
    while not done(report):
        if time.monotonic() > deadline:
            raise AssertionError(f"writer never got there: {report}\n{proxy.log_text()[-3000:]}")
        time.sleep(0.05)
        report = health(proxy)
    return report


def written(count: int) -> Callable[[dict], bool]:
    """All `count` rows are in the database and nothing waits anywhere."""
    return lambda r: (r["writer"]["rows_written"] >= count and r["writer"]["queue_depth"] == 0
                      and r["writer"]["spooled_rows_pending"] == 0)


def stored(url: str) -> tuple[list[dict], list[dict]]:
    """Every `requests` row and every `request_chunks` row, as dicts of column values."""
    with opened(url) as db, db.connection_context():
        return _select(db, "SELECT * FROM requests"), \
            _select(db, "SELECT * FROM request_chunks ORDER BY request_id, seq")


def stored_samples(url: str) -> list[dict]:
    """Every `ratelimit_samples` row, as dicts of column values."""
    with opened(url) as db, db.connection_context():
        return _select(db, "SELECT * FROM ratelimit_samples ORDER BY id")


def _select(db, sql: str) -> list[dict]:
    cursor = db.execute_sql(sql)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def as_json(text: str | None):
    return None if text is None else json.loads(text)


@contextmanager
def database_locked(url: str) -> Iterator[None]:
    """Hold the write lock the writer needs, from another process's point of view: SQLite
    `BEGIN EXCLUSIVE`, or a PostgreSQL `LOCK TABLE requests`, until the block ends."""
    if url.startswith("sqlite:"):
        conn = sqlite3.connect(url.split(":///", 1)[1], isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cursor:
            cursor.execute("LOCK TABLE requests IN ACCESS EXCLUSIVE MODE")
        yield
        conn.rollback()
    finally:
        conn.close()
