"""Rows for tests that read the database: complete `requests` rows and SSE chunks.

Call them with the models bound to the database under test (an app's, or `db.bind_ctx`).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from app.storage.models import Request, RequestChunk, database_proxy
from app.storage.sink import make_sink


def messages_body(text: str = "Hello", model: str = "claude-sonnet-4-5", stream: bool = False,
                  **extra: Any) -> str:
    """A Messages API request body as a client sends it (JSON text)."""
    body = {"model": model, "max_tokens": 1024, "stream": stream,
            "messages": [{"role": "user", "content": text}], **extra}
    return json.dumps(body)


def message_reply(text: str = "Hi there", model: str = "claude-sonnet-4-5") -> str:
    """A Messages API answer as the proxy records it (rebuilt for streams)."""
    return json.dumps({
        "id": "msg_" + uuid.uuid4().hex[:24], "type": "message", "role": "assistant",
        "model": model, "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 12, "output_tokens": 34}})


def request_row(**overrides: Any) -> dict[str, Any]:
    """Every column of a completed `/v1/messages` exchange; `overrides` by column name."""
    received = overrides.pop("received_at", None) or datetime.now(UTC)
    model = overrides.get("model", "claude-sonnet-4-5")
    row: dict[str, Any] = dict(
        id=str(uuid.uuid4()), received_at=received,
        completed_at=received + timedelta(milliseconds=1500), domain="team.example.com",
        account_id="acc_team_1", auth_mode="passthrough", method="POST", path="/v1/messages",
        query="", model=model, request_type="inference", stream=False, status="200",
        outcome="completed", error_type=None, error_message=None, attempts=1,
        attempts_detail=[{"number": 1, "status": 200, "duration_ms": 1490.5}],
        duration_ms=1500.25, first_byte_ms=800.5, first_token_ms=None, input_tokens=12,
        output_tokens=34, cache_creation_input_tokens=0, cache_creation_5m_tokens=0,
        cache_creation_1h_tokens=0, cache_read_input_tokens=0, service_tier="standard",
        tool_call_count=0, tool_names=[], cost_usd=Decimal("0.000546"), cost_flagged=False,
        request_headers=[["content-type", "application/json"], ["x-api-key", "sk-ant-…abcd"]],
        response_headers=[["content-type", "application/json"], ["request-id", "req_1"]],
        request_body=messages_body(model=model), response_body=message_reply(model=model),
        response_truncated=False, session_id=None, agent_id=None, parent_agent_id=None,
        user_agent="claude-cli/2.0.0 (external, cli)", client_addr="127.0.0.1",
        conversation_id=None, branch_id=None, parent_request_id=None,
        current_message_hash=None, parent_message_hash=None, system_hash=None,
        message_count=1, is_subtask=False, parent_task_request_id=None,
        is_compaction_request=False, is_compaction_continuation=False, is_retry=False,
        response_hash=None)
    unknown = set(overrides) - set(row)
    assert not unknown, f"not columns of requests: {unknown}"
    row.update(overrides)
    return row


def insert_requests(*rows: dict[str, Any]) -> None:
    """Insert rows as they are, bypassing the writer (so the usage roll-ups do not see them)."""
    Request.insert_many(rows).execute()


def record_requests(*rows: dict[str, Any]) -> None:
    """Write rows the way the batch writer does (one transaction, usage roll-ups included),
    into the database the models are bound to. A row may carry its rate-limit sample under
    `app.storage.rows.SAMPLE`."""
    sink = make_sink(database_proxy.obj)
    try:
        sink.execute(sink.statements([(dict(row), []) for row in rows]))
    finally:
        sink.close()


def sse_event(name: str, data: Any) -> str:
    """One SSE event as the relay stores it."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def insert_chunks(row: dict[str, Any], events: list[str], step_ms: float = 12.5) -> None:
    """Store `events` as the chunks of `row`'s stream (offsets `step_ms` apart)."""
    RequestChunk.insert_many([
        {"request_id": row["id"], "seq": seq, "offset_ms": 800.0 + seq * step_ms, "data": text,
         "received_at": row["received_at"]}
        for seq, text in enumerate(events)]).execute()
