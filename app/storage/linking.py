"""Conversation linking in the database: the `Store` lookups of app/conversations/linker.py as
indexed SQL, and the writes that record a link (the request's fields, its conversation's
figures, the anchors its answer leaves for later requests).

It runs on the writer's connection inside the transaction that inserts the batch (sink.py), and
in `conversations relink`. Statements are built with peewee (so parameters and quoting follow
the engine) and run through two callables: `query` (rows back) and `execute`.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import peewee
import psycopg2
from peewee import Case, fn

from app.conversations.linker import (
    BRANCH,
    COMPACT,
    SUBTASK,
    Anchor,
    Facts,
    Link,
    Stored,
    facts_of,
    link,
)
from app.storage.models import Conversation, ConversationAnchor, Request

Query = Callable[[str, list[Any]], list[tuple]]
Execute = Callable[[str, list[Any]], Any]

# Errors of the database itself (the batch is retried later), not of linking's own logic.
DATABASE_ERRORS = (sqlite3.Error, peewee.DatabaseError, psycopg2.Error)
CANDIDATES = 50          # equal histories considered at most (the newest)
SPAWN, COMPACTION = "spawn", "compaction"
_COUNTERS = {BRANCH: Conversation.branch_count, SUBTASK: Conversation.subtask_count,
             COMPACT: Conversation.compact_count}
_STORED = (Request.id, Request.received_at, Request.conversation_id, Request.branch_id,
           Request.parent_request_id, Request.session_id, Request.agent_id, Request.system_hash,
           Request.response_hash, Request.current_message_hash, Request.is_subtask,
           Request.parent_task_request_id, Request.is_retry, Request.is_compaction_request,
           Request.is_compaction_continuation)
_ANCHOR = (ConversationAnchor.id, ConversationAnchor.request_id, ConversationAnchor.received_at,
           ConversationAnchor.session_id, ConversationAnchor.conversation_id,
           ConversationAnchor.summary_key, ConversationAnchor.child_request_id)


class SqlStore:
    """The linker's lookups and the link's writes over one connection (one transaction)."""

    def __init__(self, db: peewee.Database, query: Query, execute: Execute):
        self.db = db  # compiles the statements: the models may be bound elsewhere (tests)
        self._query, self._execute = query, execute

    # ---------------------------------------------------------------- lookups (Store)

    def by_hashes(self, domain: str, hashes: Sequence[str], before: datetime,
                  since: datetime | None = None) -> list[Stored]:
        condition = ((Request.current_message_hash.in_(list(hashes)))
                     & (Request.domain == domain) & Request.conversation_id.is_null(False)
                     & (Request.received_at <= before))
        if since is not None:
            condition &= Request.received_at >= since
        return self._stored(Request.select(*_STORED).where(condition)
                            .order_by(Request.received_at.desc()).limit(CANDIDATES))

    def children(self, request_id: str) -> list[Stored]:
        return self._stored(Request.select(*_STORED)
                            .where((Request.parent_request_id == request_id)
                                   & Request.conversation_id.is_null(False))
                            .order_by(Request.received_at).limit(CANDIDATES))

    def request(self, request_id: str) -> Stored | None:
        found = self._stored(Request.select(*_STORED).where(Request.id == request_id))
        return found[0] if found else None

    def latest_in_session(self, domain: str, session_id: str,
                          before: datetime) -> Stored | None:
        found = self._stored(Request.select(*_STORED)
                             .where((Request.session_id == session_id)
                                    & (Request.domain == domain)
                                    & Request.conversation_id.is_null(False)
                                    & (Request.received_at <= before))
                             .order_by(Request.received_at.desc()).limit(1))
        return found[0] if found else None

    def spawns(self, domain: str, key_hash: str, since: datetime,
               before: datetime) -> list[Anchor]:
        return self._anchors(SPAWN, domain, key_hash, since, before)

    def compactions(self, domain: str, since: datetime, before: datetime) -> list[Anchor]:
        return self._anchors(COMPACTION, domain, "", since, before)

    def new_branch(self, conversation_id: str, kind: str) -> int:
        counter = _COUNTERS[kind]
        self._run(Conversation.update({counter: counter + 1})
                  .where(Conversation.id == conversation_id))
        rows = self._query(*_sql(self.db, Conversation.select(counter)
                                 .where(Conversation.id == conversation_id)))
        return int(rows[0][0]) if rows else 1

    def new_conversation_id(self) -> str:
        return str(uuid.uuid4())

    # ---------------------------------------------------------------- writes

    def record(self, facts: Facts, found: Link | None) -> None:
        """Store the request's hashes and link, its conversation's figures and the anchors its
        answer leaves."""
        shape = facts.shape
        values = {Request.current_message_hash: shape.current_hash,
                  Request.parent_message_hash: shape.parent_hash,
                  Request.system_hash: shape.system_hash,
                  Request.message_count: shape.message_count,
                  Request.response_hash: facts.response_hash,
                  Request.is_compaction_request: shape.is_compaction_request}
        if found is not None:
            values.update({Request.conversation_id: found.conversation_id,
                           Request.branch_id: found.branch_id,
                           Request.parent_request_id: found.parent_request_id,
                           Request.is_subtask: found.is_subtask,
                           Request.parent_task_request_id: found.parent_task_request_id,
                           Request.is_compaction_continuation: found.is_compaction_continuation,
                           Request.is_retry: found.is_retry})
        # received_at too: on PostgreSQL it picks the one partition to look in.
        self._run(Request.update(values).where((Request.id == facts.id)
                                               & (Request.received_at == facts.received_at)))
        if found is None:
            return
        self._count(facts, found)
        if found.claimed_anchor is not None:
            self._run(ConversationAnchor.update(child_request_id=facts.id)
                      .where((ConversationAnchor.id == found.claimed_anchor)
                             & ConversationAnchor.child_request_id.is_null()))
        anchors = [{"kind": SPAWN, "key_hash": key, "tool_use_id": tool_id, "summary_key": None}
                   for tool_id, key in facts.spawns]
        if facts.summary_key:
            anchors.append({"kind": COMPACTION, "key_hash": "", "tool_use_id": "",
                            "summary_key": facts.summary_key})
        for anchor in anchors:
            self._run(ConversationAnchor.insert(
                domain=facts.domain, request_id=facts.id, received_at=facts.received_at,
                session_id=facts.session_id, conversation_id=found.conversation_id,
                **anchor).on_conflict_ignore())

    def _count(self, facts: Facts, found: Link) -> None:
        figures = facts.figures
        if found.new_conversation:
            self._run(Conversation.insert(
                id=found.conversation_id, domain=facts.domain, account_id=facts.account_id,
                session_id=facts.session_id, first_request_id=facts.id,
                created_at=facts.received_at, last_request_at=facts.received_at,
                title=facts.title, request_count=1, message_count=facts.shape.message_count,
                **figures))
            return
        c = Conversation
        received = c.last_request_at.db_value(facts.received_at)  # naive UTC, as stored
        self._run(c.update({
            c.request_count: c.request_count + 1,
            c.last_request_at: Case(None, [(c.last_request_at < received, received)],
                                    c.last_request_at),
            c.message_count: Case(None, [(c.message_count < facts.shape.message_count,
                                          facts.shape.message_count)], c.message_count),
            **{getattr(c, name): getattr(c, name) + value for name, value in figures.items()},
        }).where(c.id == found.conversation_id))

    # ---------------------------------------------------------------- plumbing

    def _anchors(self, kind: str, domain: str, key_hash: str, since: datetime,
                 before: datetime) -> list[Anchor]:
        a = ConversationAnchor
        rows = self._query(*_sql(self.db, a.select(*_ANCHOR).where(
            (a.domain == domain) & (a.kind == kind) & (a.key_hash == key_hash)
            & (a.received_at >= since) & (a.received_at <= before))
            .order_by(a.received_at.desc()).limit(CANDIDATES)))
        return [Anchor(row[0], row[1], a.received_at.python_value(row[2]), *row[3:])
                for row in rows]

    def _stored(self, select) -> list[Stored]:
        out = []
        for row in self._query(*_sql(self.db, select)):
            values = [field.python_value(value) for field, value in zip(_STORED, row,
                                                                        strict=True)]
            out.append(Stored(*values))
        return out

    def _run(self, statement) -> None:
        self._execute(*_sql(self.db, statement))


def link_all(store: SqlStore, batch: Sequence[Facts]) -> list[tuple[str, Exception]]:
    """Link and record each request of `batch` in order; (id, error) for those a bug in
    linking left unlinked. Database errors propagate: the batch is written again later."""
    failures = []
    for facts in batch:
        try:
            found = link(facts, store)
        except DATABASE_ERRORS:
            raise
        except Exception as err:  # a bug on one odd request must not lose the batch
            failures.append((facts.id, err))
            found = None
        store.record(facts, found)
    return failures


def _sql(db: peewee.Database, statement) -> tuple[str, list[Any]]:
    """The SQL of a peewee statement in `db`'s dialect."""
    sql, params = db.get_sql_context().sql(statement).query()
    return sql, list(params)




