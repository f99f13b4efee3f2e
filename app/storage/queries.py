"""Read-side queries of the JSON API: exchanges and their stream chunks (pure peewee, no Flask).

Every function here runs on the request path of the gevent server, so a call is one short
statement for the page and at most one more for the total, both served by the indexes of
`migrations/0001_initial.py` (the list filters on domain/account/model/conversation and orders
by `received_at`) and `0005` (type; text search through a pg_trgm index of a bounded search text
on PostgreSQL); the list never selects bodies or headers. Callers hold a connection only for
the duration of `read_session`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import reduce
from operator import and_, or_

from peewee import (
    SQL,
    Case,
    DatabaseProxy,
    Expression,
    Node,
    PostgresqlDatabase,
    Select,
    fn,
)

from app.storage.database import storage_errors
from app.storage.models import Request, RequestChunk, database_proxy

# What a list item carries: everything needed for a table row, nothing heavy.
SUMMARY_FIELDS = (
    Request.id, Request.received_at, Request.completed_at, Request.domain, Request.account_id,
    Request.method, Request.path, Request.model, Request.request_type, Request.stream,
    Request.status, Request.outcome, Request.error_type, Request.duration_ms,
    Request.first_token_ms, Request.input_tokens, Request.output_tokens,
    Request.cache_creation_input_tokens, Request.cache_creation_5m_tokens,
    Request.cache_creation_1h_tokens, Request.cache_read_input_tokens, Request.cost_usd,
    Request.tool_call_count, Request.conversation_id, Request.branch_id, Request.session_id,
)

# Searched by `q`: what was asked, what came back, and why it failed; as a bounded search text
# (migrations/0005_search_and_lookup_indexes.py): the request's last message (its whole body when
# it has no `messages`) cut at ASKED_CHARS, then the response and the error message, cut too,
# joined by newlines. Bounds in characters, the migration's.
SEARCHED_FIELDS = (Request.request_body, Request.response_body, Request.error_message)
ASKED_CHARS = 3000
ANSWER_CHARS = 3000
ERROR_CHARS = 1000

STATUS_ERROR = "error"
STATUS_DISCONNECTED = "client_disconnected"


@dataclass(frozen=True)
class RequestFilter:
    """The list's filters; None means "any". `status` is already validated by the caller:
    a code ("200"), a class ("4xx"), "error" or "client_disconnected"."""

    domain: str | None = None
    account: str | None = None
    model: str | None = None
    request_type: str | None = None
    status: str | None = None
    conversation_id: str | None = None
    since: datetime | None = None      # inclusive
    until: datetime | None = None      # exclusive
    text: str | None = None


@contextmanager
def read_session() -> Iterator[None]:
    """One connection for the reads of one API call, given back (to the pool) right after.

    Database failures surface as a one-line StorageError.
    """
    db = database_proxy.obj
    with storage_errors(db, "read"), db.connection_context():
        yield


def list_requests(filters: RequestFilter, limit: int, offset: int) -> tuple[list[dict], int]:
    """One page of summaries, newest first, and how many rows match in all."""
    page = list(page_query(filters).limit(limit).offset(offset).dicts()) if limit else []
    if offset == 0 and len(page) < limit:
        return page, len(page)  # the page holds every match: no need to count them
    return page, count_requests(filters)


def page_query(filters: RequestFilter) -> Select:
    """The summaries matching `filters`, newest first (id breaks ties, so pages are stable)."""
    query = Request.select(*SUMMARY_FIELDS)
    condition = _where(filters)
    if condition is not None:
        query = query.where(condition)
    return query.order_by(Request.received_at.desc(), Request.id.desc())


def count_requests(filters: RequestFilter) -> int:
    """How many exchanges match `filters` (the same conditions as the page, without order)."""
    query = Request.select(fn.COUNT(SQL("*")))
    condition = _where(filters)
    if condition is not None:
        query = query.where(condition)
    return query.scalar() or 0


def get_request(request_id: str) -> Request | None:
    """The whole row of one exchange, bodies included, or None."""
    return Request.get_or_none(Request.id == request_id)


def request_exists(request_id: str) -> bool:
    """Whether an exchange with this id was recorded."""
    return Request.select(Request.id).where(Request.id == request_id).exists()


def list_chunks(request_id: str, limit: int, offset: int) -> tuple[list[RequestChunk], int]:
    """One page of an exchange's stored SSE events in arrival order, and their number."""
    query = (RequestChunk.select(RequestChunk.seq, RequestChunk.offset_ms, RequestChunk.data)
             .where(RequestChunk.request_id == request_id).order_by(RequestChunk.seq))
    page = list(query.limit(limit).offset(offset)) if limit else []
    if offset == 0 and len(page) < limit:
        return page, len(page)
    total = (RequestChunk.select(fn.COUNT(SQL("*")))
             .where(RequestChunk.request_id == request_id).scalar())
    return page, total or 0


