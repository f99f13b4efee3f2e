"""Recording conversation traffic for the linking tests: the original project's anchor fixtures
and the Claude Code sessions of tests/data/traffic, written row by row the way the batch writer
writes them (linking included), and read back."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.conversations.normalise import shape
from app.storage.models import Conversation, Request
from app.usage.classify import classify_request
from tests.factories import record_requests, request_row

DATA = Path(__file__).resolve().parents[1] / "data"
ANCHORS = DATA / "anchor-fixtures"
TRAFFIC = DATA / "traffic"
SESSIONS = TRAFFIC / "sessions"

# The anchor fixtures carry no times (but subtask fixtures 01–03): their requests are recorded
# from this base, a few seconds apart. Well within every window (retry, sub-agent, compaction).
BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
STEP = timedelta(seconds=5)
MODES = ("one_by_one", "one_batch")  # a transaction per request, or all in one batch


def anchor(name: str) -> dict[str, Any]:
    """An anchor fixture, by its path under tests/data/anchor-fixtures."""
    return json.loads((ANCHORS / name).read_text())


def traffic(name: str) -> dict[str, Any]:
    """A captured Claude Code request, by its path under tests/data/traffic."""
    return json.loads((TRAFFIC / name).read_text())


def moment(text: str) -> datetime:
    """A fixture timestamp (`2024-01-01T10:00:00Z`) as aware UTC."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def assistant(response: dict[str, Any] | None) -> dict[str, Any] | None:
    """A fixture's response as the proxy records an answer: an assistant message."""
    if response is None:
        return None
    return {"id": "msg_" + uuid.uuid4().hex[:24], "type": "message", "role": "assistant",
            "model": "claude-opus-4-20250514", "stop_reason": "end_turn",
            "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 20},
            **response}


def text_answer(text: str) -> dict[str, Any]:
    return assistant({"content": [{"type": "text", "text": text}]})


