"""The Conversations pages (SPEC §7.2, CONVERSATIONS.md).

- `/dashboard/conversations`: the conversations, latest activity first, with their figures as
  the writer keeps them; filters (domain, account, title text, since) and pages. An htmx request
  gets the list fragment alone (filters, pages and the live refresh of page 1 swap it).
- `/dashboard/conversations/<id>`: one conversation as a tree (a column per branch, each
  branch starting level with the request it forks from) and a timeline of every request;
  `?branch=` filters the timeline (an htmx request gets the timeline fragment alone).

Both read through `conversation_queries`, the JSON API's queries: the list is one indexed
statement on `conversations` (and one count), a conversation three indexed statements. The tree
is laid out here, in memory, in one pass over the requests in received order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import Response, current_app, make_response, render_template, request, url_for

from app.api import params
from app.api.serialise import total_tokens
from app.conversations.linker import BRANCH, COMPACT, MAIN, SUBTASK
from app.dashboard import bp, htmx
from app.errors import InvalidRequest
from app.storage import conversation_queries, queries
from app.storage.conversation_queries import BranchSummary, ConversationDetail

PAGE_SIZE = 50
FILTERS = ("domain", "account", "q", "since")
SINCE_CHOICES = (("", "Any time"), ("1h", "Last hour"), ("24h", "Last 24 hours"),
                 ("7d", "Last 7 days"), ("30d", "Last 30 days"))
# Requests drawn with one conversation: the tree and the timeline of a longer one stop there
# (and say so, pointing to the request list for the rest). A thousand requests make a page of
# about 1.5 MB, rendered in well under 100 ms.
MAX_REQUESTS = 1000

KIND_LABELS = {MAIN: "Main", BRANCH: "Branch", SUBTASK: "Sub-agent", COMPACT: "Compacted"}
# The marks a request may carry: (its flag, CSS class, label, explanation).
MARKS = (
    ("is_retry", "is-retry", "↻ retry",
     "The same history sent again: a retry of an earlier request"),
    ("is_compaction_request", "is-compaction", "⇣ summarisation",
     "Asks for a summary of the conversation so far: the request of a compaction"),
    ("is_compaction_continuation", "is-summary", "⇡ from summary",
     "Starts over from the summary of a compaction"),
)
SPAWN_MARK = ("is-spawn", "◆ sub-agent start", "The first request of a sub-agent")


# ------------------------------------------------------------------------------ the list


@bp.get("/conversations")
def conversations() -> Response:
    now = _now()
    values = {name: request.args.get(name, "") for name in FILTERS}
    page = _page_number(request.args.get("page"))
    rows: list[dict[str, Any]] = []
    total, error = 0, None
    try:
        filters = params.conversation_filter(
            {name: [value] for name, value in values.items() if value}, now)
    except InvalidRequest as err:
        error = err.message
    else:
        with queries.read_session():
            rows, total = conversation_queries.list_conversations(
                filters, PAGE_SIZE, (page - 1) * PAGE_SIZE)
    fragment = _fragment()
    context = dict(
        rows=[_list_row(row, now) for row in rows], total=total, page=page,
        pages=max(1, -(-total // PAGE_SIZE)), first=(page - 1) * PAGE_SIZE + 1,
        values=values, filtered=any(values.values()), error=error,
        since_choices=_since_choices(values["since"]),
        page_url=lambda number: _list_url(values, number))
    template = "_list.html" if fragment else "list.html"
    response = make_response(render_template(f"dashboard/conversations/{template}", **context))
    if error and not fragment:  # htmx leaves a 4xx unswapped: the fragment shows the error
        response.status_code = 400
    response.vary.add("HX-Request")
    return response


def _list_row(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    return {**row, "total_tokens": total_tokens(row),
            "cost_usd": (row["cost_microusd"] or 0) / 1_000_000,
            "last_ago": ago(row["last_request_at"], now)}


def _list_url(values: dict[str, str], page: int) -> str:
    args = {name: value for name, value in values.items() if value}
    if page > 1:
        args["page"] = page
    return url_for("dashboard.conversations", **args)


def _since_choices(current: str) -> tuple[tuple[str, str], ...]:
    """The preset ranges, and the current one when it is another (a date from a link)."""
    if current and current not in {value for value, _ in SINCE_CHOICES}:
        return (*SINCE_CHOICES, (current, f"Since {current}"))
    return SINCE_CHOICES


def _page_number(raw: str | None) -> int:
    """`?page=` as 1, 2, …; anything else is the first page."""
    if raw and raw.isascii() and raw.isdigit():
        return max(1, min(int(raw), params.MAX_OFFSET // PAGE_SIZE))
    return 1


# ------------------------------------------------------------------------------ one conversation


@bp.get("/conversations/<raw_id>")
def conversation(raw_id: str) -> Response:
    conversation_id = params.conversation_id(raw_id)
    if conversation_id is None:
        return _missing(f"No conversation with id {raw_id[:100]!r}.")
    branch = request.args.get("branch") or None
    with queries.read_session():
        found = conversation_queries.get_conversation(conversation_id, MAX_REQUESTS)
    if found is None:
        return _missing(f"No conversation with id {raw_id[:100]!r}.")
    if branch is not None and branch not in {b.branch_id for b in found.branches}:
        return _missing(f"This conversation has no branch {branch[:100]!r}.")
    clock = clock_format(found)
    kinds = {b.branch_id: b.kind for b in found.branches}
    steps = [step(row, clock, kinds) for row in found.requests]
    timeline = dict(
        conversation=found.conversation, branches=found.branches, branch=branch,
        requests=[r for r in steps if branch is None or r["branch_id"] == branch],
        truncated=found.requests_truncated, max_requests=MAX_REQUESTS)
    if _fragment():
        response = make_response(render_template("dashboard/conversations/_timeline.html",
                                                 **timeline))
    else:
        row = found.conversation
        response = make_response(render_template(
            "dashboard/conversations/detail.html", **timeline, kind_labels=KIND_LABELS,
            clock=clock, tree=layout(found.branches, steps),
            total_tokens=total_tokens(row), cost_usd=(row["cost_microusd"] or 0) / 1_000_000,
            last_ago=ago(row["last_request_at"], _now())))
    response.vary.add("HX-Request")
    return response


@dataclass
class Node:
    """A request drawn in the tree: its grid row (0 = the top) and column, and the branches
    that fork from it."""

    request: dict[str, Any]
    row: int
    column: int
    forks: list[Column] = field(default_factory=list)


@dataclass
class Column:
    """A branch drawn as a column. Its head sits on `head_row`, level with the request it
    forks from (`parent`, drawn in `parent_column`), or on top when it forks from none shown;
    its requests follow below."""

    branch: BranchSummary
    index: int
    head_row: int = 0
    parent: Node | None = None
    nodes: list[Node] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.branch.kind

    @property
    def end_row(self) -> int:
        return self.nodes[-1].row if self.nodes else self.head_row

    @property
    def linked(self) -> bool:
        """True when a connector is drawn from the parent (always on a column to the left)."""
        return self.parent is not None and self.parent.column < self.index


@dataclass
class Tree:
    columns: list[Column]
    rows: int


def layout(branches: list[BranchSummary], requests: list[dict[str, Any]]) -> Tree:
    """The tree of a conversation: a column per branch (`main`, then by creation). Requests
    (in received order) go down their column; each one sits below the previous one of its
    column and below its parent, so a branch starts one row under the request it forks from,
    and requests at one depth of the conversation line up across columns."""
    columns = [Column(branch, index) for index, branch in enumerate(branches)]
    by_branch = {column.branch.branch_id: column for column in columns}
    placed: dict[str, Node] = {}
    rows = 0
    for item in requests:
        column = by_branch.get(item["branch_id"])
        if column is None:  # not summarised (cannot happen: both read the same rows)
            continue
        parent = placed.get(item["parent_request_id"] or "")
        if not column.nodes:
            # The branch's first request: its head goes level with its fork point.
            forks_from = placed.get(column.branch.parent_request_id or "")
            if forks_from is not None and forks_from.column != column.index:
                column.parent = forks_from
                column.head_row = forks_from.row
                forks_from.forks.append(column)
            row = column.head_row + 1
        else:
            row = column.nodes[-1].row + 1
        if parent is not None:
            row = max(row, parent.row + 1)
        node = Node(item, row, column.index)
        column.nodes.append(node)
        placed[item["id"]] = node
        rows = max(rows, row + 1)
    return Tree(columns, rows)


def step(row: dict[str, Any], clock: str, kinds: dict[str | None, str]) -> dict[str, Any]:
    """A request as the tree and the timeline show it: its row, with its time, short model
    name, status class, branch kind and marks made ready once (the page draws a thousand)."""
    marks = [mark for flag, *mark in MARKS if row[flag]]
    if row["is_subtask"] and row["parent_task_request_id"] \
            and row["parent_task_request_id"] == row["parent_request_id"]:
        marks.append(SPAWN_MARK)
    status = row["status"] or ""
    model = row["model"] or "—"
    return {**row, "at": row["received_at"].strftime(clock),
            "iso": row["received_at"].strftime("%Y-%m-%dT%H:%M:%SZ"),
            "model_short": model.removeprefix("claude-"), "marks": marks,
            "status_class": f"s{status[:1]}", "failed": not status.startswith("2"),
            "kind": kinds.get(row["branch_id"], BRANCH)}


def clock_format(found: ConversationDetail) -> str:
    """How request times read on the page: the time of day, with the date when the
    conversation spans several days."""
    row = found.conversation
    if row["created_at"].date() == row["last_request_at"].date():
        return "%H:%M:%S"
    return "%b %d %H:%M:%S"


def _missing(message: str) -> Response:
    response = make_response(render_template("dashboard/conversations/missing.html",
                                             message=message), 404)
    response.vary.add("HX-Request")
    return response


# ------------------------------------------------------------------------------ helpers


def ago(moment: datetime | None, now: datetime) -> str:
    """`moment` relative to `now`: "just now", "5 min ago", "3 h ago", "2 d ago", or its date
    when older than a month."""
    if moment is None:
        return "—"
    seconds = (now - moment).total_seconds()
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    if seconds < 30 * 86400:
        return f"{int(seconds // 86400)} d ago"
    return moment.strftime("%Y-%m-%d")


def _fragment() -> bool:
    """An htmx swap asks for the fragment alone; a history restore or a boosted link for the
    whole page."""
    return bool(htmx) and not htmx.history_restore_request and not htmx.boosted


def _now() -> datetime:
    return current_app.extensions["nexus.clock"]()
