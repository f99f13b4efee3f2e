"""The link decision (CONVERSATIONS.md "Outcomes"): where a newly stored request belongs.

Pure: what the request says (`Facts`, built from its stored row) and what is already stored
(a `Store`) in; a `Link` out. The writer decides the links of a batch (app/storage/linking.py)
in the transaction that inserts it, taking requests in the order they were received, so every
earlier request is visible, including those of the same batch.

Order of the rules: a retry is recognised first (never a branch), then a continuation of a
stored history (with the nearest stored ancestor standing in for a missing parent), then a
compaction continuation, then a sub-agent's first request; anything else starts a
conversation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from app.conversations.normalise import (
    Shape,
    response_hash,
    shape,
    spawned_prompts,
    summary_key,
    text_hash,
)
from app.usage.rollup import microdollars

RETRY_WINDOW = timedelta(minutes=10)
SUBTASK_WINDOW_S = 3600
SUBTASK_WINDOW = timedelta(seconds=SUBTASK_WINDOW_S)
COMPACTION_WINDOW = timedelta(days=7)
SIDE_TYPES = ("quota", "query_evaluation")
MAIN = "main"
# Branch kinds: the prefix of their names, numbered per conversation in order of creation.
BRANCH, SUBTASK, COMPACT = "branch", "subtask", "compact"
TITLE_CHARS = 200
SUMMARY_MATCH_CHARS = 200


@dataclass(frozen=True)
class Facts:
    """What linking needs of one stored `/v1/messages` request."""

    id: str
    received_at: datetime
    domain: str
    account_id: str | None
    session_id: str | None
    agent_id: str | None
    side: bool                           # a quota or query_evaluation request
    shape: Shape
    response_hash: str | None            # of its recorded answer
    spawns: tuple[tuple[str, str], ...]  # (tool_use id, text_hash(prompt)) of Task/Agent calls
    summary_key: str | None              # a summarisation request's answer
    figures: dict[str, int] = field(default_factory=dict)   # tokens and cost_microusd

    @property
    def title(self) -> str | None:
        text = self.shape.single_user_text
        return text[:TITLE_CHARS] if text else None


@dataclass(frozen=True)
class Stored:
    """A stored request as a candidate parent."""

    id: str
    received_at: datetime
    conversation_id: str | None
    branch_id: str | None
    parent_request_id: str | None
    session_id: str | None
    agent_id: str | None
    system_hash: str | None
    response_hash: str | None
    current_hash: str | None
    is_subtask: bool = False
    parent_task_request_id: str | None = None
    is_retry: bool = False
    is_compaction_request: bool = False
    is_compaction_continuation: bool = False
    domain: str | None = None


@dataclass(frozen=True)
class Anchor:
    """A spawn (`Task`/`Agent` tool_use) or a summarisation answer a request may link to."""

    id: int
    request_id: str
    received_at: datetime
    session_id: str | None
    conversation_id: str | None
    summary_key: str | None = None
    child_request_id: str | None = None
    key_hash: str = ""


@dataclass(frozen=True)
class Link:
    """The conversation fields of a request (None: it belongs to no conversation)."""

    conversation_id: str
    branch_id: str
    parent_request_id: str | None = None
    is_subtask: bool = False
    parent_task_request_id: str | None = None
    is_compaction_continuation: bool = False
    is_retry: bool = False
    new_conversation: bool = False
    claimed_anchor: int | None = None     # the spawn this sub-agent's first request takes


class Store(Protocol):
    """The lookups linking makes (app/storage/linking.py answers most from what it read for
    the whole batch, the rest with one indexed query each). Only requests received before the
    one being linked, and belonging to a conversation, are candidates."""

    def by_hashes(self, domain: str, hashes: Sequence[str], before: datetime,
                  since: datetime | None = None) -> list[Stored]: ...

    def children(self, request_id: str) -> list[Stored]: ...

    def request(self, request_id: str) -> Stored | None: ...

    def latest_in_session(self, domain: str, session_id: str,
                          before: datetime) -> Stored | None: ...

    def spawns(self, domain: str, key_hash: str, since: datetime,
               before: datetime) -> list[Anchor]: ...

    def compactions(self, domain: str, since: datetime, before: datetime) -> list[Anchor]: ...

    def new_branch(self, conversation_id: str, kind: str) -> int: ...

    def new_conversation_id(self) -> str: ...


def facts_of(row: dict[str, Any]) -> Facts | None:
    """The Facts of a stored `requests` row, or None when it is no Messages request (another
    path, a body that is not a JSON object) or is linked already."""
    if row.get("method") != "POST" or row.get("path") != "/v1/messages" \
            or row.get("conversation_id"):
        return None
    body = _json(row.get("request_body"))
    if not isinstance(body, dict):
        return None
    request_shape = shape(body)
    answer = _json(row.get("response_body"))
    answer = answer if isinstance(answer, dict) and answer.get("role") == "assistant" else None
    summary = None
    if request_shape.is_compaction_request and answer is not None:
        summary = summary_key(_answer_text(answer)) or None
    received = row["received_at"]
    return Facts(
        id=row["id"], received_at=received if received.tzinfo else received.replace(tzinfo=UTC),
        domain=row["domain"], account_id=row.get("account_id"),
        session_id=row.get("session_id"), agent_id=row.get("agent_id"),
        side=row.get("request_type") in SIDE_TYPES, shape=request_shape,
        response_hash=response_hash(answer) if answer is not None else None,
        spawns=tuple((tool_id, text_hash(prompt))
                     for tool_id, prompt in spawned_prompts(answer)) if answer else (),
        summary_key=summary,
        figures={**{name: row.get(name) or 0 for name in (
            "input_tokens", "output_tokens", "cache_creation_input_tokens",
            "cache_read_input_tokens")}, "cost_microusd": microdollars(row.get("cost_usd"))})


def link(facts: Facts, store: Store) -> Link | None:
    """Where `facts` belongs, by the rules of CONVERSATIONS.md."""
    if facts.side or facts.shape.current_hash is None:
        return None  # side requests belong to no conversation
    return (_retry(facts, store) or _continuation(facts, store) or _compaction(facts, store)
            or _subagent(facts, store)
            or Link(store.new_conversation_id(), MAIN, new_conversation=True,
                    is_compaction_continuation=facts.shape.compaction_summary is not None))


def _retry(facts: Facts, store: Store) -> Link | None:
    """The same history as a request of the last 10 minutes (and the same agent): a retry,
    on that request's place."""
    same = [s for s in store.by_hashes(facts.domain, [facts.shape.current_hash],
                                       before=facts.received_at,
                                       since=facts.received_at - RETRY_WINDOW)
            if s.agent_id == facts.agent_id]
    text = facts.shape.single_user_text
    if same and text:
        # A twin whose answer spawned exactly this prompt was answered and acted on: this is
        # that sub-agent's first request (told apart here when no agent id says so).
        spawners = {a.request_id for a in store.spawns(facts.domain, text_hash(text),
                                                       since=facts.received_at - SUBTASK_WINDOW,
                                                       before=facts.received_at)}
        same = [s for s in same if s.id not in spawners]
    if not same:
        return None
    first = min(same, key=lambda s: (s.session_id != facts.session_id, s.received_at))
    return Link(first.conversation_id, first.branch_id, first.parent_request_id,
                is_subtask=first.is_subtask, parent_task_request_id=first.parent_task_request_id,
                is_compaction_continuation=first.is_compaction_continuation, is_retry=True)


