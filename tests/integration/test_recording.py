"""Every exchange through a real `python wsgi.py` ends up as rows matching what the upstream
sent, on SQLite and PostgreSQL; no secret is stored; a shutdown drains the queue (SPEC §5.3)."""

from __future__ import annotations

import json
import time

import requests

from app.redact import mask_text
from tests.fakes.upstream import (
    ErrorReply,
    Reply,
    StreamFailure,
    build_message,
    text_block,
    tool_use_block,
)
from tests.integration.recording_support import (
    BEARER,
    COOKIE,
    PROMPT_KEY,
    SECRETS,
    as_json,
    message_body,
    send,
    send_many,
    stored,
    stored_samples,
    wait_writer,
    written,
)
from tests.support import InProcessProxy

CACHED = {"cache_creation_input_tokens": 100, "cache_read_input_tokens": 7,
          "cache_creation": {"ephemeral_5m_input_tokens": 60, "ephemeral_1h_input_tokens": 40}}


def scripted_cases():
    """(behaviour, body or None for GET, path): one of each kind of record, sent in order."""
    tools = [text_block("Running."), tool_use_block("Bash", {"command": "ls"}),
             tool_use_block("Read", {"path": "/etc/hosts"})]
    return [
        (Reply(content=tools, stop_reason="tool_use", usage=CACHED),
         message_body(0, True), "/v1/messages"),
        (Reply(content=tools, stop_reason="tool_use", usage=CACHED),
         message_body(1, False), "/v1/messages"),
        (ErrorReply(400, "invalid_request_error", "max_tokens too large"),
         message_body(2, False), "/v1/messages"),
        (ErrorReply(529), message_body(3, True), "/v1/messages"),
        (Reply(compress="gzip"), message_body(4, True), "/v1/messages"),
        (StreamFailure(after_events=3, mode="reset"), message_body(5, True), "/v1/messages"),
        (Reply(), message_body(6, False), "/v1/messages/count_tokens"),
        (Reply(), None, "/v1/models"),
    ]


def bulk_bodies(first: int, count: int) -> dict[int, dict]:
    """Streaming and not, with and without thinking, prompts of varied sizes, some secrets."""
    bodies = {}
    for seq in range(first, first + count):
        extra = {"thinking": {"type": "enabled", "budget_tokens": 1024}} if seq % 4 == 0 else {}
        text = ("words " * (seq % 50)) + (f" my key {PROMPT_KEY}" if seq % 10 == 0 else "")
        bodies[seq] = message_body(seq, stream=seq % 2 == 0, text=text, **extra)
    return bodies


def check_row(row: dict, chunks: list[dict], sent, received) -> None:
    """One stored exchange against what the client got and what the upstream sent."""
    assert row["id"] == sent.request_id
    assert row["status"] == str(sent.status)
    assert row["path"] == received.path and row["method"] == received.method
    usage = received.usage or {}
    for column in ("input_tokens", "output_tokens", "cache_creation_input_tokens",
                   "cache_read_input_tokens", "service_tier"):
        assert row[column] == usage.get(column), column
    split = usage.get("cache_creation") or {}
    assert row["cache_creation_5m_tokens"] == split.get("ephemeral_5m_input_tokens")
    assert row["cache_creation_1h_tokens"] == split.get("ephemeral_1h_input_tokens")
    if sent.body is not None:
        assert as_json(row["request_body"]) == json.loads(mask_text(json.dumps(sent.body)))
    assert 0 < row["first_byte_ms"] <= row["duration_ms"]
    assert str(row["received_at"]) <= str(row["completed_at"])
    streamed = sent.body is not None and sent.body.get("stream") and received.status == 200
    if streamed:
        assert "".join(chunk["data"] for chunk in chunks) == received.response_body.decode()
        assert [chunk["seq"] for chunk in chunks] == list(range(len(chunks)))
        offsets = [chunk["offset_ms"] for chunk in chunks]
        assert offsets == sorted(offsets) and offsets[-1] <= row["duration_ms"]
        assert (row["first_token_ms"] is not None) == received.completed  # a delta came
    else:
        assert chunks == []
        assert as_json(row["response_body"]) == json.loads(received.response_body)
    if isinstance(received.behaviour, Reply) and received.path == "/v1/messages":
        assert as_json(row["response_body"]) == build_message(received.json, received.behaviour)
        assert row["outcome"] == "completed"


