"""Read-side queries of `/api/conversations` (SPEC §7.3, CONVERSATIONS.md; pure peewee, no
Flask).

The list reads the `conversations` table alone — the writer keeps its figures as it links
requests — so it never adds up requests: one statement for the page, served by the
`(last_request_at)`, `(domain, last_request_at)` and `(account_id, last_request_at)` indexes of
`migrations/0004_conversations.py`, and at most one more for the total.

One conversation is three statements: its row, its requests in received order (capped, via the
`(conversation_id, received_at)` index of `requests`) and its branches. The branch summary is
computed in SQL over every request of the conversation, so it stays exact when the request list
is cut at the cap: window functions rank each branch's requests, and only the first and the
last of each come back.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import reduce
from operator import and_
from typing import Any

from peewee import SQL, Expression, Select, fn

from app.conversations.linker import BRANCH, COMPACT, MAIN, SUBTASK
from app.storage.models import Conversation, Request

MAX_REQUESTS = 5000   # requests shown with one conversation; the rest is reported as truncated

# What the detail shows of each request: its place in the conversation and its figures, never
# bodies or headers.
REQUEST_FIELDS = (
    Request.id, Request.parent_request_id, Request.branch_id, Request.is_subtask,
    Request.parent_task_request_id, Request.is_retry, Request.is_compaction_request,
    Request.is_compaction_continuation, Request.message_count, Request.received_at,
    Request.model, Request.status, Request.session_id, Request.agent_id, Request.input_tokens,
    Request.output_tokens, Request.cost_usd,
)

KINDS = (BRANCH, SUBTASK, COMPACT)


@dataclass(frozen=True)
class ConversationFilter:
    """The list's filters; None means "any". `since` inclusive, `until` exclusive, both on
    `last_request_at`; `text` is a case-insensitive substring of the title."""

    domain: str | None = None
    account: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    text: str | None = None


@dataclass(frozen=True)
class BranchSummary:
    """One branch of a conversation, from its first and last requests."""

    branch_id: str | None
    kind: str
    request_count: int
    first_request_id: str
    last_request_id: str
    parent_request_id: str | None   # of the first request: where the branch forks
    created_at: datetime
    last_request_at: datetime
    is_subtask: bool                # of the first request


@dataclass(frozen=True)
class ConversationDetail:
    """One conversation's row, its first requests in received order and all its branches."""

    conversation: dict[str, Any]
    requests: list[dict[str, Any]]
    requests_truncated: bool
    branches: list[BranchSummary]


def list_conversations(filters: ConversationFilter, limit: int,
                       offset: int) -> tuple[list[dict[str, Any]], int]:
    """One page of conversation rows, latest activity first, and how many match in all."""
    page = list(page_query(filters).limit(limit).offset(offset).dicts()) if limit else []
    if offset == 0 and len(page) < limit:
        return page, len(page)  # the page holds every match: no need to count them
    return page, count_conversations(filters)


def page_query(filters: ConversationFilter) -> Select:
    """The rows matching `filters`, latest activity first (id breaks ties, so pages are
    stable)."""
    query = Conversation.select()
    condition = _where(filters)
    if condition is not None:
        query = query.where(condition)
    return query.order_by(Conversation.last_request_at.desc(), Conversation.id.desc())


def count_conversations(filters: ConversationFilter) -> int:
    """How many conversations match `filters`."""
    query = Conversation.select(fn.COUNT(SQL("*")))
    condition = _where(filters)
    if condition is not None:
        query = query.where(condition)
    return query.scalar() or 0


def get_conversation(conversation_id: str,
                     max_requests: int | None = None) -> ConversationDetail | None:
    """The conversation with its first `max_requests` (default MAX_REQUESTS) requests and its
    branches, or None when no such conversation is recorded."""
    cap = MAX_REQUESTS if max_requests is None else max_requests
    row = Conversation.select().where(Conversation.id == conversation_id).dicts().first()
    if row is None:
        return None
    found = list(requests_query(conversation_id).limit(cap + 1).dicts())
    return ConversationDetail(row, found[:cap], len(found) > cap, branches(conversation_id))