# ---------------------------------------------------------------- relink

RELINK_PAGE = 200
_LINK_FIELDS = {Request.conversation_id: None, Request.branch_id: None,
                Request.parent_request_id: None, Request.is_subtask: False,
                Request.parent_task_request_id: None, Request.is_compaction_continuation: False,
                Request.is_retry: False}


def relink(db: peewee.Database, since: datetime,
           progress: Callable[[int], None] = lambda done: None) -> int:
    """Recompute the conversation fields of every request received since `since`, in the
    order received, as if they arrived now; returns how many were linked.

    Links of earlier requests stay: conversations they started keep their ids, and their
    figures are recomputed from the requests left to them before linking starts again.
    Each page of requests is one transaction, so readers see whole pages.
    """
    with db.atomic():
        touched = [row[0] for row in db.execute_sql(*_sql(db,
            Request.select(Request.conversation_id).distinct()
            .where((Request.received_at >= since) & Request.conversation_id.is_null(False))))]
        later = Request.select(Request.id).where(Request.received_at >= since)
        _execute(db, ConversationAnchor.update(child_request_id=None)
                 .where(ConversationAnchor.child_request_id.in_(later)))
        _execute(db, ConversationAnchor.delete().where(ConversationAnchor.received_at >= since))
        _execute(db, Request.update(_LINK_FIELDS).where(Request.received_at >= since))
        _execute(db, Conversation.delete().where(Conversation.created_at >= since))
        for conversation_id in touched:
            _refigure(db, conversation_id)
    store = SqlStore(db, lambda sql, params: db.execute_sql(sql, params).fetchall(),
                     db.execute_sql)
    done, condition = 0, Request.received_at >= since
    while True:
        page = list(Request.select().where(condition)
                    .order_by(Request.received_at, Request.id).limit(RELINK_PAGE).dicts())
        if not page:
            return done
        with db.atomic():
            link_all(store, [facts for row in page if (facts := facts_of(row)) is not None])
        done += len(page)
        progress(len(page))
        last_at, last_id = page[-1]["received_at"], page[-1]["id"]  # keyset paging
        condition = (Request.received_at > last_at) | ((Request.received_at == last_at)
                                                       & (Request.id > last_id))


