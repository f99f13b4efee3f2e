"""An ended Exchange as `requests` and `request_chunks` rows: every field, no secret, no NUL."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from app.errors import UpstreamError
from app.proxy.exchange import Attempt, Exchange
from app.storage.models import RateLimitSample, Request, RequestChunk
from app.storage.rows import SAMPLE, chunk_rows, clean, items, ratelimit_row, request_row
from app.storage.spool import decode, encode
from tests.fakes.api_headers import common_headers, ratelimit_headers, unified_headers

KEY = "sk-ant-api03-unitsecret-abcdefghijklmnop"
TOKEN = "opaque-bearer-token-0123456789"


def exchange(**fields) -> Exchange:
    published = []
    x = Exchange(method="POST", path="/v1/messages", query="beta=true",
                 domain="team.example.com", publish=published.append)
    x.received_at = datetime(2025, 3, 14, 9, 26, 53, 589793, tzinfo=UTC)
    for name, value in fields.items():
        setattr(x, name, value)
    return x


PRICES = Path(__file__).resolve().parents[2] / "app" / "usage" / "prices.json"


def streamed() -> Exchange:
    body = {"model": "claude-sonnet-4-5", "stream": True,
            "messages": [{"role": "user", "content": f"my key is {KEY}"}]}
    x = exchange(
        account_id="acc_1", auth_mode="passthrough", client_addr="127.0.0.1",
        user_agent="claude-cli/2.0", session_id="sess-1", agent_id="agent-1",
        request_headers=[("Host", "team.example.com"), ("x-api-key", KEY),
                         ("Authorization", f"Bearer {TOKEN}"), ("Cookie", "sid=abc"),
                         ("x-claude-code-session-id", "sess-1")],
        request_body=json.dumps(body).encode(), model="claude-sonnet-4-5", stream=True,
        request_type="inference", upstream_status=200,
        response_headers=[("content-type", "text/event-stream"), ("set-cookie", "a=b"),
                          ("request-id", "req_1")],
        response={"id": "msg_1", "type": "message", "content": [
            {"type": "text", "text": f"echo {KEY}"},
            {"type": "tool_use", "id": "tu_1", "name": "Bash", "input": {"c": "ls"}},
            {"type": "tool_use", "id": "tu_2", "name": "Read", "input": {}}]},
        usage={"input_tokens": 10, "output_tokens": 20, "cache_creation_input_tokens": 30,
               "cache_read_input_tokens": 40, "service_tier": "standard",
               "cache_creation": {"ephemeral_5m_input_tokens": 12,
                                  "ephemeral_1h_input_tokens": 18}},
        tool_uses=[{"id": "tu_1", "name": "Bash", "input": {"c": "ls"}},
                   {"id": "tu_2", "name": "Read", "input": {}}],
        chunks=[(1.5, b"event: message_start\ndata: {}\n\n"),
                (2.25, f'event: content_block_delta\ndata: {{"t": "{KEY}"}}\n\n'.encode())],
        first_byte_ms=1.0, first_token_ms=2.25,
        attempts=[Attempt(1, 0.5, 3.0, 529, None, 0.5), Attempt(2, 4.0, 10.0, 200)])
    x.complete()
    return x


def test_every_column_has_a_value_and_matches_the_model():
    row = request_row(streamed())
    assert set(row) == set(Request._meta.fields)
    assert set(chunk_rows(streamed())[0]) == set(RequestChunk._meta.fields)


def test_a_completed_stream():
    x = streamed()
    row = request_row(x)
    assert row["id"] == x.id and row["received_at"] == x.received_at
    assert row["completed_at"] == x.completed_at and row["duration_ms"] == x.duration_ms
    assert (row["status"], row["outcome"], row["attempts"]) == ("200", "completed", 2)
    assert row["attempts_detail"][0] == {"number": 1, "started_ms": 0.5, "duration_ms": 3.0,
                                         "status": 529, "error": None, "retry_delay_s": 0.5}
    assert (row["input_tokens"], row["output_tokens"]) == (10, 20)
    assert (row["cache_creation_input_tokens"], row["cache_read_input_tokens"]) == (30, 40)
    assert (row["cache_creation_5m_tokens"], row["cache_creation_1h_tokens"]) == (12, 18)
    assert row["service_tier"] == "standard"
    assert (row["tool_call_count"], row["tool_names"]) == (2, ["Bash", "Read"])
    assert (row["first_byte_ms"], row["first_token_ms"]) == (1.0, 2.25)
    assert row["stream"] is True and row["query"] == "beta=true"
    assert (row["session_id"], row["agent_id"], row["user_agent"]) == \
        ("sess-1", "agent-1", "claude-cli/2.0")
    assert json.loads(row["response_body"])["content"][1]["name"] == "Bash"
    assert row["conversation_id"] is None
    # priced from the bundled table at write time, by hand for this usage (see streamed()):
    # 10 in, 20 out, 12 + 18 cache writes (5m, 1h), 40 cache reads
    # (claude-sonnet-4-5 is the alias of the file's dated entry)
    assert (row["cost_usd"], row["cost_flagged"]) == (
        expected_cost("claude-sonnet-4-5-20250929"), False)
    chunks = chunk_rows(x)
    assert [(c["seq"], c["offset_ms"]) for c in chunks] == [(0, 1.5), (1, 2.25)]
    assert chunks[0]["data"] == "event: message_start\ndata: {}\n\n"
    assert all(c["request_id"] == x.id and c["received_at"] == x.received_at for c in chunks)


def test_no_secret_in_any_value():
    x = streamed()
    stored = json.dumps([request_row(x), chunk_rows(x)], default=str)
    assert KEY not in stored and TOKEN not in stored and "sid=abc" not in stored
    assert "a=b" not in stored
    row = request_row(x)
    headers = dict(row["request_headers"])
    assert headers["x-api-key"] == "sk-ant-…mnop"
    assert headers["Authorization"] == "Bearer …6789"
    assert headers["Cookie"] == "[redacted]"
    assert dict(row["response_headers"])["set-cookie"] == "[redacted]"
    assert "my key is sk-ant-…mnop" in json.loads(row["request_body"])["messages"][0]["content"]
    assert json.loads(row["request_body"])["model"] == "claude-sonnet-4-5"  # still valid JSON


def test_nul_characters_and_lone_surrogates_are_dropped():
    x = exchange(request_body=b'{"a": "x\x00y"}', chunks=[(1.0, b"data: \x00\n\n")],
                 response_body=b"oops\x00", user_agent="agent \udc80")
    x.fail(UpstreamError("mid-stream \x00 failure"))
    row = request_row(x)
    assert row["error_message"] == "mid-stream  failure" and row["user_agent"] == "agent ?"
    texts = [v for v in row.values() if isinstance(v, str)] + [c["data"] for c in chunk_rows(x)]
    assert not any("\x00" in text for text in texts)
    for text in texts:
        text.encode("utf-8")  # no lone surrogate
    assert row["request_body"] == '{"a": "xy"}' and row["response_body"] == "oops"


@pytest.mark.parametrize("end, status, outcome", [
    ("complete", "200", "completed"),
    ("fail", "502", "failed"),
    ("disconnect", "client_disconnected", "client_disconnected"),
])
def test_status_and_outcome(end, status, outcome):
    x = exchange(upstream_status=200)
    if end == "fail":
        x.fail(UpstreamError("upstream unreachable"))
    else:
        getattr(x, end)()
    row = request_row(x)
    assert (row["status"], row["outcome"]) == (status, outcome)
    if end == "fail":
        assert (row["error_type"], row["error_message"]) == ("api_error", "upstream unreachable")


def test_a_plain_body_that_is_not_json_is_kept_as_text_decoded():
    html = "<html>502 Bad Gateway — é</html>"
    x = exchange(response_body=gzip.compress(html.encode()), upstream_status=502,
                 response_headers=[("content-encoding", "gzip"), ("content-type", "text/html")])
    x.complete()
    assert request_row(x)["response_body"] == html
    x = exchange(response_body=b"\x1f\x8b not really gzip",
                 response_headers=[("content-encoding", "gzip")])
    assert request_row(x)["response_body"].endswith("not really gzip")


def test_a_json_answer_is_stored_as_parsed_and_empty_fields_stay_empty():
    x = exchange(method="GET", path="/v1/models", query="", response={"data": []},
                 usage={"input_tokens": "many", "output_tokens": 2**40, "cache_creation": 5})
    x.complete()
    row = request_row(x)
    assert row["response_body"] == '{"data":[]}'
    assert row["request_body"] is None and row["response_headers"] is None
    assert row["input_tokens"] is None and row["output_tokens"] is None, "not INTEGER values"
    assert row["cache_creation_5m_tokens"] is None
    assert (row["tool_call_count"], row["tool_names"], row["model"]) == (0, [], None)
    assert chunk_rows(x) == []


def answered(*families: list[tuple[str, str]]) -> Exchange:
    """An API answer carrying these header families, through an account's credential."""
    x = exchange(account_id="acc_team_1", upstream_status=200,
                 response_headers=[("content-type", "application/json"),
                                   *[pair for family in families for pair in family],
                                   *common_headers("req_1", json_body=True)])
    x.complete()
    return x