def requests_query(conversation_id: str) -> Select:
    """The conversation's requests in received order (id breaks ties)."""
    return (Request.select(*REQUEST_FIELDS).where(Request.conversation_id == conversation_id)
            .order_by(Request.received_at, Request.id))


def branch_ends_query(conversation_id: str) -> Select:
    """The first and the last request of each branch of the conversation (a branch of one
    request: one row, both), each with its ranks and its branch's number of requests."""
    first_rank = fn.ROW_NUMBER().over(partition_by=[Request.branch_id],
                                      order_by=[Request.received_at, Request.id])
    last_rank = fn.ROW_NUMBER().over(partition_by=[Request.branch_id],
                                     order_by=[Request.received_at.desc(), Request.id.desc()])
    count = fn.COUNT(SQL("*")).over(partition_by=[Request.branch_id])
    ranked = (Request.select(Request.id, Request.branch_id, Request.parent_request_id,
                             Request.received_at, Request.is_subtask,
                             first_rank.alias("first_rank"), last_rank.alias("last_rank"),
                             count.alias("request_count"))
              .where(Request.conversation_id == conversation_id).alias("ranked"))
    return (Request.select(ranked.c.id, ranked.c.branch_id, ranked.c.parent_request_id,
                           ranked.c.received_at, ranked.c.is_subtask, ranked.c.first_rank,
                           ranked.c.last_rank, ranked.c.request_count)
            .from_(ranked).where((ranked.c.first_rank == 1) | (ranked.c.last_rank == 1)))


def branches(conversation_id: str) -> list[BranchSummary]:
    """Every branch of the conversation: `main` first, then by creation (first request)."""
    firsts: dict[str | None, tuple] = {}
    lasts: dict[str | None, tuple] = {}
    ends = branch_ends_query(conversation_id).tuples()
    for request_id, branch_id, parent, received, subtask, first, last, counted in ends:
        end = (request_id, parent, Request.received_at.python_value(received),
               bool(Request.is_subtask.python_value(subtask)), int(counted))
        if first == 1:  # a branch of one request is both its first and its last
            firsts[branch_id] = end
        if last == 1:
            lasts[branch_id] = end
    out = [BranchSummary(branch_id, branch_kind(branch_id), counted, first_id,
                         lasts[branch_id][0], parent, created, lasts[branch_id][2], subtask)
           for branch_id, (first_id, parent, created, subtask, counted) in firsts.items()]
    out.sort(key=lambda b: (b.branch_id != MAIN, b.created_at, b.first_request_id))
    return out


def branch_kind(branch_id: str | None) -> str:
    """`main`, or the kind a numbered branch's name starts with (`branch_<n>`, `subtask_<n>`,
    `compact_<n>`); any other name is shown as a user branch."""
    if branch_id == MAIN:
        return MAIN
    prefix, _, number = (branch_id or "").rpartition("_")
    return prefix if prefix in KINDS and number.isdigit() else BRANCH


def _where(filters: ConversationFilter) -> Expression | None:
    conditions = []
    if filters.domain is not None:
        conditions.append(Conversation.domain == filters.domain)
    if filters.account is not None:
        conditions.append(Conversation.account_id == filters.account)
    if filters.since is not None:
        conditions.append(Conversation.last_request_at >= filters.since)
    if filters.until is not None:
        conditions.append(Conversation.last_request_at < filters.until)
    if filters.text:
        # peewee's case-insensitive LIKE (ILIKE on PostgreSQL), with %, _ and \ escaped and
        # the pattern passed as a parameter.
        conditions.append(Conversation.title.contains(filters.text))
    return reduce(and_, conditions) if conditions else None
