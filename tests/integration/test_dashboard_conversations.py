"""The dashboard's Conversations pages on SQLite and PostgreSQL, through the Flask test client
(a loopback client: no login is configured).

The detail is read from a session written the way the batch writer writes it, linking
included: a main line whose first answer spawns a sub-agent (`Agent` tool_use), a failed
request and its retry, a user branch going back to an earlier turn with another prompt, and a
compaction (the summarisation request, then a session started from its summary). The list's
filters and pages read `conversations` rows inserted as the writer keeps them.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import unescape

import pytest

from app.dashboard import conversations
from app.storage import close as close_storage
from app.storage import conversation_queries, upgrade_on_start
from app.storage.conversation_queries import BranchSummary
from app.storage.models import Conversation, Request, bind
from tests.factories import record_requests, request_row
from tests.integration.api_support import make_app
from tests.integration.conversation_client import SUMMARY_INSTRUCTIONS, continuation_text

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(minutes=30)
DOMAIN = "team.example.com"
SESSION = "sess-dashboard"
HOSTILE_TITLE = "Refactor <script>alert('x')</script> the parser & lexer"
AGENT_PROMPT = "Explore the parser module and list its public functions."
SUMMARY = "1. Primary Request and Intent: refactor the parser.\n2. Pending Tasks: the docs."
TOOLS = [{"name": "Agent", "input_schema": {"type": "object"}}]
HX = {"HX-Request": "true"}
TREE_ITEMS = ('<div class="conv-node ', '<div class="conv-head ', '<div class="conv-rail ',
              '<div class="conv-link ')


# ---------------------------------------------------------------------- a recorded session


def user(text) -> dict:
    return {"role": "user", "content": text}


def said(*blocks) -> dict:
    return {"role": "assistant", "content": list(blocks)}


def text(value: str) -> dict:
    return {"type": "text", "text": value}


def exchange(history: list[dict], answer: dict | None, seconds: float, **columns) -> dict:
    """A `/v1/messages` exchange sending `history`, answered by `answer`."""
    body = {"model": columns.pop("model", "claude-sonnet-4-5"), "max_tokens": 1024,
            "tools": TOOLS, "messages": history}
    reply = None if answer is None else json.dumps(
        {"id": "msg_" + uuid.uuid4().hex[:20], "type": "message", "model": body["model"],
         "stop_reason": "end_turn", "usage": {"input_tokens": 10, "output_tokens": 20},
         **answer})
    return request_row(received_at=T0 + timedelta(seconds=seconds), domain=DOMAIN,
                       session_id=SESSION, model=body["model"], request_body=json.dumps(body),
                       response_body=reply, message_count=len(history), **columns)


def session_rows() -> dict[str, dict]:
    """The session, request by request (in the order sent)."""
    u1 = user(HOSTILE_TITLE)
    a1 = said(text("Let me look around first."),
              {"type": "tool_use", "id": "toolu_agent_1", "name": "Agent",
               "input": {"description": "Explore", "prompt": AGENT_PROMPT,
                         "subagent_type": "Explore"}})
    result = user([{"type": "tool_result", "tool_use_id": "toolu_agent_1",
                    "content": "parse(), tokenize()\nagentId: agent-explore-1"}])
    s1a = said(text("The parser exports parse() and tokenize()."))
    a2 = said(text("Refactored the parser."))
    a3 = said(text("The tests pass."))
    summary = said(text(f"<analysis>The user refactored.</analysis>\n<summary>\n{SUMMARY}\n"
                        "</summary>"))
    c1a = said(text("Picking up: the docs remain."))
    agent = {"agent_id": "agent-explore-1"}
    base = [u1, a1, result]
    return {
        "m1": exchange([u1], a1, 0),
        "s1": exchange([user(AGENT_PROMPT)], s1a, 5, model="claude-haiku-4-5", **agent),
        "s2": exchange([user(AGENT_PROMPT), s1a, user("Also list the private helpers.")],
                       said(text("_advance() and _peek().")), 9, model="claude-haiku-4-5",
                       **agent),
        "m2": exchange(base, None, 15, status="529", outcome="failed", error_type="overloaded",
                       cost_usd=None, input_tokens=None, output_tokens=None),
        "m2r": exchange(base, a2, 18),
        "m3": exchange([*base, a2, user("Now run the tests.")], a3, 25),
        "b1": exchange([*base, a2, user("Rename the module to lexer instead.")],
                       said(text("Renamed.")), 30),
        "cr": exchange([*base, a2, user([text("Now run the tests."),
                                         text(SUMMARY_INSTRUCTIONS)])], summary, 40),
        "c1": exchange([user(continuation_text(SUMMARY))], c1a, 45),
        "c2": exchange([user(continuation_text(SUMMARY)), c1a, user("Update the docs.")],
                       said(text("Docs updated.")), 50),
    }


# ---------------------------------------------------------------------- conversations rows


def conversation_row(**overrides) -> dict:
    row = dict(id=str(uuid.uuid4()), domain="list.example.com", account_id="acc_list",
               session_id=None, first_request_id=str(uuid.uuid4()),
               created_at=NOW - timedelta(days=1), last_request_at=NOW - timedelta(days=1),
               title="A listed conversation", request_count=3, message_count=5,
               branch_count=0, subtask_count=0, compact_count=0, input_tokens=100,
               output_tokens=200, cache_creation_input_tokens=0, cache_read_input_tokens=0,
               cost_microusd=12_345)
    row.update(overrides)
    return row


def listed_rows() -> dict[str, dict]:
    """Conversations of another domain for the list's filters and pages."""
    rows = {f"page{n:02d}": conversation_row(
        last_request_at=NOW - timedelta(days=2, minutes=n), title=f"Paged conversation {n:02d}")
        for n in range(55)}
    rows["recent"] = conversation_row(
        account_id="acc_other", last_request_at=NOW - timedelta(minutes=20),
        title="Rotate the signing keys", request_count=42, message_count=88, branch_count=3,
        subtask_count=5, compact_count=2, input_tokens=1_234_567, output_tokens=89_000,
        cache_read_input_tokens=500_000, cost_microusd=7_654_321)
    return rows


