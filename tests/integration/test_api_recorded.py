"""End to end on both engines: 1,000 proxied requests (streamed and not) are all listed by
`/api/requests`, and each one's detail and chunks match what the fake upstream sent."""

from __future__ import annotations

import json

import requests

from tests.fakes.upstream import fold_sse
from tests.integration.recording_support import send_many, wait_writer, written
from tests.integration.test_recording import bulk_bodies


def test_thousand_requests_through_the_api(database_url, start_proxy, upstream):
    proxy = start_proxy(DATABASE_URL=database_url, STORAGE_BATCH_INTERVAL_MS="100")
    sent = send_many(proxy.url, bulk_bodies(0, 1000), concurrency=16)
    assert [s.status for s in sent] == [200] * 1000
    wait_writer(proxy, written(1000))
    api = requests.Session()

    listed = []
    for offset in (0, 500):
        page = api.get(f"{proxy.url}/api/requests", timeout=30,
                       params={"limit": 500, "offset": offset}).json()
        assert page["total"] == 1000
        listed += page["requests"]
    assert sorted(r["id"] for r in listed) == sorted(s.request_id for s in sent)
    times = [r["received_at"] for r in listed]
    assert times == sorted(times, reverse=True)  # newest first
    summary = {r["id"]: r for r in listed}

    by_seq = {r.header("x-test-seq"): r for r in upstream.received}
    for exchange in sent:
        received = by_seq[str(exchange.seq)]
        detail = api.get(f"{proxy.url}/api/requests/{exchange.request_id}", timeout=30).json()
        for row in (detail, summary[exchange.request_id]):
            assert row["status"] == 200 and row["outcome"] == "completed"
            assert row["input_tokens"] == received.usage["input_tokens"]
            assert row["output_tokens"] == received.usage["output_tokens"]
            assert 0 < row["duration_ms"]
        assert detail["first_byte_ms"] <= detail["duration_ms"]
        assert detail["request_body"]["messages"] == json.loads(
            json.dumps(exchange.body["messages"]).replace(
                "sk-ant-oat01-pasted-in-a-prompt-ZYXWVUTSRQ", "sk-ant-…TSRQ"))
        chunks = api.get(f"{proxy.url}/api/requests/{exchange.request_id}/chunks",
                         timeout=30).json()
        if exchange.body["stream"]:
            assert detail["stream"] is True
            assert "".join(c["raw"] for c in chunks["chunks"]) == received.response_body.decode()
            assert chunks["chunks"][0]["event"] == "message_start"
            # the stored events, folded independently of the proxy, give the stored message
            assert detail["response_body"]["content"] == fold_sse(
                "".join(c["raw"] for c in chunks["chunks"]).encode())["content"]
        else:
            assert chunks["total"] == 0
            assert detail["response_body"] == json.loads(received.response_body)