def test_every_exchange_is_recorded_as_the_upstream_sent_it(database_url, start_proxy,
                                                             upstream):
    proxy = start_proxy(DATABASE_URL=database_url, UPSTREAM_MAX_RETRIES="0",
                        STORAGE_BATCH_SIZE="50", STORAGE_BATCH_INTERVAL_MS="100")
    sent = []
    for seq, (behaviour, body, path) in enumerate(scripted_cases()):
        upstream.script(behaviour)
        headers = {"Authorization": f"Bearer {BEARER}", "Cookie": COOKIE} if seq < 2 else {}
        sent.append(send(proxy.url, seq, body, path, headers=headers))
    bulk = bulk_bodies(len(sent), 320)
    started = time.monotonic()
    sent += send_many(proxy.url, bulk, concurrency=16)
    report = wait_writer(proxy, written(len(sent)))
    elapsed = time.monotonic() - started
    print(f"\n{len(bulk)} exchanges sent and recorded in {elapsed:.2f}s "
          f"({len(bulk) / elapsed:.0f}/s) on {database_url.split(':')[0]}")
    assert report["status"] == "ok" and report["writer"]["rows_spooled"] == 0

    assert [s.status for s in sent] == [200, 200, 400, 529, 200, 200, 200, 200] + [200] * 320
    rows, chunks = stored(database_url)
    assert len(rows) == len(sent) == len({row["id"] for row in rows})
    by_seq = {received.header("x-test-seq"): received for received in upstream.received}
    chunks_of: dict[str, list[dict]] = {}
    for chunk in chunks:
        chunks_of.setdefault(chunk["request_id"], []).append(chunk)
    rows_by_id = {row["id"]: row for row in rows}
    for exchange in sent:
        row = rows_by_id[exchange.request_id]
        check_row(row, chunks_of.get(row["id"], []), exchange, by_seq[str(exchange.seq)])

    tooled = rows_by_id[sent[0].request_id]
    assert (tooled["tool_call_count"], as_json(tooled["tool_names"])) == (2, ["Bash", "Read"])
    assert (tooled["cache_creation_5m_tokens"], tooled["cache_creation_1h_tokens"]) == (60, 40)
    assert rows_by_id[sent[2].request_id]["error_type"] == "invalid_request_error"
    broken = rows_by_id[sent[5].request_id]
    assert (broken["outcome"], broken["error_type"]) == ("failed", "api_error")
    assert rows_by_id[sent[6].request_id]["path"] == "/v1/messages/count_tokens"
    assert rows_by_id[sent[7].request_id]["method"] == "GET"
    assert as_json(rows_by_id[sent[8].request_id]["response_body"])["content"][0]["type"] == \
        "thinking"

    # No secret anywhere: every text value of every row, every chunk.
    texts = [value for row in rows + chunks for value in row.values() if isinstance(value, str)]
    for secret in SECRETS:
        needle = secret.split("=")[-1]
        assert not any(needle in text for text in texts), f"{secret} was stored"
    headers = dict(as_json(rows_by_id[sent[0].request_id]["request_headers"]))
    assert headers["x-api-key"].startswith("sk-ant-…") and headers["Cookie"] == "[redacted]"
    assert headers["Authorization"] == "Bearer …" + BEARER[-4:]
    prompt = as_json(rows_by_id[sent[10].request_id]["request_body"])["messages"][0]["content"]
    assert prompt.endswith("my key sk-ant-…" + PROMPT_KEY[-4:])