# ---------------------------------------------------------------------- fixtures


@dataclass
class Data:
    session: dict[str, dict]      # by name: the stored requests rows (linked by the writer)
    conversation_id: str
    listed: dict[str, dict]       # by name: the inserted conversations rows

    def req(self, name: str) -> dict:
        return self.session[name]


@pytest.fixture(scope="module")
def served(api_database_url, tmp_path_factory):
    """An app whose clock stands at NOW over a database (each engine) holding the data."""
    app = make_app(api_database_url, tmp_path_factory.mktemp("app"))
    app.extensions["nexus.clock"] = lambda: NOW
    upgrade_on_start(app)
    rows = session_rows()
    for row in rows.values():  # one batch each, in the order sent (the sink connects itself)
        record_requests(row)
    with app.extensions["nexus.db"].connection_context():
        stored = {name: Request.select().where(Request.id == row["id"]).dicts().get()
                  for name, row in rows.items()}
        listed = listed_rows()
        Conversation.insert_many(list(listed.values())).execute()
    yield app, Data(stored, stored["m1"]["conversation_id"], listed)
    close_storage(app)


@pytest.fixture
def client(served):
    bind(served[0].extensions["nexus.db"])  # other modules' apps rebind the models
    return served[0].test_client()


@pytest.fixture
def data(served) -> Data:
    return served[1]


def page(client, path: str, status: int = 200, **kwargs) -> str:
    response = client.get(path, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)[:2000]
    assert response.content_type.startswith("text/html")
    return response.get_data(as_text=True)


def element(html: str, element_id: str) -> str:
    """The element with `element_id` in the tree: its opening tag and what follows, up to the
    next tree item (enough for the assertions about one node or one branch head)."""
    start = html.rindex("<", 0, html.index(f'id="{element_id}"'))
    after = html.index(">", start)
    ends = [html.find(marker, after) for marker in TREE_ITEMS + ("</section>",)]
    return html[start:min(end for end in ends if end > 0)]


def grid_place(fragment: str) -> tuple[int, int]:
    """(column, row) of a tree element from its inline grid placement."""
    found = re.search(r"grid-column: (\d+); grid-row: (\d+)", fragment)
    assert found, fragment
    return int(found.group(1)), int(found.group(2))


# ---------------------------------------------------------------------- the session as linked