def _continuation(facts: Facts, store: Store) -> Link | None:
    """The nearest stored ancestor of the history: the parent, or the longest stored prefix."""
    hashes = facts.shape.ancestor_hashes
    if not hashes:
        return None
    found = store.by_hashes(facts.domain, hashes[:1], before=facts.received_at)
    if not found and len(hashes) > 1:
        found = store.by_hashes(facts.domain, hashes[1:], before=facts.received_at)
        if found:  # the longest stored prefix: the earliest in ancestor_hashes
            nearest = min(hashes.index(s.current_hash) for s in found)
            found = [s for s in found if s.current_hash == hashes[nearest]]
    if not found:
        return None
    parent = max(found, key=lambda s: _rank(facts, s))
    link = Link(parent.conversation_id, parent.branch_id, parent.id,
                is_subtask=parent.is_subtask, parent_task_request_id=parent.parent_task_request_id)
    if facts.shape.is_compaction_request:
        return link  # the summarisation request stays on its parent's branch
    siblings = [c for c in store.children(parent.id) if _is_turn(c, parent)]
    if not siblings:
        return link
    twin = [c for c in siblings if c.current_hash == facts.shape.current_hash]
    if twin:  # the same history again, after the retry window: the same place
        return replace(link, branch_id=twin[0].branch_id)
    number = store.new_branch(parent.conversation_id, BRANCH)
    return replace(link, branch_id=f"{BRANCH}_{number}")


