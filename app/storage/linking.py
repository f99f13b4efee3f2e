"""Conversation linking in the database: the `Store` of app/conversations/linker.py for one
batch, and the writes that record its links.

The writer links a batch in the transaction that inserts it (sink.py), before the INSERT, so
each request is written once with its link. `BatchLinker` reads what the batch needs in a few
statements up front (the stored requests with the batch's histories, their children, the
sub-agent spawns its prompts may answer, the conversations they belong to), then decides every
link in memory, oldest request first, adding each decided request to what it knows so that the
later ones of the batch see it. Rare lookups (a missing ancestor, a compaction, a request it
did not prefetch) fall back to one indexed query each. A history stored many times over (a
request retried or replayed again and again) is read only as far as its newest PER_HASH
requests: the lookups only ever consider the newest CANDIDATES, and reading them all would make
every batch slower than the last. When what was read cannot prove a lookup's answer, the lookup
asks the database. At the end it writes the conversations' figures, the anchors the batch's
answers leave and the spawns it claimed. `relink.py` replays stored requests through the same
code.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import peewee
import psycopg2
from peewee import EXCLUDED, Case, fn

from app.conversations.linker import (
    BRANCH,
    COMPACT,
    SUBTASK,
    SUBTASK_WINDOW,
    Anchor,
    Facts,
    Link,
    Stored,
    link,
)
from app.conversations.normalise import text_hash
from app.storage.models import Conversation, ConversationAnchor, Request

Query = Callable[[str, list[Any]], list[tuple]]   # SQL and parameters -> rows

# Errors of the database itself (the batch is retried later), not of linking's own logic.
DATABASE_ERRORS = (sqlite3.Error, peewee.DatabaseError, psycopg2.Error)
CANDIDATES = 50          # equal histories considered at most (the newest)
PER_HASH = CANDIDATES + 1  # requests read up front per history hash (the newest)
IN_LIST = 500            # values per IN (...) list
SPAWN, COMPACTION = "spawn", "compaction"
COUNTERS = {BRANCH: "branch_count", SUBTASK: "subtask_count", COMPACT: "compact_count"}
FIGURES = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
           "cache_read_input_tokens", "cost_microusd")
LINK_COLUMNS = ("conversation_id", "branch_id", "parent_request_id", "is_subtask",
                "parent_task_request_id", "is_compaction_continuation", "is_retry")
_STORED = (Request.id, Request.received_at, Request.conversation_id, Request.branch_id,
           Request.parent_request_id, Request.session_id, Request.agent_id, Request.system_hash,
           Request.response_hash, Request.current_message_hash, Request.is_subtask,
           Request.parent_task_request_id, Request.is_retry, Request.is_compaction_request,
           Request.is_compaction_continuation, Request.domain)   # Stored's fields, in order
_ANCHOR = (ConversationAnchor.id, ConversationAnchor.request_id, ConversationAnchor.received_at,
           ConversationAnchor.session_id, ConversationAnchor.conversation_id,
           ConversationAnchor.summary_key, ConversationAnchor.child_request_id,
           ConversationAnchor.key_hash)                          # Anchor's fields, in order


def link_fields(facts: Facts) -> dict[str, Any]:
    """The columns a request's own body decides (its hashes), whatever its link."""
    shape = facts.shape
    return {"current_message_hash": shape.current_hash, "parent_message_hash": shape.parent_hash,
            "system_hash": shape.system_hash, "message_count": shape.message_count,
            "response_hash": facts.response_hash,
            "is_compaction_request": shape.is_compaction_request}


def link_columns(found: Link | None) -> dict[str, Any]:
    """The columns a link decides (all empty for a request of no conversation)."""
    if found is None:
        return {"conversation_id": None, "branch_id": None, "parent_request_id": None,
                "is_subtask": False, "parent_task_request_id": None,
                "is_compaction_continuation": False, "is_retry": False}
    return {name: getattr(found, name) for name in LINK_COLUMNS}


