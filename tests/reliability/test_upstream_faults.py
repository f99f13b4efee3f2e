"""Upstream faults: refused, reset before headers and mid-stream, silence inside a stream,
429/529 storms with `retry-after`, malformed SSE, a non-JSON error body, a 50 MB answer.

Every client gets the answer or an Anthropic-shaped error (mid-stream: a final `event: error`),
and every exchange is one `requests` row. Single-fault behaviour already pinned down elsewhere
(tests/integration/test_retries.py, test_streams.py) is not repeated: here the faults come in
bursts and mixes, on both engines, and the rows are counted.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.fakes.sse import build_sse
from tests.fakes.upstream import ErrorReply, RawReply, Reply, Reset, StreamFailure, text_block
from tests.reliability.clients import (
    KEY,
    assert_anthropic_error,
    big_stream,
    message,
    post,
    sse_events,
)
from tests.reliability.tally import Ledger
from tests.support import free_port

TIMEOUT_S = "1.5"
SSE = [("Content-Type", "text/event-stream; charset=utf-8"), ("Transfer-Encoding", "chunked")]


@pytest.fixture(scope="module")
def proxy(module_proxy, engine_url):
    return module_proxy(DATABASE_URL=engine_url, UPSTREAM_MAX_RETRIES="1",
                        CLAUDE_API_TIMEOUT=TIMEOUT_S, STORAGE_BATCH_INTERVAL_MS="50")


def parallel(function, count: int) -> list:
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(function, range(count)))


def test_connection_refused(module_proxy, engine_url, ledger, upstream):
    refused = module_proxy(f"http://127.0.0.1:{free_port()}", DATABASE_URL=engine_url,
                           UPSTREAM_MAX_RETRIES="1", STORAGE_BATCH_INTERVAL_MS="50")
    book = ledger("upstream: connection refused")
    answers = parallel(lambda n: post(refused, book, message(stream=n % 2 == 0)), 8)
    for answer in answers:
        assert_anthropic_error(answer, 502, "api_error")
    audit = book.audit(engine_url)
    for entry in book.sent.values():
        row = audit.row(entry.tag)
        assert (row["outcome"], row["status"], row["attempts"]) == ("failed", "502", 2)
    report = requests.get(refused.url + "/health", timeout=5).json()
    assert report["status"] == "degraded" and report["upstream"]["last_seen"]["reachable"] is False
    refused.stop()


def test_reset_before_headers(proxy, engine_url, ledger, upstream):
    book = ledger("upstream: reset before headers")
    upstream.script(Reset(), Reset())
    gave_up = post(proxy, book, message(stream=True))
    assert_anthropic_error(gave_up, 502, "api_error")
    upstream.script(Reset(), Reply())
    recovered = post(proxy, book, message(stream=True))
    assert recovered.status_code == 200
    assert recovered.content == upstream.received[-1].response_body
    audit = book.audit(engine_url)
    rows = [audit.row(entry.tag) for entry in book.sent.values()]
    assert [(r["outcome"], r["status"], r["attempts"]) for r in rows] == [
        ("failed", "502", 2), ("completed", "200", 2)]


@pytest.mark.parametrize("mode", ["reset", "partial", "eof"])
def test_cut_mid_stream_ends_with_an_error_event(proxy, engine_url, ledger, upstream, mode):
    book = ledger(f"upstream: {mode} mid-stream")
    upstream.script(*[StreamFailure(after_events=4, mode=mode) for _ in range(6)])
    answers = parallel(lambda n: post(proxy, book, message(stream=True)), 6)
    for answer in answers:
        assert answer.status_code == 200
        events = sse_events(answer.content)
        assert events[0][0] == "message_start"
        assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "api_error"
    audit = book.audit(engine_url)
    for entry in book.sent.values():
        row = audit.row(entry.tag)
        assert (row["outcome"], row["error_type"]) == ("failed", "api_error")


def test_json_answer_cut_mid_body_is_an_incomplete_answer(proxy, engine_url, ledger, upstream):
    """Status and Content-Length are sent before the body: a cut can only show as a short
    body, which every HTTP client reports as an error (never as a complete answer)."""
    book = ledger("upstream: reset mid-body (JSON)")
    upstream.script(StreamFailure(mode="reset"))
    entry = book.new()
    with pytest.raises(requests.RequestException) as cut:
        requests.post(proxy.url + "/v1/messages", json=message(stream=False), timeout=20,
                      headers={"x-api-key": KEY, "user-agent": Ledger.agent(entry)})
    # The connection closed short of Content-Length — not a client left waiting for the rest.
    assert isinstance(cut.value, requests.exceptions.ChunkedEncodingError), repr(cut.value)
    assert "IncompleteRead" in str(cut.value)
    row = book.audit(engine_url).row(entry.tag)
    assert row["outcome"] == "failed"


def test_silence_inside_a_stream_longer_than_the_timeout(proxy, engine_url, ledger, upstream):
    book = ledger("upstream: silent mid-stream > CLAUDE_API_TIMEOUT")
    upstream.script(*[StreamFailure(after_events=3, mode="stall", stall_s=20) for _ in range(4)])
    answers = parallel(lambda n: post(proxy, book, message(stream=True)), 4)
    for answer in answers:
        events = sse_events(answer.content)
        assert events[-1][0] == "error" and events[-1][1]["error"]["type"] == "timeout_error"
    audit = book.audit(engine_url)
    for entry in book.sent.values():
        assert audit.row(entry.tag)["error_type"] == "timeout_error"


def test_429_and_529_storm_with_retry_after(proxy, engine_url, ledger, upstream):
    book = ledger("upstream: 429/529 storm, retry-after")
    clients = 24
    # More errors than first attempts: some clients meet two and get the last one back.
    storm = [ErrorReply(429 if n % 2 else 529, retry_after=0.3) for n in range(clients + 12)]
    upstream.script(*storm)
    answers = parallel(lambda n: post(proxy, book, message(stream=n % 2 == 0)), clients)
    upstream.reset()
    for answer in answers:
        if answer.status_code == 200:
            continue
        assert answer.status_code in (429, 529), answer.status_code
        assert_anthropic_error(answer, answer.status_code,
                               "rate_limit_error" if answer.status_code == 429
                               else "overloaded_error")
        assert answer.headers["retry-after"] == "0.3"  # the upstream's hint reaches the client
    failed = sum(a.status_code != 200 for a in answers)
    assert 0 < failed < clients
    audit = book.audit(engine_url)
    rows = [audit.row(entry.tag) for entry in book.sent.values()]
    assert all(r["attempts"] == 2 for r in rows if r["status"] != "200")
    # Every upstream attempt is on a row: the storm's 36 errors plus the successes.
    assert sum(r["attempts"] for r in rows) == len(storm) + (clients - failed)

    # A hint beyond the 60 s wait budget is not waited for: the 429 goes to the client at once.
    upstream.script(ErrorReply(429, retry_after=120))
    answer = post(proxy, book, message(stream=False))
    assert_anthropic_error(answer, 429, "rate_limit_error")
    assert answer.headers["retry-after"] == "120"
    entry = list(book.sent.values())[-1]
    assert book.audit(engine_url).row(entry.tag)["attempts"] == 1


def _stream_bytes(text: str) -> bytes:
    return b"".join(build_sse(message(stream=True), Reply(content=[text_block(text)])))


def test_malformed_sse(proxy, engine_url, ledger, upstream):
    book = ledger("upstream: malformed SSE")
    good = _stream_bytes("fine words here")
    start, rest = good.split(b"\n\n", 1)
    junk = (start + b"\n\n" + b"data: {not json at all\n\n" + b"event: content_block_delta\n\n"
            + b": a comment line\n\n" + b"no colon on this line\n\n" + rest)
    crlf = good.replace(b"\n", b"\r\n")
    unframed = b"x" * (2 << 20)  # two megabytes and never a blank line, then the end
    upstream.script(RawReply(200, SSE, junk), RawReply(200, SSE, crlf),
                    RawReply(200, SSE, unframed))
    answers = [post(proxy, book, message(stream=True)) for _ in range(3)]
    # Whatever the upstream sent is relayed as sent: the client's own parser decides.
    assert answers[0].content == junk
    assert answers[1].content == crlf, "CRLF-framed events are events: no error added"
    assert answers[2].content.startswith(unframed)
    last = sse_events(answers[2].content[len(unframed):])
    assert last and last[-1][0] == "error" and last[-1][1]["error"]["type"] == "api_error"
    audit = book.audit(engine_url)
    outcomes = [audit.row(entry.tag)["outcome"] for entry in book.sent.values()]
    assert outcomes[1] == "completed" and outcomes[2] == "failed"


@pytest.mark.parametrize("status, content_type, body, error_type, quoted", [
    (502, "text/html", b"<html><body><h1>502 Bad Gateway</h1>cloudfront</body></html>",
     "api_error", "502 Bad Gateway cloudfront"),
    (403, "text/plain", b"Forbidden by the corporate proxy", "permission_error",
     "Forbidden by the corporate proxy"),
    (500, "application/json", b"Internal Server Error", "api_error",  # says JSON, is not
     "Internal Server Error"),
    (503, "text/plain", b"", "api_error", "(empty)"),
], ids=["html-502", "text-403", "false-json-500", "empty-503"])
def test_a_non_json_error_body_becomes_an_anthropic_error(proxy, engine_url, ledger, upstream,
                                                          status, content_type, body,
                                                          error_type, quoted):
    book = ledger("upstream: non-JSON error body")
    upstream.script(*[RawReply(status, [("Content-Type", content_type)], body)] * 2)
    answer = post(proxy, book, message(stream=status == 502))
    upstream.reset()
    error = assert_anthropic_error(answer, status, error_type)["error"]
    assert f"answered {status}" in error["message"] and quoted in error["message"]
    row = book.audit(engine_url).row(next(iter(book.sent)))
    assert (row["status"], row["error_type"]) == (str(status), error_type)


def fifty_mb_message() -> bytes:
    return json.dumps({
        "id": "msg_big", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "x" * (50 << 20)}], "stop_reason": "end_turn",
        "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 20}}).encode()


def test_a_50_mb_answer(proxy, engine_url, ledger, upstream):
    check_50_mb(proxy, engine_url, ledger("upstream: 50 MB answer"), upstream, stream=False)


def test_a_50_mb_stream(start_proxy, ledger, upstream, tmp_path):
    """On SQLite only: 50 MB of stream events to record takes the writer seconds per engine."""
    url = f"sqlite:///{tmp_path}/big.db"
    proxy = start_proxy(DATABASE_URL=url, STORAGE_BATCH_INTERVAL_MS="50")
    check_50_mb(proxy, url, ledger("upstream: 50 MB answer"), upstream, stream=True)


def check_50_mb(proxy, engine_url, book, upstream, stream: bool) -> None:
    if stream:
        body = big_stream(50)
        upstream.script(RawReply(200, SSE, body))
    else:
        body = fifty_mb_message()
        upstream.script(RawReply(200, [("Content-Type", "application/json")], body))
    entry = book.new()
    digest, size = hashlib.sha256(), 0
    with requests.post(proxy.url + "/v1/messages", json=message(stream=stream), stream=True,
                       timeout=60, headers={"x-api-key": KEY, "user-agent":
                                            Ledger.agent(entry)}) as response:
        for piece in response.iter_content(1 << 20):
            digest.update(piece)
            size += len(piece)
        entry.status = response.status_code
    assert entry.status == 200 and size == len(body)
    assert digest.hexdigest() == hashlib.sha256(body).hexdigest(), "byte for byte"
    row = book.audit(engine_url, timeout=60).row(entry.tag)
    assert row["outcome"] == "completed"
    # The record keeps 32 MiB of a plain body, or of a stream's events; the client got it all.
    assert row["response_truncated"] in (True, 1)
    if not stream:
        assert row["response_bytes"] < len(body)


def test_the_proxy_survived_the_module(proxy):
    proxy.assert_alive()
    assert not [line for line in proxy.lines if "Traceback" in line], proxy.log_text()[-3000:]