def test_a_ratelimit_sample_from_the_answers_headers():
    x = answered(ratelimit_headers(100, 50), unified_headers({"status": "allowed_warning"}))
    sample = ratelimit_row(x)
    columns = {f.name for f in RateLimitSample._meta.sorted_fields if f.name != "id"}
    assert set(sample) == columns
    assert (sample["account_id"], sample["domain"], sample["request_id"]) == \
        ("acc_team_1", "team.example.com", x.id)
    assert sample["sampled_at"] == x.completed_at
    assert (sample["requests_limit"], sample["requests_remaining"]) == (4_000, 3_999)
    assert (sample["tokens_limit"], sample["tokens_remaining"]) == (2_400_000, 2_400_000)
    assert sample["unified_status"] == "allowed_warning"
    assert (sample["unified_5h_utilization"], sample["unified_7d_utilization"]) == (0.12, 0.34)
    assert sample["unified_5h_reset"] > x.completed_at and sample["unified_7d_reset"].tzinfo
    assert (sample["unified_representative_claim"], sample["unified_fallback_percentage"],
            sample["unified_overage_status"]) == ("five_hour", 0.5, "rejected")
    # Only the rate-limit pairs are kept: no cookie, no credential, by construction.
    assert all(name.startswith("anthropic-ratelimit-") for name, _ in sample["headers"])
    assert len(sample["headers"]) == 12 + 12
    assert "_cfuvid" not in json.dumps(sample, default=str)


