"""gunicorn with two gevent workers on PostgreSQL: 100 concurrent streams, every one relayed whole
and recorded once, /metrics summed over the workers, and a graceful stop that lets a stream
finish."""

from __future__ import annotations

import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.databases import engine_url
from tests.fakes.upstream import Reply, fold_sse, text_block
from tests.packaging.served import gunicorn

STREAMS = 100
HEADERS = {"x-api-key": "sk-ant-api03-gunicorn-test-key-0000", "anthropic-version": "2023-06-01"}


@pytest.fixture
def postgres_url(tmp_path, request):
    with engine_url("postgresql", tmp_path, request) as url:
        yield url


def _stream(url: str, n: int) -> tuple[str, dict]:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True,
            "messages": [{"role": "user", "content": f"stream number {n}"}]}
    with requests.post(url + "/v1/messages", json=body, headers=HEADERS, stream=True,
                       timeout=60) as response:
        assert response.status_code == 200, response.text
        data = response.raw.read()
        return response.headers["x-nexus-request-id"], fold_sse(data)


def _stored_ids(database_url: str) -> list[str]:
    import psycopg2

    with psycopg2.connect(database_url) as conn, conn.cursor() as cursor:
        cursor.execute("SELECT id FROM requests")
        return [row[0] for row in cursor.fetchall()]


def _requests_total(url: str) -> float:
    text = requests.get(url + "/metrics", timeout=10).text
    return sum(sample.value for family in text_string_to_metric_families(text)
               if family.name == "nexus_requests" for sample in family.samples
               if sample.name == "nexus_requests_total")


def test_two_workers_serve_100_concurrent_streams(fake_upstream_server, upstream, tmp_path,
                                                  postgres_url):
    # Long enough streams (20 events, 20 ms apart) that all hundred are open at once.
    words = [text_block("word " * 20)]
    upstream.default = Reply(content=words, event_delay_s=0.02)
    served = gunicorn(tmp_path, {"DATABASE_URL": postgres_url, "WEB_CONCURRENCY": "2",
                                 "CLAUDE_API_BASE_URL": fake_upstream_server.base_url})
    try:
        with ThreadPoolExecutor(STREAMS) as pool:
            results = list(pool.map(lambda n: _stream(served.url, n), range(STREAMS)))
        for _, message in results:
            assert message["stop_reason"] == "end_turn"
            assert message["content"][0]["text"] == "word " * 20
        ids = [request_id for request_id, _ in results]
        assert len(set(ids)) == STREAMS
        # Each worker counts its own; any worker's /metrics answers the sum over both.
        assert _requests_total(served.url) == STREAMS
        assert served.stop() == 0
    finally:
        upstream.default = Reply()
        served.stop(signal.SIGKILL)
    stored = _stored_ids(postgres_url)
    assert sorted(stored) == sorted(ids), "every stream recorded exactly once"
    assert "error" not in {record.get("level") for record in served.records()}, \
        served.log_text()


def test_sigterm_lets_an_open_stream_finish(fake_upstream_server, upstream, tmp_path,
                                            postgres_url):
    upstream.default = Reply(content=[text_block("slow " * 30)], event_delay_s=0.05)
    served = gunicorn(tmp_path, {"DATABASE_URL": postgres_url, "WEB_CONCURRENCY": "1",
                                 "CLAUDE_API_BASE_URL": fake_upstream_server.base_url})
    try:
        # A dashboard live stream stays open for ever: the drain must end it, not wait on it.
        live = requests.get(served.url + "/dashboard/events", stream=True, timeout=30)
        assert live.status_code == 200
        outcome: dict = {}
        opened = threading.Event()

        def slow() -> None:
            body = {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True,
                    "messages": [{"role": "user", "content": "take your time"}]}
            with requests.post(served.url + "/v1/messages", json=body, headers=HEADERS,
                               stream=True, timeout=60) as response:
                outcome["id"] = response.headers["x-nexus-request-id"]
                opened.set()
                outcome["message"] = fold_sse(response.raw.read())

        reader = threading.Thread(target=slow)
        reader.start()
        assert opened.wait(10)
        assert served.stop() == 0  # SIGTERM while the stream has about 1.5 s to go
        reader.join(10)
        live.close()
    finally:
        upstream.default = Reply()
        served.stop(signal.SIGKILL)
    assert outcome["message"]["stop_reason"] == "end_turn"
    assert outcome["message"]["content"][0]["text"] == "slow " * 30
    assert _stored_ids(postgres_url) == [outcome["id"]]
