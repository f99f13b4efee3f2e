"""Retention on both engines: rows before the cutoff go, rows after stay; on PostgreSQL whole
old months go as partitions; the daily job and `flask --app wsgi retention purge`."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from app.storage import schema
from app.storage.database import is_postgres
from app.storage.models import (
    Conversation,
    ConversationAnchor,
    RateLimitSample,
    Request,
    RequestChunk,
    bind,
)
from app.storage.partitions import ensure_partitions, partitions
from app.storage.retention import RetentionKeeper, count_older, purge
from tests.databases import opened
from tests.support import REPO

NOW = datetime.now(UTC)


@pytest.fixture
def db(database_url):
    with opened(database_url) as database:
        schema.upgrade(database)
        bind(database)
        yield database


def add_request(when: datetime, chunks: int = 2) -> str:
    request_id = str(uuid.uuid4())
    Request.create(id=request_id, received_at=when, domain="team.example.com", method="POST",
                   path="/v1/messages", status="200")
    for seq in range(chunks):
        RequestChunk.create(request_id=request_id, seq=seq, offset_ms=seq * 10.0,
                            data="event: ping\ndata: {}\n\n", received_at=when)
    RateLimitSample.create(account_id="acc", domain="team.example.com", request_id=request_id,
                           sampled_at=when, headers=[])
    Conversation.create(id=str(uuid.uuid4()), domain="team.example.com",
                        first_request_id=request_id, created_at=when, last_request_at=when)
    ConversationAnchor.create(kind="spawn", domain="team.example.com", key_hash="k",
                              request_id=request_id, received_at=when)
    return request_id


def test_purge_removes_only_rows_before_the_cutoff(db):
    if is_postgres(db):  # old months need their partitions, as if the proxy ran back then
        ensure_partitions(db, months_ahead=0, now=NOW - timedelta(days=95))
        ensure_partitions(db, months_ahead=0, now=NOW - timedelta(days=62))
        ensure_partitions(db, months_ahead=0, now=NOW - timedelta(days=31))
    for days in (95, 62, 31):
        add_request(NOW - timedelta(days=days))
    kept = [add_request(NOW - timedelta(days=d)) for d in (29, 1, 0)]
    cutoff = NOW - timedelta(days=30)
    assert count_older(db, cutoff) == {"request_chunks": 6, "requests": 3,
                                       "ratelimit_samples": 3, "conversation_anchors": 3,
                                       "conversations": 3}
    deleted = []
    result = purge(db, cutoff, progress=deleted.append)
    assert {r.id for r in Request.select()} == set(kept)
    assert {c.request_id for c in RequestChunk.select()} == set(kept)
    assert RateLimitSample.select().count() == 3
    assert Conversation.select().count() == ConversationAnchor.select().count() == 3
    assert count_older(db, cutoff) == {"request_chunks": 0, "requests": 0,
                                       "ratelimit_samples": 0, "conversation_anchors": 0,
                                       "conversations": 0}
    if is_postgres(db):
        # months wholly before the cutoff were dropped as partitions, not deleted row by row
        assert result.partitions_dropped
        assert not set(result.partitions_dropped) & set(partitions(db))
        assert result.rows_deleted["conversations"] == 3
        assert sum(result.rows_deleted.values()) < 18
    else:
        assert result.rows_deleted == {"request_chunks": 6, "requests": 3,
                                       "ratelimit_samples": 3, "conversation_anchors": 3,
                                       "conversations": 3}
        assert sum(deleted) == 18
    assert "purged before" in result.summary()


def test_rows_in_the_default_partition_are_purged_too(db):
    far_past = NOW - timedelta(days=800)  # no monthly partition: lands in the default
    add_request(far_past)
    recent = add_request(NOW)
    purge(db, NOW - timedelta(days=30))
    assert [r.id for r in Request.select()] == [recent]


def test_daily_job_round(db):
    add_request(NOW - timedelta(days=10))
    recent = add_request(NOW)
    RetentionKeeper(db, days=5).run_once()
    assert [r.id for r in Request.select()] == [recent]


def test_purge_command(database_url, db, tmp_path):
    add_request(NOW - timedelta(days=40), chunks=1)
    recent = add_request(NOW, chunks=1)
    env = {**os.environ, "DATABASE_URL": database_url}

    def run(*args):
        return subprocess.run([sys.executable, "-m", "flask", "--app", str(REPO / "wsgi.py"),
                               "retention", "purge", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)

    refused = run()
    assert refused.returncode == 1 and "pass --days N" in refused.stderr
    dry = run("--days", "30", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "1 request_chunks, 1 requests, 1 ratelimit_samples" in dry.stdout
    assert Request.select().count() == 2
    done = run("--days", "30")
    assert done.returncode == 0, done.stderr
    assert "purged before" in done.stdout
    assert [r.id for r in Request.select()] == [recent]