def test_a_sample_rides_on_its_request_row_and_through_the_spool():
    x = answered(unified_headers())
    x.received_at = x.completed_at  # not yet completed: sampled when received
    x.completed_at = None
    (request, chunks), = items([x], keep_chunks=True)[0]
    sample = request[SAMPLE]
    assert sample["sampled_at"] == x.received_at and sample["requests_limit"] is None
    assert sample["unified_status"] == "allowed"
    lines = [decode(line) for line in encode([(request, chunks)]).splitlines()]
    assert [table for table, _ in lines] == ["requests", "ratelimit_samples"]
    assert SAMPLE not in lines[0][1] and lines[1][1] == sample, "datetimes round-trip"


def test_no_sample_without_ratelimit_headers():
    x = answered()
    assert ratelimit_row(x) is None
    assert ratelimit_row(exchange()) is None  # no answer at all
    (request, _), = items([x], keep_chunks=False)[0]
    assert SAMPLE not in request


def test_clean_leaves_ordinary_text_alone():
    text = "héllo — 日本語 🙂"
    assert clean(text) is text


def test_queue_spills_past_its_byte_bound(tmp_path, monkeypatch):
    from app.events import ExchangeCompleted
    from app.proxy.exchange import Exchange
    from app.storage import writer as writer_module
    from app.storage.database import make_database
    from app.storage.writer import BatchWriter

    monkeypatch.setattr(writer_module, "QUEUE_MAX_BYTES", 250_000)
    batch = BatchWriter(make_database(f"sqlite:///{tmp_path}/x.db", 1), tmp_path / "spool",
                        batch_size=1000, interval_ms=60_000, queue_max=1000, keep_chunks=True)
    batch._state = writer_module.RUNNING  # accept exchanges without running the loop
    for _ in range(3):
        exchange = Exchange("POST", "/v1/messages", "", "d", publish=lambda e: None)
        exchange.request_body = b"x" * 100_000
        batch._on_ended(ExchangeCompleted(exchange))
    assert (len(batch._queue), len(batch._overflow)) == (2, 1)
    assert batch._queued_bytes == 200_000
    batch._take(1)
    assert batch._queued_bytes == 100_000
    # A stream's rebuilt message weighs about what was relayed, on top of the kept events.
    streamed = Exchange("POST", "/v1/messages", "", "d", publish=lambda e: None)
    streamed.chunks.append((1.0, b"e" * 40_000))
    streamed.bytes_to_client = 40_000
    streamed.response = {"content": [{"type": "text", "text": "t" * 30_000}]}
    batch._on_ended(ExchangeCompleted(streamed))
    assert batch._queued_bytes == 100_000 + 80_000


def expected_cost(model: str) -> Decimal:
    """The same usage priced by hand from the bundled file's per-million rates."""
    rates = json.loads(PRICES.read_text())["models"][model]
    tokens = {"input": 10, "output": 20, "cache_write_5m": 12, "cache_write_1h": 18,
              "cache_read": 40}
    total = sum(Decimal(str(rates[name])) * count for name, count in tokens.items())
    return (total / Decimal(1_000_000)).quantize(Decimal("0.000001"))


@pytest.mark.parametrize("raw, stored", [
    (b'{"k": "sk-ant-\x00api03-abcdefghijklmnop"}', '{"k": "sk-ant-…mnop"}'),
    (b'\xff{"api_key": "v"} \xed\xa0\x80 sk-ant-api03-abcdefghijklmnop',
     '\ufffd{"api_key": "[redacted]"} \ufffd\ufffd\ufffd sk-ant-…mnop'),
    ('é 🤖 {"password": "p"} Bearer abc.def-123'.encode(),
     'é 🤖 {"password": "[redacted]"} Bearer [redacted]'),
])
def test_a_request_body_is_masked_whatever_its_bytes(raw, stored):
    # Valid UTF-8 is masked from its own bytes; NUL, invalid bytes and encoded surrogates
    # take the path of every other string.
    assert request_row(exchange(request_body=raw))["request_body"] == stored