def test_the_writer_linked_the_session_as_the_page_expects(data):
    s = data.session
    assert {row["conversation_id"] for row in s.values()} == {data.conversation_id}
    assert [s[name]["branch_id"] for name in s] == [
        "main", "subtask_1", "subtask_1", "main", "main", "main", "branch_1", "main",
        "compact_1", "compact_1"]
    assert s["s1"]["is_subtask"] and s["s1"]["parent_task_request_id"] == s["m1"]["id"]
    assert s["m2r"]["is_retry"]
    assert s["b1"]["parent_request_id"] in (s["m2"]["id"], s["m2r"]["id"])
    assert s["cr"]["is_compaction_request"]
    assert s["c1"]["is_compaction_continuation"] and s["c1"]["parent_request_id"] == s["cr"]["id"]


def timeline_ids(html: str) -> list[str]:
    """The request ids the timeline links to, in its order."""
    section = html[html.index('id="timeline"'):]
    return re.findall(r'href="/dashboard/requests/([0-9a-f-]{36})"', section)


def titles(html: str) -> list[str]:
    return [unescape(found) for found in re.findall(
        r'<a class="conv-title" href="[^"]+">([^<]*)</a>', html)]


# ---------------------------------------------------------------------- the list


def test_the_list_shows_each_conversation_with_its_figures(client, data):
    html = page(client, "/dashboard/conversations")
    assert "<html" in html and 'aria-current="page"' in html
    shown = titles(html)
    assert shown[:3] == ["Rotate the signing keys", HOSTILE_TITLE, "Paged conversation 00"]
    assert len(shown) == 50 and "57</strong> conversations" in html
    recent = data.listed["recent"]
    row = html[html.index("Rotate the signing keys"):]
    row = row[:row.index("</tr>")]
    cells = [re.sub(r"<[^>]+>", "", cell).strip()
             for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
    # requests, messages, branches, sub-agents, compactions, tokens, cost, last activity
    assert cells == ["42", "88", "3", "5", "2", "1,823,567", "$7.65", "20 min ago"]
    assert f'href="/dashboard/conversations/{recent["id"]}"' in html
    assert f"acc_other · <code title=\"{recent['id']}\">{recent['id'][:8]}</code>" in html
    session = html[html.index(f'href="/dashboard/conversations/{data.conversation_id}"'):]
    session = session[:session.index("</tr>")]
    assert "team.example.com · acc_team_1" in session and "29 min ago" in session
    # Page 1 refreshes live, with its filters.
    live = re.search(r'<section class="card conv-list" id="conversation-list"([^>]*)>', html)
    assert 'data-live' in live.group(1) and 'hx-trigger="live"' in live.group(1)
    assert 'hx-get="/dashboard/conversations"' in live.group(1)


def test_titles_are_escaped(client, data):
    for path in ("/dashboard/conversations", f"/dashboard/conversations/{data.conversation_id}"):
        html = page(client, path)
        assert "<script>alert(" not in html
        assert "Refactor &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; the parser &amp; " \
               "lexer" in html


@pytest.mark.parametrize("query, expected", [
    ("domain=team.example.com", [HOSTILE_TITLE]),
    ("domain=TEAM.example.com", [HOSTILE_TITLE]),                 # domains are lower-case
    ("account=acc_other", ["Rotate the signing keys"]),
    ("q=SIGNING", ["Rotate the signing keys"]),                  # case-insensitive
    ("q=%3Cscript%3E", [HOSTILE_TITLE]),
    ("q=100%25", []),                                            # % is a character
    ("since=1h", ["Rotate the signing keys", HOSTILE_TITLE]),
    ("since=1h&account=acc_team_1", [HOSTILE_TITLE]),
    ("q=conversation+0&since=7d&domain=list.example.com",
     [f"Paged conversation {n:02d}" for n in range(10)]),
])
def test_filters(client, query, expected):
    html = page(client, f"/dashboard/conversations?{query}")
    assert titles(html) == expected
    if not expected:
        assert "No conversation matches these filters." in html
        assert "ANTHROPIC_BASE_URL" not in html


def test_the_filter_form_keeps_its_values(client):
    html = page(client, "/dashboard/conversations?q=Paged&domain=list.example.com"
                        "&account=acc_list&since=2025-01-01")
    assert 'name="q" value="Paged"' in html and 'name="domain" value="list.example.com"' in html
    assert 'name="account" value="acc_list"' in html
    assert '<option value="2025-01-01" selected>Since 2025-01-01</option>' in html
    assert 'hx-push-url="true"' in html and 'hx-target="#conversation-list"' in html


def test_a_wrong_filter_says_what_is_wrong(client):
    html = page(client, "/dashboard/conversations?since=yesterday", status=400)
    assert "Invalid parameter &#39;since&#39;" in html and "conv-title" not in html
    # The fragment answers 200 (htmx leaves a 4xx unswapped) with the same message.
    fragment = page(client, "/dashboard/conversations?since=yesterday", headers=HX)
    assert "Invalid parameter &#39;since&#39;" in fragment and "data-live" not in fragment


def test_pages(client):
    first = page(client, "/dashboard/conversations?q=Paged")
    assert titles(first) == [f"Paged conversation {n:02d}" for n in range(50)]
    assert "55</strong> conversations" in first and "Page 1 of 2" in first
    assert 'href="/dashboard/conversations?q=Paged&amp;page=2"' in first
    assert 'hx-get="/dashboard/conversations?q=Paged&amp;page=2"' in first
    second = page(client, "/dashboard/conversations?q=Paged&page=2")
    assert titles(second) == [f"Paged conversation {n:02d}" for n in range(50, 55)]
    assert "Page 2 of 2" in second and "51–55" in second
    assert 'href="/dashboard/conversations?q=Paged" hx-get' in second  # back to page 1
    live = re.search(r'id="conversation-list"([^>]*)>', second).group(1)
    assert "data-live" not in live  # only page 1 refreshes live
    beyond = page(client, "/dashboard/conversations?q=Paged&page=9")
    assert "There is no page 9." in beyond and titles(beyond) == []
    for junk in ("abc", "0", "-1", "1.5"):
        assert titles(page(client, f"/dashboard/conversations?q=Paged&page={junk}")) \
            == titles(first)


def test_htmx_gets_the_list_fragment(client):
    response = client.get("/dashboard/conversations?q=Paged&page=2", headers=HX)
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "HX-Request" in response.headers["Vary"]
    assert "<html" not in html and "conv-filters" not in html
    assert html.lstrip().startswith('<section class="card conv-list" id="conversation-list"')
    assert len(titles(html)) == 5
    live = page(client, "/dashboard/conversations?domain=team.example.com", headers=HX)
    assert 'data-live hx-get="/dashboard/conversations?domain=team.example.com"' in live
    # Going back to a page htmx no longer holds asks for the whole page.
    restored = page(client, "/dashboard/conversations?q=Paged",
                    headers={**HX, "HX-History-Restore-Request": "true"})
    assert "<html" in restored and "conv-filters" in restored


def test_an_empty_database_says_how_to_start(database_url, tmp_path):
    app = make_app(database_url, tmp_path)
    upgrade_on_start(app)
    try:
        html = page(app.test_client(), "/dashboard/conversations")
        assert "No conversations recorded yet." in html
        assert "export ANTHROPIC_BASE_URL=http://localhost" in html
        assert "conv-title" not in html and "No conversation matches" not in html
        fragment = page(app.test_client(), "/dashboard/conversations?page=3", headers=HX)
        assert "<html" not in fragment and "ANTHROPIC_BASE_URL" in fragment
        filtered = page(app.test_client(), "/dashboard/conversations?q=anything")
        assert "No conversation matches these filters." in filtered
    finally:
        close_storage(app)


# ---------------------------------------------------------------------- one conversation


BRANCHES = {"main": ["m1", "m2", "m2r", "m3", "cr"], "subtask_1": ["s1", "s2"],
            "branch_1": ["b1"], "compact_1": ["c1", "c2"]}


def detail(client, data, query: str = "", **kwargs) -> str:
    return page(client, f"/dashboard/conversations/{data.conversation_id}{query}", **kwargs)


def test_the_tree_has_a_column_per_branch_with_its_requests(client, data):
    html = detail(client, data)
    heads = re.findall(r'<div class="conv-head conv-k-(\w+)" id="branch-(\w+)"', html)
    assert heads == [("main", "main"), ("subtask", "subtask_1"), ("branch", "branch_1"),
                     ("compact", "compact_1")]  # main, then in order of creation
    for number, (branch, names) in enumerate(BRANCHES.items(), start=1):
        head = element(html, f"branch-{branch}")
        assert grid_place(head)[0] == number
        n = len(names)
        assert f"{n} request{'s' if n > 1 else ''}" in head
        rows = []
        for name in names:
            node = element(html, f"r-{data.req(name)['id']}")
            column, row = grid_place(node)
            assert column == number, (branch, name)
            assert f'href="/dashboard/requests/{data.req(name)["id"]}"' in node
            rows.append(row)
        assert rows == sorted(rows) and len(set(rows)) == len(rows)  # down the column
        assert rows[0] > grid_place(head)[1]


def test_a_branch_starts_level_with_the_request_it_forks_from(client, data):
    html = detail(client, data)
    parent_id = data.req("b1")["parent_request_id"]
    parent = element(html, f"r-{parent_id}")
    head = element(html, "branch-branch_1")
    assert grid_place(head)[1] == grid_place(parent)[1]
    assert re.search(rf'from\s+<a href="#r-{parent_id}"', head)
    assert 'href="#branch-branch_1"' in parent and "forks branch_1" in parent
    first = element(html, f"r-{data.req('b1')['id']}")
    assert grid_place(first)[1] == grid_place(head)[1] + 1
    # A connector joins the fork point to the head across the columns between them.
    assert re.search(r'<div class="conv-link conv-k-branch" style="grid-column: 2 / 4; '
                     rf'grid-row: {grid_place(head)[1]}"', html)


def test_a_sub_agent_hangs_from_the_request_that_spawned_it(client, data):
    html = detail(client, data)
    spawner = element(html, f"r-{data.req('m1')['id']}")
    head = element(html, "branch-subtask_1")
    assert grid_place(head)[1] == grid_place(spawner)[1]
    assert re.search(rf'spawned by\s+<a href="#r-{data.req("m1")["id"]}"', head)
    assert "Sub-agent" in head and "agent-explore-1" in head
    assert 'href="#branch-subtask_1"' in spawner and "spawns subtask_1" in spawner
    first = element(html, f"r-{data.req('s1')['id']}")
    assert "sub-agent start" in first and "haiku-4-5" in first
    assert "sub-agent start" not in element(html, f"r-{data.req('s2')['id']}")
    assert re.search(r'<div class="conv-link conv-k-subtask" style="grid-column: 2 / 3; ', html)


def test_a_compaction_is_marked(client, data):
    html = detail(client, data)
    request = element(html, f"r-{data.req('cr')['id']}")
    assert "is-compaction" in request and "summarisation" in request
    assert 'href="#branch-compact_1"' in request and "compacts to compact_1" in request
    head = element(html, "branch-compact_1")
    assert "Compacted" in head and grid_place(head)[1] == grid_place(request)[1]
    assert re.search(rf'summarised by\s+<a href="#r-{data.req("cr")["id"]}"', head)
    assert "from summary" in element(html, f"r-{data.req('c1')['id']}")
    assert "summarisation" not in element(html, f"r-{data.req('m3')['id']}")


def test_a_retry_is_marked(client, data):
    html = detail(client, data)
    retry = element(html, f"r-{data.req('m2r')['id']}")
    failed = element(html, f"r-{data.req('m2')['id']}")
    assert "is-retry" in retry and "↻ retry" in retry
    assert "is-failed" in failed and '<span class="status s5">529</span>' in failed
    assert "is-retry" not in failed
    assert grid_place(retry)[1] > grid_place(failed)[1]  # both on main, one below the other


def test_the_detail_shows_the_conversation_figures(client, data):
    html = detail(client, data)
    figures = re.findall(r'<span class="value">([^<]+)</span>', html)
    assert figures[:4] == ["10", "4", "414", "$0.0049"]  # requests, branches, tokens, cost
    assert "1 user · 1 sub-agent · 1 compaction" in html
    assert "session <code title=\"sess-dashboard\">" in html
    assert f"/dashboard/requests?conversation_id={data.conversation_id}" in html
    upper = page(client, f"/dashboard/conversations/{data.conversation_id.upper()}")
    assert 'id="branch-compact_1"' in upper  # a uuid in any case


def test_the_timeline_lists_every_request_in_time_order(client, data):
    html = detail(client, data)
    in_order = sorted(data.session.values(), key=lambda r: (r["received_at"], r["id"]))
    assert timeline_ids(html) == [row["id"] for row in in_order]
    assert re.search(r'<a href="[^"]+#timeline" hx-get="[^"]+" hx-target="#timeline" '
                     r'hx-swap="outerHTML" hx-push-url="[^"]+" aria-current="true">All branches',
                     html)


@pytest.mark.parametrize("branch", list(BRANCHES))
def test_the_timeline_filtered_by_branch(client, data, branch):
    response = client.get(f"/dashboard/conversations/{data.conversation_id}?branch={branch}",
                          headers=HX)
    fragment = response.get_data(as_text=True)
    assert response.status_code == 200 and "HX-Request" in response.headers["Vary"]
    assert "<html" not in fragment and "conv-tree" not in fragment
    assert fragment.lstrip().startswith('<section class="card conv-timeline" id="timeline">')
    assert timeline_ids(fragment) == [data.req(name)["id"] for name in BRANCHES[branch]]
    url = f"/dashboard/conversations/{data.conversation_id}?branch={branch}"
    assert re.search(rf'hx-push-url="{re.escape(url)}" aria-current="true">', fragment)
    # The same address without htmx: the whole page, its timeline filtered, its tree whole.
    html = detail(client, data, f"?branch={branch}")
    assert "<html" in html and 'id="branch-compact_1"' in html
    assert timeline_ids(html) == timeline_ids(fragment)


def test_unknown_and_malformed_ids_are_404(client, data):
    for path in (f"/dashboard/conversations/{uuid.uuid4()}",
                 "/dashboard/conversations/not%20an%20id!",
                 "/dashboard/conversations/" + "x" * 65,
                 "/dashboard/conversations/%27%3B%20DROP%20TABLE%20requests"):
        html = page(client, path, status=404)
        assert "No conversation with id" in html and "See every conversation" in html
    html = detail(client, data, "?branch=branch_9", status=404)
    assert "no branch &#39;branch_9&#39;" in html
    hostile = detail(client, data, "?branch=%3Cscript%3Ex", status=404)
    assert "<script>x" not in hostile and "&lt;script&gt;x" in hostile


def test_a_long_conversation_is_cut_and_says_so(client, data, monkeypatch):
    monkeypatch.setattr(conversations, "MAX_REQUESTS", 3)
    html = detail(client, data)
    assert "the first 3 are shown" in html
    assert timeline_ids(html) == [data.req(name)["id"] for name in ("m1", "s1", "s2")]
    # Branches whose requests are all beyond the cut keep their head (with the full count),
    # on top, pointing to their fork point on its own page.
    head = element(html, "branch-branch_1")
    assert grid_place(head)[1] == 1 and "1 request" in head
    assert f'href="/dashboard/requests/{data.req("b1")["parent_request_id"]}"' in head
    assert "2 requests" in element(html, "branch-compact_1")


def test_layout_places_requests_below_their_parent_and_their_column():
    start = datetime(2025, 1, 1, tzinfo=UTC)

    def summary(branch, first, parent, count):
        return BranchSummary(branch, conversation_queries.branch_kind(branch), count, first,
                             first, parent, start, start, branch.startswith("subtask"))

    def req(rid, branch, parent):
        return {"id": rid, "branch_id": branch, "parent_request_id": parent}

    branches = [summary("main", "a", None, 4), summary("branch_1", "d", "a", 1),
                summary("subtask_1", "x", "gone", 1)]
    requests = [req("a", "main", None), req("b", "main", "a"), req("b2", "main", "a"),
                req("c", "main", "b2"), req("d", "branch_1", "a"), req("x", "subtask_1", "gone")]
    tree = conversations.layout(branches, requests)
    main, branch, orphan = tree.columns
    assert [(n.request["id"], n.row) for n in main.nodes] == [("a", 1), ("b", 2), ("b2", 3),
                                                            ("c", 4)]
    assert (branch.head_row, branch.parent.request["id"], branch.linked) == (1, "a", True)
    assert [(n.request["id"], n.row) for n in branch.nodes] == [("d", 2)]
    assert [fork.branch.branch_id for fork in main.nodes[0].forks] == ["branch_1"]
    assert (orphan.head_row, orphan.parent, orphan.linked) == (0, None, False)
    assert orphan.nodes[0].row == 1 and tree.rows == 5