def task_answer(invocations: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The answer of a request that spawned sub-agents: a `Task` tool_use per invocation."""
    return assistant({
        "stop_reason": "tool_use",
        "content": [{"type": "text", "text": "I'll delegate this."}] + [
            {"type": "tool_use", "id": task["tool_use_id"], "name": "Task",
             "input": {"description": "Sub-task", "prompt": task["prompt"]}}
            for task in invocations]})


def exchange(body: dict[str, Any], answer: dict[str, Any] | None, at: datetime, domain: str,
             **columns: Any) -> dict[str, Any]:
    """A completed `/v1/messages` exchange of `body` answered by `answer`, received at `at`."""
    return request_row(
        received_at=at, domain=domain, method="POST", path="/v1/messages",
        request_type=columns.pop("request_type", "inference"),
        model=body.get("model") or "claude-opus-4-20250514",
        request_body=json.dumps(body),
        response_body=json.dumps(answer) if answer is not None else None, **columns)


def fixture_exchange(part: dict[str, Any], at: datetime, domain: str | None = None,
                     answer: dict[str, Any] | None = None) -> dict[str, Any]:
    """The exchange of a fixture's `parent`, `existingChild` or `child`."""
    if answer is None:
        answer = assistant(part.get("response_body"))
    return exchange(part["body"], answer, at, domain or part["domain"])


def record(mode: str, *rows: dict[str, Any]) -> None:
    """Write `rows` as the batch writer does: each in its own batch, or all in one."""
    assert mode in MODES
    if mode == "one_batch":
        record_requests(*rows)
    else:
        for row in rows:
            record_requests(row)


def stored(row: dict[str, Any]) -> dict[str, Any]:
    """The stored `requests` row of an exchange, as written (linking included)."""
    return Request.select().where(Request.id == row["id"]).dicts().get()


def conversation(conversation_id: str) -> dict[str, Any]:
    return Conversation.select().where(Conversation.id == conversation_id).dicts().get()


# ---------------------------------------------------------------- what a link looks like


def assert_continues(child: dict, parent: dict, branch: str | None = None,
                     immediate: bool = True) -> None:
    """`child` continues `parent` (outcome 1): same conversation, parent_request_id, and the
    parent's branch unless told otherwise; its history before its last answer is the parent's
    (unless not `immediate`: the parent is its nearest stored ancestor, outcome 3)."""
    assert parent["conversation_id"] is not None
    assert child["conversation_id"] == parent["conversation_id"]
    assert child["parent_request_id"] == parent["id"]
    assert child["branch_id"] == (branch or parent["branch_id"])
    if immediate:
        assert child["parent_message_hash"] == parent["current_message_hash"]
    else:
        assert child["parent_message_hash"] != parent["current_message_hash"]
    assert not child["is_retry"]
    assert not child["is_compaction_continuation"]
    assert child["is_subtask"] == parent["is_subtask"]
    assert child["parent_task_request_id"] == parent["parent_task_request_id"]


def assert_starts(row: dict) -> None:
    """`row` starts a conversation of its own (outcome 2), on main."""
    assert row["conversation_id"] is not None
    assert row["branch_id"] == "main"
    assert row["parent_request_id"] is None
    assert not row["is_subtask"]
    assert row["parent_task_request_id"] is None
    assert not row["is_retry"]
    assert conversation(row["conversation_id"])["first_request_id"] == row["id"]


def assert_subagent(row: dict, spawner: dict, branch: str) -> None:
    """`row` is the first request of a sub-agent spawned by `spawner` (outcome 6)."""
    assert spawner["conversation_id"] is not None
    assert row["conversation_id"] == spawner["conversation_id"]
    assert row["branch_id"] == branch
    assert row["is_subtask"]
    assert row["parent_request_id"] == spawner["id"]
    assert row["parent_task_request_id"] == spawner["id"]
    assert not row["is_retry"]
    assert not row["is_compaction_continuation"]


# ---------------------------------------------------------------- Claude Code sessions


def headers_of(sample: dict[str, Any]) -> dict[str, str]:
    return {name.lower(): value for name, value in sample["headers"].items()}


def replayed_answer(history: dict[str, Any], later: Sequence[dict[str, Any]]) -> dict | None:
    """The assistant message that the first of the `later` request bodies replays right after
    the whole history of `history` (compared normalised: reminders, cache_control, thinking
    and `role: "system"` entries move between turns), or None when none replays it."""
    wanted = shape(history).current_hash
    for body in later:
        messages = body.get("messages") or []
        for index, message in enumerate(messages):
            if message.get("role") == "assistant" \
                    and shape({"messages": messages[:index]}).current_hash == wanted:
                return message
    return None


def capture_rows(samples: Sequence[dict[str, Any]], base: datetime = BASE,
                 answers: dict[int, dict[str, Any]] | None = None,
                 domain: str = "cc.example.com") -> list[dict[str, Any]]:
    """The exchanges of captured requests, in order: times keep their gaps from `base`; each
    answer is what a later request replays (else `answers[seq]`, else a short text); headers
    give the session and agent ids, the body the request type, as the proxy records them."""
    answers = answers or {}
    first = samples[0]["ts"]
    rows = []
    for index, sample in enumerate(samples):
        body = sample["body"]
        replay = replayed_answer(body, [later["body"] for later in samples[index + 1:]])
        if sample["seq"] in answers:
            answer = answers[sample["seq"]]
        elif replay is not None:
            answer = assistant({"content": replay["content"],
                                "stop_reason": sample["response"].get("stop_reason")})
        else:
            answer = text_answer(f"The answer to request {sample['seq']}.")
        headers = headers_of(sample)
        rows.append(exchange(
            body, answer, base + timedelta(seconds=sample["ts"] - first), domain,
            request_type=classify_request(body),
            session_id=headers.get("x-claude-code-session-id"),
            agent_id=headers.get("x-claude-code-agent-id"),
            user_agent=headers.get("user-agent")))
    return rows


def session(name: str) -> list[dict[str, Any]]:
    """The captured requests of a whole session, in arrival order."""
    return [json.loads(path.read_text())
            for path in sorted((SESSIONS / name).glob("*_POST_v1_messages.json"))]