def test_each_answer_with_ratelimit_headers_adds_a_ledger_sample(database_url, start_proxy,
                                                                 upstream, tmp_path):
    domain = "team.example.com"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / f"{domain}.credentials.json").write_text(json.dumps(
        {"type": "api_key", "accountId": "acc_team_1", "api_key": "sk-ant-api03-team-key-9999"}))
    proxy = start_proxy(DATABASE_URL=database_url, CREDENTIALS_DIR=str(creds),
                        STORAGE_BATCH_INTERVAL_MS="50")
    upstream.script(*[Reply(unified={"status": "allowed_warning", "5h-utilization": f"0.{n}"})
                      for n in range(1, 6)])
    sent = [send(proxy.url, n, message_body(n, stream=n % 2 == 0), headers={"Host": domain})
            for n in range(1, 6)]
    assert [s.status for s in sent] == [200] * 5
    wait_writer(proxy, written(len(sent)))
    rows, _ = stored(database_url)
    samples = stored_samples(database_url)
    assert [s["request_id"] for s in samples] == [s.request_id for s in sent]
    completed = {row["id"]: str(row["completed_at"]) for row in rows}
    for n, (exchange, sample) in enumerate(zip(sent, samples, strict=True), start=1):
        assert (sample["account_id"], sample["domain"]) == ("acc_team_1", domain)
        assert str(sample["sampled_at"]) == completed[exchange.request_id]
        assert sample["unified_status"] == "allowed_warning"
        assert sample["unified_5h_utilization"] == float(f"0.{n}")
        assert sample["unified_7d_utilization"] == 0.34
        assert sample["unified_representative_claim"] == "five_hour"
        assert sample["unified_5h_reset"] is not None and sample["requests_limit"] == 4000
        headers = as_json(sample["headers"])
        assert all(name.startswith("anthropic-ratelimit-") for name, _ in headers)
        assert "sk-ant-" not in sample["headers"]


def test_chunks_are_not_kept_when_turned_off(start_proxy, tmp_path):
    url = f"sqlite:///{tmp_path}/nexus.db"
    proxy = start_proxy(DATABASE_URL=url, STORE_STREAMING_CHUNKS="false")
    send(proxy.url, 0, message_body(0, True))
    wait_writer(proxy, written(1))
    rows, chunks = stored(url)
    assert len(rows) == 1 and chunks == []
    assert as_json(rows[0]["response_body"])["type"] == "message"


def test_sigterm_writes_queued_rows_before_exiting(database_url, start_proxy):
    proxy = start_proxy(DATABASE_URL=database_url, STORAGE_BATCH_INTERVAL_MS="60000",
                        STORAGE_BATCH_SIZE="10000")
    sent = send_many(proxy.url, bulk_bodies(0, 40), concurrency=8)
    report = requests.get(proxy.url + "/health", timeout=5).json()
    assert report["writer"]["queue_depth"] == 40 and report["writer"]["rows_written"] == 0
    assert proxy.stop() == 0
    rows, _ = stored(database_url)
    assert {row["id"] for row in rows} == {s.request_id for s in sent}


def test_the_writer_runs_in_a_plain_thread_without_gevent(database_url, upstream, tmp_path):
    server = InProcessProxy(upstream.base_url, record=True, DATABASE_URL=database_url,
                            SPOOL_DIR=str(tmp_path / "spool"), STORAGE_BATCH_INTERVAL_MS=60000)
    try:
        sent = send_many(server.url, bulk_bodies(0, 30), concurrency=4)
        assert server.app.extensions["nexus.writer"].metrics()["queue_depth"] == 30
    finally:
        server.stop()  # drains: the interval never came
    rows, chunks = stored(database_url)
    assert {row["id"] for row in rows} == {s.request_id for s in sent}
    assert len(chunks) > 15 * 5