def _compaction(facts: Facts, store: Store) -> Link | None:
    """A continuation carrying a summary links to the summarisation answer that produced it
    (or, without one, to the session's latest request) on a new compact branch."""
    summary = facts.shape.compaction_summary
    if summary is None:
        return None
    key = summary_key(summary)
    anchors = [a for a in store.compactions(facts.domain, facts.received_at - COMPACTION_WINDOW,
                                            before=facts.received_at) if a.conversation_id]
    parent: Stored | None = None
    if anchors:
        best = max(anchors, key=lambda a: (_same_summary(key, a.summary_key),
                                           bool(facts.session_id)
                                           and a.session_id == facts.session_id,
                                           a.received_at))
        if _same_summary(key, best.summary_key) or best.session_id == facts.session_id:
            parent = store.request(best.request_id)
    if parent is None and facts.session_id:
        parent = store.latest_in_session(facts.domain, facts.session_id, facts.received_at)
    if parent is None or parent.conversation_id is None:
        return None
    number = store.new_branch(parent.conversation_id, COMPACT)
    return Link(parent.conversation_id, f"{COMPACT}_{number}", parent.id,
                is_compaction_continuation=True)


def _subagent(facts: Facts, store: Store) -> Link | None:
    """A lone user message equal to the prompt of a recent Task/Agent call: that sub-agent's
    first request, on a new subtask branch of the spawning request's conversation."""
    text = facts.shape.single_user_text
    if not text:
        return None
    anchors = [a for a in store.spawns(facts.domain, text_hash(text),
                                       since=facts.received_at - SUBTASK_WINDOW,
                                       before=facts.received_at) if a.conversation_id]
    if not anchors:
        return None
    spawn = max(anchors, key=lambda a: (a.child_request_id is None,
                                        bool(facts.session_id)
                                        and a.session_id == facts.session_id,
                                        a.received_at))
    number = store.new_branch(spawn.conversation_id, SUBTASK)
    return Link(spawn.conversation_id, f"{SUBTASK}_{number}", spawn.request_id,
                is_subtask=True, parent_task_request_id=spawn.request_id,
                claimed_anchor=spawn.id if spawn.child_request_id is None else None)


def _rank(facts: Facts, candidate: Stored) -> tuple:
    """Among equal histories: the answer the request replays, the same session, the same
    system prompt, the newest."""
    return (facts.shape.last_assistant_hash is not None
            and candidate.response_hash == facts.shape.last_assistant_hash,
            bool(facts.session_id) and candidate.session_id == facts.session_id,
            candidate.system_hash == facts.shape.system_hash,
            candidate.received_at)


def _is_turn(child: Stored, parent: Stored) -> bool:
    """A child that took the conversation on from `parent` (not a retry, a sub-agent it
    spawned, a summarisation request or a compaction continuation)."""
    spawned = child.is_subtask and child.parent_task_request_id == parent.id
    return not (child.is_retry or spawned or child.is_compaction_request
                or child.is_compaction_continuation)


def _same_summary(key: str, other: str | None) -> bool:
    if not key or not other:
        return False
    head = min(len(key), len(other), SUMMARY_MATCH_CHARS)
    return head > 0 and (key[:head] in other or other[:head] in key)


def _answer_text(message: dict) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "\n".join(block["text"] for block in content
                     if isinstance(block, dict) and isinstance(block.get("text"), str))


def _json(text: Any) -> Any:
    if not isinstance(text, str) or text.lstrip()[:1] not in ("{", "["):
        return None
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested too deep to parse: no facts
        return None