def _where(filters: RequestFilter) -> Expression | None:
    conditions = []
    for field, value in ((Request.domain, filters.domain),
                         (Request.account_id, filters.account),
                         (Request.model, filters.model),
                         (Request.request_type, filters.request_type),
                         (Request.conversation_id, filters.conversation_id)):
        if value is not None:
            conditions.append(field == value)
    if filters.status is not None:
        conditions.append(_status_condition(filters.status))
    if filters.since is not None:
        conditions.append(Request.received_at >= filters.since)
    if filters.until is not None:
        conditions.append(Request.received_at < filters.until)
    if filters.text:
        conditions.append(_text_condition(filters.text))
    return reduce(and_, conditions) if conditions else None


def _status_condition(status: str) -> Expression:
    if status == STATUS_ERROR:
        return Request.outcome == "failed"
    if status == STATUS_DISCONNECTED:
        # Matched on both columns so the filter holds however the writer spells a hang-up
        # (the status column may carry 499 while the outcome says client_disconnected).
        return (Request.status == STATUS_DISCONNECTED) | (Request.outcome == STATUS_DISCONNECTED)
    if status.endswith("xx"):
        # Codes are stored as three-digit text, so a class is a range of strings; the only
        # non-numeric value, "client_disconnected", sorts after every digit.
        low = status[0] + "00"
        high = str(int(status[0]) + 1) + "00"
        return (Request.status >= low) & (Request.status < high)
    return Request.status == status


def _text_condition(text: str) -> Expression:
    # Bodies are stored as the JSON text that crossed the wire, where a quote is \" and a
    # newline \n, and some clients write non-ASCII as \u escapes: also look for those spellings.
    variants = dict.fromkeys((text, json.dumps(text, ensure_ascii=False)[1:-1],
                              json.dumps(text)[1:-1]))
    # `contains` is peewee's case-insensitive LIKE (ILIKE on PostgreSQL); it escapes %, _ and
    # \ with an explicit ESCAPE clause and passes the pattern as a parameter, never as SQL.
    searched = search_text()
    return reduce(or_, (searched.contains(variant) for variant in variants))


def search_text() -> Node:
    """The text `q` looks in, per engine. On PostgreSQL the migration's function, spelled
    exactly as its pg_trgm index is, so the planner can use that index; on SQLite the same text
    computed in the query (a search there reads every row of its range)."""
    db = Request._meta.database  # the process's, or a test's `bind_ctx`
    if isinstance(db.obj if isinstance(db, DatabaseProxy) else db, PostgresqlDatabase):
        return fn.nexus_search_text(*SEARCHED_FIELDS)
    body, answer, error = SEARCHED_FIELDS
    # json_extract answers a JSON object as compact JSON text, where PostgreSQL's jsonb writes
    # ", " and ": " between items: a search spanning JSON punctuation may differ by spaces.
    last = Case(None, [(fn.json_valid(body), fn.json_extract(body, "$.messages[#-1]"))], None)
    parts = (fn.substr(fn.COALESCE(last, body), 1, ASKED_CHARS),
             fn.substr(answer, 1, ANSWER_CHARS), fn.substr(error, 1, ERROR_CHARS))
    newline = SQL("char(10)")
    joined = fn.COALESCE(parts[0], "")
    for part in parts[1:]:
        joined = joined.concat(newline).concat(fn.COALESCE(part, ""))
    return joined
