"""`conversations relink`: recompute the conversation links of stored requests from a time on,
through the same batch linking as the writer, writing the links with UPDATEs."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import peewee
from peewee import fn

from app.conversations.linker import facts_of
from app.storage.linking import COUNTERS, BatchLinker, link_columns, link_fields, sql_of
from app.storage.models import Conversation, ConversationAnchor, Request

RELINK_PAGE = 200


def relink(db: peewee.Database, since: datetime,
           progress: Callable[[int], None] = lambda done: None) -> int:
    """Recompute the conversation fields of every request received since `since`, in the
    order received, as if they arrived now; returns how many requests were read.

    Links of earlier requests stay: conversations they started keep their ids, and their
    figures are recomputed from the requests left to them before linking starts again.
    Each page of requests is one transaction, so readers see whole pages.
    """
    with db.atomic():
        touched = [row[0] for row in db.execute_sql(*sql_of(db, (
            Request.select(Request.conversation_id).distinct()
            .where((Request.received_at >= since) & Request.conversation_id.is_null(False)))))]
        later = Request.select(Request.id).where(Request.received_at >= since)
        _execute(db, ConversationAnchor.update(child_request_id=None)
                 .where(ConversationAnchor.child_request_id.in_(later)))
        _execute(db, ConversationAnchor.delete().where(ConversationAnchor.received_at >= since))
        _execute(db, Request.update({getattr(Request, name): value
                                     for name, value in link_columns(None).items()})
                 .where(Request.received_at >= since))
        _execute(db, Conversation.delete().where(Conversation.created_at >= since))
        for conversation_id in touched:
            _refigure(db, conversation_id)

    def query(sql: str, params: list[Any]) -> list[tuple]:
        return db.execute_sql(sql, params).fetchall()

    done, condition = 0, Request.received_at >= since
    while True:
        page = list(Request.select().where(condition)
                    .order_by(Request.received_at, Request.id).limit(RELINK_PAGE).dicts())
        if not page:
            return done
        with db.atomic():
            batch = [facts for row in page if (facts := facts_of(row)) is not None]
            linker = BatchLinker(db, query, batch)
            links, _ = linker.link_all()
            for facts in batch:
                values = {**link_fields(facts), **link_columns(links.get(facts.id))}
                _execute(db, Request.update({getattr(Request, k): v for k, v in values.items()})
                         .where((Request.id == facts.id)
                                & (Request.received_at == facts.received_at)))
            linker.write(db.execute_sql, {facts.id for facts in batch})
        done += len(page)
        progress(len(page))
        last_at, last_id = page[-1]["received_at"], page[-1]["id"]  # keyset paging
        condition = (Request.received_at > last_at) | ((Request.received_at == last_at)
                                                       & (Request.id > last_id))


def _refigure(db: peewee.Database, conversation_id: str) -> None:
    """A conversation's figures from the requests it still has (after a partial relink)."""
    r = Request
    mine = r.conversation_id == conversation_id
    row = db.execute_sql(*sql_of(db, r.select(
        fn.COUNT(r.id), fn.MAX(r.received_at), fn.MAX(r.message_count),
        fn.SUM(fn.COALESCE(r.input_tokens, 0)), fn.SUM(fn.COALESCE(r.output_tokens, 0)),
        fn.SUM(fn.COALESCE(r.cache_creation_input_tokens, 0)),
        fn.SUM(fn.COALESCE(r.cache_read_input_tokens, 0)),
        fn.SUM(fn.ROUND(fn.COALESCE(r.cost_usd, 0) * 1_000_000)),
    ).where(mine))).fetchone()
    if not row or not row[0]:
        _execute(db, Conversation.delete().where(Conversation.id == conversation_id))
        return
    branches = [value for (value,) in db.execute_sql(*sql_of(
        db, r.select(r.branch_id).distinct().where(mine)))]
    c = Conversation
    _execute(db, c.update({
        c.request_count: row[0], c.last_request_at: r.received_at.python_value(row[1]),
        c.message_count: row[2] or 0, c.input_tokens: int(row[3] or 0),
        c.output_tokens: int(row[4] or 0), c.cache_creation_input_tokens: int(row[5] or 0),
        c.cache_read_input_tokens: int(row[6] or 0), c.cost_microusd: int(row[7] or 0),
        **{getattr(c, column): _highest(branches, kind) for kind, column in COUNTERS.items()},
    }).where(c.id == conversation_id))


def _highest(branches: list[str | None], kind: str) -> int:
    numbers = [int(name[len(kind) + 1:]) for name in branches
               if name and name.startswith(kind + "_") and name[len(kind) + 1:].isdigit()]
    return max(numbers, default=0)


def _execute(db: peewee.Database, statement) -> None:
    db.execute_sql(*sql_of(db, statement))