def _refigure(db: peewee.Database, conversation_id: str) -> None:
    """A conversation's figures from the requests it still has (after a partial relink)."""
    r = Request
    mine = r.conversation_id == conversation_id
    row = db.execute_sql(*_sql(db, r.select(
        fn.COUNT(r.id), fn.MAX(r.received_at), fn.MAX(r.message_count),
        fn.SUM(fn.COALESCE(r.input_tokens, 0)), fn.SUM(fn.COALESCE(r.output_tokens, 0)),
        fn.SUM(fn.COALESCE(r.cache_creation_input_tokens, 0)),
        fn.SUM(fn.COALESCE(r.cache_read_input_tokens, 0)),
        fn.SUM(fn.ROUND(fn.COALESCE(r.cost_usd, 0) * 1_000_000)),
    ).where(mine))).fetchone()
    if not row or not row[0]:
        _execute(db, Conversation.delete().where(Conversation.id == conversation_id))
        return
    branches = [value for (value,) in db.execute_sql(*_sql(db,
        r.select(r.branch_id).distinct().where(mine)))]
    c = Conversation
    _execute(db, c.update({
        c.request_count: row[0], c.last_request_at: r.received_at.python_value(row[1]),
        c.message_count: row[2] or 0, c.input_tokens: int(row[3] or 0),
        c.output_tokens: int(row[4] or 0), c.cache_creation_input_tokens: int(row[5] or 0),
        c.cache_read_input_tokens: int(row[6] or 0), c.cost_microusd: int(row[7] or 0),
        **{_COUNTERS[kind]: _highest(branches, kind) for kind in _COUNTERS},
    }).where(c.id == conversation_id))


def _highest(branches: list[str | None], kind: str) -> int:
    numbers = [int(name[len(kind) + 1:]) for name in branches
               if name and name.startswith(kind + "_") and name[len(kind) + 1:].isdigit()]
    return max(numbers, default=0)


def _execute(db: peewee.Database, statement) -> None:
    db.execute_sql(*_sql(db, statement))