@dataclass
class _Conversation:
    """What the batch changes of one conversation."""

    facts: Facts | None = None             # its first request, when the batch starts it
    counters: dict[str, int] = field(default_factory=dict)   # branch numbers used so far
    requests: int = 0
    messages: int = 0
    last: datetime | None = None
    figures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FIGURES, 0))
    counted: list[str] = field(default_factory=list)          # ids of its requests


class BatchLinker:
    """Links the new Messages requests of one batch; see the module docstring."""

    def __init__(self, db: peewee.Database, query: Query, batch: Sequence[Facts]):
        self.db, self._query = db, query  # db compiles: the models may be bound elsewhere
        self.batch = list(batch)
        self._by_hash: dict[str, dict[str, Stored]] = defaultdict(dict)   # by hash, then id
        self._hashes_read: set[str] = set()
        # Hashes read only as far as their newest PER_HASH: the oldest time read. Every stored
        # request of that hash not read was received at that time or earlier.
        self._cut: dict[str, datetime] = {}
        self._children: dict[str, list[Stored]] = defaultdict(list)
        self._children_read: set[str] = set()
        self._requests: dict[str, Stored] = {}
        self._spawns: dict[tuple[str, str], list[Anchor]] = defaultdict(list)
        self._spawns_read: set[tuple[str, str]] = set()
        self._compactions: list[tuple[str, Anchor]] = []   # the batch's own, with their domain
        self._conversations: dict[str, _Conversation] = {}
        self._claims: dict[int, str] = {}
        self._new_anchors: list[dict[str, Any]] = []
        self._next_anchor = -1  # the batch's own anchors have no id yet: negative stand-ins
        self._prefetch()

    # ---------------------------------------------------------------- deciding

    def link_all(self) -> tuple[dict[str, Link | None], list[tuple[str, Exception]]]:
        """Every request's link, oldest first; (id, error) for those a bug in linking left
        unlinked. Database errors propagate: the batch is written again later."""
        links: dict[str, Link | None] = {}
        failures = []
        for facts in self.batch:
            try:
                found = link(facts, self)
            except DATABASE_ERRORS:
                raise
            except Exception as err:  # a bug on one odd request must not lose the batch
                failures.append((facts.id, err))
                found = None
            links[facts.id] = found
            if found is not None:
                self._add(facts, found)
        return links, failures

    # Store: the lookups of the link decision.

    def by_hashes(self, domain: str, hashes: Sequence[str], before: datetime,
                  since: datetime | None = None) -> list[Stored]:
        missing = [h for h in hashes if h not in self._hashes_read]
        if missing:
            self._read_hashes(missing)
        found = self._known(domain, hashes, before, since)
        cuts = [self._cut[h] for h in hashes if h in self._cut]
        if cuts and not _proven(found, cuts, since):
            # Requests not read could be among the newest: the database answers (rare: the
            # unread ones are older than all those read).
            condition = (Request.current_message_hash.in_(list(hashes))
                         & (Request.domain == domain) & (Request.received_at <= before))
            if since is not None:
                condition &= Request.received_at >= since
            for stored in self._select(condition, newest=CANDIDATES):
                self._remember(stored)
            found = self._known(domain, hashes, before, since)
        return found

    def _known(self, domain: str, hashes: Sequence[str], before: datetime,
               since: datetime | None) -> list[Stored]:
        found = [s for h in hashes for s in self._by_hash.get(h, {}).values()
                 if s.domain == domain and s.received_at <= before
                 and (since is None or s.received_at >= since)]
        return sorted(found, key=lambda s: s.received_at, reverse=True)[:CANDIDATES]

    def children(self, request_id: str) -> list[Stored]:
        if request_id not in self._children_read:
            self._read_children([request_id])
        return list(self._children[request_id])

    def request(self, request_id: str) -> Stored | None:
        if request_id not in self._requests:
            for stored in self._select(Request.id == request_id):
                self._remember(stored)
        return self._requests.get(request_id)

    def latest_in_session(self, domain: str, session_id: str,
                          before: datetime) -> Stored | None:
        found = self._select((Request.session_id == session_id) & (Request.domain == domain)
                             & (Request.received_at <= before), newest=1)
        found += [s for s in self._requests.values() if s.session_id == session_id
                  and s.domain == domain and s.received_at <= before]
        return max(found, key=lambda s: s.received_at, default=None)

    def spawns(self, domain: str, key_hash: str, since: datetime,
               before: datetime) -> list[Anchor]:
        key = (domain, key_hash)
        if key not in self._spawns_read:
            self._read_spawns(domain, [key_hash], since)
        return [a for a in self._spawns[key] if since <= a.received_at <= before]

    def compactions(self, domain: str, since: datetime, before: datetime) -> list[Anchor]:
        a = ConversationAnchor
        found = self._anchors((a.kind == COMPACTION) & (a.domain == domain)
                              & (a.received_at >= since) & (a.received_at <= before))
        found += [anchor for d, anchor in self._compactions
                  if d == domain and since <= anchor.received_at <= before]
        return found

    def new_branch(self, conversation_id: str, kind: str) -> int:
        state = self._conversation(conversation_id)
        if kind not in state.counters:
            column = COUNTERS[kind]
            rows = self._run_select(Conversation.select(getattr(Conversation, column))
                                    .where(Conversation.id == conversation_id))
            state.counters[kind] = int(rows[0][0]) if rows else 0
        state.counters[kind] += 1
        return state.counters[kind]

    def new_conversation_id(self) -> str:
        return str(uuid.uuid4())

    # ---------------------------------------------------------------- writing

    def write(self, execute: Callable[[str, list[Any]], Any], inserted: set[str]) -> None:
        """The figures of the conversations the inserted requests joined or started (one
        upsert), the anchors their answers leave, and the spawns they claimed."""
        rows = [self._conversation_row(conversation_id, state)
                for conversation_id, state in self._conversations.items()
                if any(request_id in inserted for request_id in state.counted)]
        c = Conversation
        grow = {getattr(c, name): getattr(c, name) + getattr(EXCLUDED, name)
                for name in ("request_count", *FIGURES)}
        keep_larger = {getattr(c, name): _greater(getattr(c, name), getattr(EXCLUDED, name))
                       for name in ("last_request_at", "message_count", *COUNTERS.values())}
        for start in range(0, len(rows), IN_LIST):
            execute(*self._sql(c.insert_many(rows[start:start + IN_LIST]).on_conflict(
                conflict_target=[c.id], update={**grow, **keep_larger})))
        anchors = [a for a in self._new_anchors if a["request_id"] in inserted]
        for start in range(0, len(anchors), IN_LIST):
            execute(*self._sql(ConversationAnchor.insert_many(anchors[start:start + IN_LIST])
                               .on_conflict_ignore()))
        for anchor_id, child in self._claims.items():
            if anchor_id > 0 and child in inserted:
                execute(*self._sql(ConversationAnchor.update(child_request_id=child).where(
                    (ConversationAnchor.id == anchor_id)
                    & ConversationAnchor.child_request_id.is_null())))

    def _conversation_row(self, conversation_id: str, state: _Conversation) -> dict[str, Any]:
        """The batch's share of a conversation, as a row: the whole row for one it started;
        for one stored already, the figures to add and the highest values seen (what else it
        says is never used: the row exists)."""
        first = state.facts or self.batch[0]
        return {"id": conversation_id, "domain": first.domain, "account_id": first.account_id,
                "session_id": first.session_id, "first_request_id": first.id,
                "created_at": first.received_at, "last_request_at": state.last,
                "title": first.title if state.facts else None,
                "request_count": state.requests, "message_count": state.messages,
                **state.figures,
                **{column: state.counters.get(kind, 0) for kind, column in COUNTERS.items()}}

    # ---------------------------------------------------------------- knowing

    def _add(self, facts: Facts, found: Link) -> None:
        """What later requests of the batch must see of one just linked."""
        stored = Stored(facts.id, facts.received_at, found.conversation_id, found.branch_id,
                        found.parent_request_id, facts.session_id, facts.agent_id,
                        facts.shape.system_hash, facts.response_hash, facts.shape.current_hash,
                        found.is_subtask, found.parent_task_request_id, found.is_retry,
                        facts.shape.is_compaction_request, found.is_compaction_continuation,
                        domain=facts.domain)
        self._remember(stored)
        self._children_read.add(facts.id)  # new: it has no stored children
        if found.parent_request_id:
            self.children(found.parent_request_id)  # read the stored ones first
            self._children[found.parent_request_id].append(stored)
        if found.claimed_anchor is not None:
            self._claims[found.claimed_anchor] = facts.id
            for anchors in self._spawns.values():
                for index, anchor in enumerate(anchors):
                    if anchor.id == found.claimed_anchor:
                        anchors[index] = replace(anchor, child_request_id=facts.id)
        state = self._conversation(found.conversation_id)
        if found.new_conversation:
            state.facts = facts
        state.requests += 1
        state.counted.append(facts.id)
        state.messages = max(state.messages, facts.shape.message_count)
        state.last = max(state.last or facts.received_at, facts.received_at)
        for name in FIGURES:
            state.figures[name] += facts.figures.get(name, 0)
        self._leave_anchors(facts, found)

    def _leave_anchors(self, facts: Facts, found: Link) -> None:
        common = {"domain": facts.domain, "request_id": facts.id,
                  "received_at": facts.received_at, "session_id": facts.session_id,
                  "conversation_id": found.conversation_id}
        for tool_id, key in facts.spawns:
            self._new_anchors.append({**common, "kind": SPAWN, "key_hash": key,
                                      "tool_use_id": tool_id})
            self._spawns[(facts.domain, key)].append(self._anchor(facts, found))
        if facts.summary_key:
            self._new_anchors.append({**common, "kind": COMPACTION, "key_hash": "",
                                      "tool_use_id": "", "summary_key": facts.summary_key})
            self._compactions.append((facts.domain,
                                      self._anchor(facts, found, facts.summary_key)))

    def _anchor(self, facts: Facts, found: Link, summary: str | None = None) -> Anchor:
        self._next_anchor -= 1
        return Anchor(self._next_anchor, facts.id, facts.received_at, facts.session_id,
                      found.conversation_id, summary)

    def _conversation(self, conversation_id: str) -> _Conversation:
        return self._conversations.setdefault(conversation_id, _Conversation())

    def _remember(self, stored: Stored) -> None:
        self._requests[stored.id] = stored
        if stored.current_hash:
            self._by_hash[stored.current_hash].setdefault(stored.id, stored)

    # ---------------------------------------------------------------- reading

    def _prefetch(self) -> None:
        hashes = {h for f in self.batch if not f.side
                  for h in (f.shape.current_hash, *f.shape.ancestor_hashes[:1]) if h}
        self._read_hashes(sorted(hashes))
        self._read_children([s.id for found in self._by_hash.values() for s in found.values()])
        keys: dict[str, set[str]] = defaultdict(set)
        for f in self.batch:
            if f.shape.single_user_text and not f.side:
                keys[f.domain].add(text_hash(f.shape.single_user_text))
        if keys:
            since = min(f.received_at for f in self.batch) - SUBTASK_WINDOW
            for domain, domain_keys in keys.items():
                self._read_spawns(domain, sorted(domain_keys), since)

    def _read_hashes(self, hashes: Sequence[str]) -> None:
        """The newest PER_HASH stored requests of each hash, in one statement: a window
        function numbers them over the hash index and the rows' leading columns, and only
        those kept are read whole (a long history's rows are read past their bodies)."""
        for part in _parts(hashes):
            nth = fn.ROW_NUMBER().over(partition_by=[Request.current_message_hash],
                                       order_by=[Request.received_at.desc()])
            newest = (Request.select(Request.id.alias("newest_id"), nth.alias("nth"))
                      .where(Request.current_message_hash.in_(part)).alias("newest"))
            read: dict[str, list[datetime]] = defaultdict(list)
            for stored in self._run_select(
                    Request.select(*_STORED).join(newest, on=Request.id == newest.c.newest_id)
                    .where(newest.c.nth <= PER_HASH)):
                stored = _stored(stored)
                read[stored.current_hash].append(stored.received_at)
                if stored.conversation_id is not None:  # the candidates: linked requests
                    self._remember(stored)
            self._cut.update((h, min(times)) for h, times in read.items()
                             if len(times) >= PER_HASH)
            self._hashes_read.update(part)

    def _read_children(self, parents: Sequence[str]) -> None:
        wanted = [p for p in dict.fromkeys(parents) if p not in self._children_read]
        for part in _parts(wanted):
            for stored in self._select(Request.parent_request_id.in_(part)):
                self._remember(stored)
                self._children[stored.parent_request_id].append(stored)
            self._children_read.update(part)

    def _read_spawns(self, domain: str, keys: Sequence[str], since: datetime) -> None:
        a = ConversationAnchor
        for part in _parts(keys):
            for anchor in self._anchors((a.kind == SPAWN) & (a.domain == domain)
                                        & a.key_hash.in_(part) & (a.received_at >= since)):
                self._spawns[(domain, anchor.key_hash)].append(anchor)
            self._spawns_read.update((domain, key) for key in part)

    def _select(self, condition, newest: int | None = None) -> list[Stored]:
        select = (Request.select(*_STORED).where(condition
                                                 & Request.conversation_id.is_null(False)))
        if newest:
            select = select.order_by(Request.received_at.desc()).limit(newest)
        return [_stored(row) for row in self._run_select(select)]

    def _anchors(self, condition) -> list[Anchor]:
        a = ConversationAnchor
        rows = self._run_select(a.select(*_ANCHOR).where(condition)
                                .order_by(a.received_at.desc()).limit(CANDIDATES))
        return [Anchor(*(f.python_value(v) for f, v in zip(_ANCHOR, row, strict=True)))
                for row in rows]

    def _run_select(self, select) -> list[tuple]:
        return self._query(*self._sql(select))

    def _sql(self, statement) -> tuple[str, list[Any]]:
        return sql_of(self.db, statement)


def _stored(row: Sequence[Any]) -> Stored:
    return Stored(*(f.python_value(v) for f, v in zip(_STORED, row, strict=True)))


def _proven(found: list[Stored], cuts: list[datetime], since: datetime | None) -> bool:
    """Whether `found` (the newest CANDIDATES known) is the answer even though some hashes
    were read only down to the times in `cuts`: every request not read is older than `since`,
    or older than all of `found` when it is full."""
    full = len(found) == CANDIDATES
    return all((since is not None and since > cut) or (full and found[-1].received_at > cut)
               for cut in cuts)


def _greater(column, value):
    """The larger of a column and a value, in SQL both engines read (a concurrent writer may
    have moved the column on)."""
    return Case(None, [(column < value, value)], column)


def _parts(values: Sequence[str]) -> Iterable[list[str]]:
    values = list(values)
    for start in range(0, len(values), IN_LIST):
        yield values[start:start + IN_LIST]


def sql_of(db: peewee.Database, statement) -> tuple[str, list[Any]]:
    """The SQL of a peewee statement in `db`'s dialect."""
    sql, params = db.get_sql_context().sql(statement).query()
    return sql, list(params)
