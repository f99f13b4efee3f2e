"""`GET /api/conversations` and `GET /api/conversations/<id>` on SQLite and PostgreSQL through a
real socket: ordering, every filter, paging with the total, one conversation's requests and
branch summary (main, a user branch, two parallel sub-agents, a branch inside a sub-agent, a
compaction, a retry), the request cap, 404s, 400s, the access rule and index use.

Conversations and their requests are inserted as the writer would have left them (the
`conversations` figures included), so these tests read the API, not the linker.
"""

from __future__ import annotations

import http.client
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from app.storage import close as close_storage
from app.storage import conversation_queries, upgrade_on_start
from app.storage.conversation_queries import (
    ConversationFilter,
    branch_ends_query,
    page_query,
    requests_query,
)
from app.storage.database import is_postgres
from app.storage.models import Conversation, bind
from tests.factories import insert_requests, request_row
from tests.integration.api_support import (
    ISO,
    Server,
    assert_error,
    make_app,
    non_loopback_address,
)

NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC)
T0 = NOW - timedelta(minutes=40)
TEAM, OTHER, LOCAL = "team.example.com", "other.example.com", "localhost:3000"
TITLE_A = "Plan the Migration of the billing service"


@dataclass
class Data:
    conversations: dict[str, dict]   # by name: the inserted `conversations` rows
    requests: dict[str, dict]        # by name: the inserted `requests` rows of conversation A

    def conv_id(self, name: str) -> str:
        return self.conversations[name]["id"]

    def req_id(self, name: str) -> str:
        return self.requests[name]["id"]

    def ids(self, *names: str) -> list[str]:
        return [self.conv_id(name) for name in names]


# Conversation A, request by request: (name, minutes after T0, branch, parent, message count,
# extra columns). Its main line spawns two parallel sub-agents from a3, is retried once (a4r),
# forks a user branch from a2, is compacted (cr → compact_1), and sub-agent 1 is itself forked.
A_STEPS = [
    ("a1", 0, "main", None, 1, {}),
    ("a2", 1, "main", "a1", 3, {"cache_creation_input_tokens": 1000}),
    ("a3", 2, "main", "a2", 5, {"cache_read_input_tokens": 1000}),
    ("s1a", 3, "subtask_1", "a3", 1, {"is_subtask": True, "parent_task_request_id": "a3",
                                      "agent_id": "agent-1"}),
    ("s2a", 3.02, "subtask_2", "a3", 1, {"is_subtask": True, "parent_task_request_id": "a3",
                                         "agent_id": "agent-2", "model": "claude-haiku-4-5"}),
    ("s1b", 4, "subtask_1", "s1a", 3, {"is_subtask": True, "parent_task_request_id": "a3",
                                       "agent_id": "agent-1"}),
    ("a4", 5, "main", "a3", 7, {"status": "529", "outcome": "failed", "cost_usd": None,
                                "input_tokens": None, "output_tokens": None}),
    ("a4r", 5.2, "main", "a3", 7, {"is_retry": True}),
    ("b1", 6, "branch_1", "a2", 3, {}),
    ("b2", 7, "branch_1", "b1", 5, {}),
    ("cr", 8, "main", "a4r", 9, {"is_compaction_request": True}),
    ("c1", 9, "compact_1", "cr", 1, {"is_compaction_continuation": True}),
    ("c2", 10, "compact_1", "c1", 3, {}),
    ("sb1", 11, "branch_2", "s1a", 3, {"is_subtask": True, "parent_task_request_id": "a3",
                                       "agent_id": "agent-1"}),
]


def conversation_row(**overrides) -> dict:
    row = dict(id=str(uuid.uuid4()), domain=TEAM, account_id="acc_team_1", session_id=None,
               first_request_id=str(uuid.uuid4()), created_at=NOW - timedelta(days=1),
               last_request_at=NOW - timedelta(days=1), title=None, request_count=1,
               message_count=1, branch_count=0, subtask_count=0, compact_count=0,
               input_tokens=12, output_tokens=34, cache_creation_input_tokens=0,
               cache_read_input_tokens=0, cost_microusd=546)
    row.update(overrides)
    return row


def build() -> Data:
    conv_a = str(uuid.uuid4())
    requests: dict[str, dict] = {}
    for name, minutes, branch, parent, messages, extra in A_STEPS:
        extra = {key: requests[value]["id"] if key == "parent_task_request_id" else value
                 for key, value in extra.items()}
        requests[name] = request_row(
            received_at=T0 + timedelta(minutes=minutes), conversation_id=conv_a,
            branch_id=branch, parent_request_id=requests[parent]["id"] if parent else None,
            message_count=messages, session_id="sess-a", **extra)
    rows = list(requests.values())
    figures = {name: sum(row[name] or 0 for row in rows)
               for name in ("input_tokens", "output_tokens", "cache_creation_input_tokens",
                            "cache_read_input_tokens")}
    cost = sum(int(row["cost_usd"] * 1_000_000) for row in rows if row["cost_usd"] is not None)
    conversations = {
        "a": conversation_row(
            id=conv_a, session_id="sess-a", first_request_id=requests["a1"]["id"],
            created_at=requests["a1"]["received_at"],
            last_request_at=requests["sb1"]["received_at"], title=TITLE_A,
            request_count=len(rows), message_count=9, branch_count=2, subtask_count=2,
            compact_count=1, cost_microusd=cost, **figures),
        "b": conversation_row(domain=OTHER, account_id="acc_other",
                              last_request_at=NOW - timedelta(hours=2),
                              title="Fix the O'Reilly 100% bug", cost_microusd=1_234_567),
        "tie_a": conversation_row(id="conv-tie-a", account_id="acc_team_2",
                                  last_request_at=NOW - timedelta(hours=5), title="tie a"),
        "tie_b": conversation_row(id="conv-tie-b", account_id="acc_team_2",
                                  last_request_at=NOW - timedelta(hours=5), title="tie b"),
        "c": conversation_row(account_id="acc_team_2", last_request_at=NOW - timedelta(days=3),
                              title="Refactor snake_case names"),
        "d": conversation_row(id="Legacy_ID-7", domain=LOCAL, account_id=None,
                              created_at=NOW - timedelta(days=11),
                              last_request_at=NOW - timedelta(days=10)),
    }
    Conversation.insert_many(list(conversations.values())).execute()
    # Requests that must not show in A: another conversation's, and a side request.
    others = [request_row(received_at=T0 + timedelta(minutes=2), branch_id="main",
                          conversation_id=conversations["b"]["id"], domain=OTHER),
              request_row(received_at=T0 + timedelta(minutes=3), request_type="quota",
                          session_id="sess-a")]
    insert_requests(*rows, *others)
    return Data(conversations, requests)


@pytest.fixture(scope="module")
def served(api_database_url, tmp_path_factory):
    """An app whose clock stands at NOW, over a database holding the conversations."""
    app = make_app(api_database_url, tmp_path_factory.mktemp("conversations"))
    app.extensions["nexus.clock"] = lambda: NOW
    upgrade_on_start(app)
    with app.extensions["nexus.db"].connection_context():
        data = build()
    server = Server(app)
    yield server, data
    server.stop()
    close_storage(app)


@pytest.fixture
def api(served):
    # Other apps (other tests, other modules) rebind the models: point them back at ours.
    bind(served[0].app.extensions["nexus.db"])
    return served[0]


@pytest.fixture
def data(served):
    return served[1]


def listed(server, **params) -> dict:
    response = server.get("/api/conversations", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    return response.json()


def listed_ids(server, **params) -> list[str]:
    return [item["id"] for item in listed(server, **params)["conversations"]]


def detail(server, conversation_id: str) -> dict:
    response = server.get(f"/api/conversations/{conversation_id}")
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    return response.json()


def iso(moment: datetime) -> str:
    return moment.strftime(ISO)


def expected_item(row: dict) -> dict:
    tokens = ("input_tokens", "output_tokens", "cache_creation_input_tokens",
              "cache_read_input_tokens")
    item = {name: row[name] for name in (
        "id", "domain", "account_id", "session_id", "title", "first_request_id",
        "request_count", "message_count", "branch_count", "subtask_count", "compact_count",
        *tokens)}
    return {**item, "created_at": iso(row["created_at"]),
            "last_request_at": iso(row["last_request_at"]),
            "total_tokens": sum(row[name] for name in tokens),
            "cost_usd": round(row["cost_microusd"] / 1_000_000, 6)}


ALL = ("a", "b", "tie_b", "tie_a", "c", "d")


# -- the list ------------------------------------------------------------------------------------

def test_list_is_latest_activity_first_with_ties_broken_by_id(api, data):
    body = listed(api)
    assert [item["id"] for item in body["conversations"]] == data.ids(*ALL)
    assert body["total"] == len(ALL) and body["limit"] == 50 and body["offset"] == 0


def test_list_items_carry_the_conversation_figures(api, data):
    items = {item["id"]: item for item in listed(api)["conversations"]}
    for name, row in data.conversations.items():
        assert items[row["id"]] == expected_item(row), name
    a = items[data.conv_id("a")]
    assert a["request_count"] == 14 and a["total_tokens"] == 12 * 13 + 34 * 13 + 2000
    assert a["cost_usd"] == round(13 * 546 / 1_000_000, 6)
    assert items[data.conv_id("b")]["cost_usd"] == 1.234567
    assert items["Legacy_ID-7"]["account_id"] is None and items["Legacy_ID-7"]["title"] is None


@pytest.mark.parametrize("params, names", [
    ({"domain": TEAM}, ("a", "tie_b", "tie_a", "c")),
    ({"domain": "TEAM.Example.com"}, ("a", "tie_b", "tie_a", "c")),
    ({"domain": LOCAL}, ("d",)),
    ({"domain": "nobody.example.com"}, ()),
    ({"account": "acc_team_2"}, ("tie_b", "tie_a", "c")),
    ({"account": "acc_other"}, ("b",)),
    ({"account": "acc_team_2", "domain": OTHER}, ()),
    ({"since": "1h"}, ("a",)),
    ({"since": "24h"}, ("a", "b", "tie_b", "tie_a")),
    ({"since": "7d"}, ("a", "b", "tie_b", "tie_a", "c")),
    ({"until": "7d"}, ("d",)),
    ({"since": "7d", "until": "24h"}, ("c",)),
    ({"since": (NOW - timedelta(days=3)).isoformat()}, ("a", "b", "tie_b", "tie_a", "c")),
    ({"until": (NOW - timedelta(days=3)).isoformat()}, ("d",)),   # until is exclusive
    ({"since": "2025-06-05", "until": "2025-06-06"}, ("d",)),
    ({"q": "migration"}, ("a",)),                  # case-insensitive
    ({"q": "THE"}, ("a", "b")),
    ({"q": "o'reilly 100%"}, ("b",)),
    ({"q": "%"}, ("b",)),                          # % is a character, not a wildcard
    ({"q": "_"}, ("c",)),                          # _ too
    ({"q": "tie "}, ("tie_b", "tie_a")),           # spaces are searched for
    ({"q": "' OR '1'='1"}, ()),
    ({"q": "migration", "domain": OTHER}, ()),
    ({"domain": "", "account": "", "since": "", "until": "", "q": ""}, ALL),  # no filter
])
def test_each_filter(api, data, params, names):
    body = listed(api, **params)
    assert [item["id"] for item in body["conversations"]] == data.ids(*names)
    assert body["total"] == len(names)


def test_hostile_filters_change_nothing(api, data):
    for value in ("'; DROP TABLE conversations; --", "x' OR '1'='1", "%", "_", "\\"):
        for name in ("domain", "account"):
            assert listed(api, **{name: value})["total"] == 0
    assert listed(api)["total"] == len(ALL)


def test_pagination_walks_every_conversation_once_with_the_total(api, data):
    seen = []
    for offset in range(0, len(ALL) + 4, 4):
        body = listed(api, limit=4, offset=offset)
        assert (body["total"], body["limit"], body["offset"]) == (len(ALL), 4, offset)
        seen += [item["id"] for item in body["conversations"]]
    assert seen == data.ids(*ALL)
    team = listed(api, domain=TEAM, limit=2, offset=1)
    assert [item["id"] for item in team["conversations"]] == data.ids("tie_b", "tie_a")
    assert team["total"] == 4
    assert listed(api, limit=0) == {"conversations": [], "total": len(ALL), "limit": 0,
                                    "offset": 0}
    assert listed(api, limit=100000)["limit"] == 500
    beyond = listed(api, offset=1000)
    assert beyond["conversations"] == [] and beyond["total"] == len(ALL)


@pytest.mark.parametrize("params, name", [
    ({"acount": "acc_1"}, "acount"),
    ({"model": "claude-sonnet-4-5"}, "model"),     # a filter of /api/requests, not of this list
    ({"domain": [TEAM, OTHER]}, "domain"),
    ({"limit": "abc"}, "limit"),
    ({"offset": "-1"}, "offset"),
    ({"since": "yesterday"}, "since"),
    ({"until": "2025-13-01"}, "until"),
    ({"since": "2025-06-02", "until": "2025-06-01"}, "since"),
    ({"q": "a\x00b"}, "q"),
    ({"q": "x" * 1001}, "q"),
])
def test_bad_parameters_are_400_naming_the_parameter(api, params, name):
    response = api.get("/api/conversations", params=params)
    assert_error(response, 400, "invalid_request_error", f"'{name}'")


# -- one conversation ----------------------------------------------------------------------------

def test_detail_is_the_list_item_with_requests_and_branches(api, data):
    body = detail(api, data.conv_id("a"))
    assert set(body) == set(expected_item(data.conversations["a"])) | {
        "requests", "requests_truncated", "branches"}
    assert {k: v for k, v in body.items() if k not in ("requests", "requests_truncated",
                                                       "branches")} == \
        expected_item(data.conversations["a"])
    assert body["requests_truncated"] is False


def test_detail_requests_are_the_conversations_own_in_received_order(api, data):
    body = detail(api, data.conv_id("a"))
    assert [item["id"] for item in body["requests"]] == [data.req_id(step[0]) for step in A_STEPS]
    rows = data.requests
    by_id = {item["id"]: item for item in body["requests"]}
    assert by_id[data.req_id("s2a")] == {
        "id": data.req_id("s2a"), "parent_request_id": data.req_id("a3"),
        "branch_id": "subtask_2", "is_subtask": True, "parent_task_request_id": data.req_id("a3"),
        "is_retry": False, "is_compaction_request": False, "is_compaction_continuation": False,
        "message_count": 1, "created_at": iso(rows["s2a"]["received_at"]),
        "received_at": iso(rows["s2a"]["received_at"]), "model": "claude-haiku-4-5",
        "status": 200, "session_id": "sess-a", "agent_id": "agent-2", "input_tokens": 12,
        "output_tokens": 34, "cost_usd": 0.000546}
    failed = by_id[data.req_id("a4")]
    assert (failed["status"], failed["cost_usd"], failed["input_tokens"]) == (529, None, None)
    retry = by_id[data.req_id("a4r")]
    assert retry["is_retry"] is True and retry["branch_id"] == "main"
    assert retry["parent_request_id"] == failed["parent_request_id"] == data.req_id("a3")
    assert by_id[data.req_id("cr")]["is_compaction_request"] is True
    assert by_id[data.req_id("cr")]["branch_id"] == "main"
    assert by_id[data.req_id("c1")]["is_compaction_continuation"] is True
    assert by_id[data.req_id("a1")]["parent_request_id"] is None


def test_branches_summarise_kinds_sizes_and_fork_points(api, data):
    r = data.requests

    def branch(branch_id, kind, names, parent, is_subtask=False):
        return {"branch_id": branch_id, "kind": kind, "request_count": len(names),
                "first_request_id": r[names[0]]["id"], "last_request_id": r[names[-1]]["id"],
                "parent_request_id": r[parent]["id"] if parent else None,
                "created_at": iso(r[names[0]]["received_at"]),
                "last_request_at": iso(r[names[-1]]["received_at"]), "is_subtask": is_subtask}

    assert detail(api, data.conv_id("a"))["branches"] == [
        branch("main", "main", ["a1", "a2", "a3", "a4", "a4r", "cr"], None),
        branch("subtask_1", "subtask", ["s1a", "s1b"], "a3", is_subtask=True),
        branch("subtask_2", "subtask", ["s2a"], "a3", is_subtask=True),
        branch("branch_1", "branch", ["b1", "b2"], "a2"),
        branch("compact_1", "compact", ["c1", "c2"], "cr"),
        # A user branch inside a sub-agent: a user branch, made of sub-agent requests.
        branch("branch_2", "branch", ["sb1"], "s1a", is_subtask=True),
    ]


def test_a_conversation_without_stored_requests(api, data):
    body = detail(api, "Legacy_ID-7")
    assert body["id"] == "Legacy_ID-7" and body["domain"] == LOCAL
    assert (body["requests"], body["requests_truncated"], body["branches"]) == ([], False, [])
    b = detail(api, data.conv_id("b"))
    assert len(b["requests"]) == 1 and [x["branch_id"] for x in b["branches"]] == ["main"]


def test_requests_beyond_the_cap_are_cut_but_branches_stay_whole(api, data, monkeypatch):
    whole = detail(api, data.conv_id("a"))
    monkeypatch.setattr(conversation_queries, "MAX_REQUESTS", 3)
    body = detail(api, data.conv_id("a"))
    assert [item["id"] for item in body["requests"]] == [data.req_id(n) for n in ("a1", "a2",
                                                                                  "a3")]
    assert body["requests_truncated"] is True
    assert body["branches"] == whole["branches"]
    assert body["request_count"] == 14
    monkeypatch.setattr(conversation_queries, "MAX_REQUESTS", len(A_STEPS))
    assert detail(api, data.conv_id("a"))["requests_truncated"] is False


def test_detail_accepts_an_upper_case_uuid(api, data):
    assert detail(api, data.conv_id("a").upper())["id"] == data.conv_id("a")


@pytest.mark.parametrize("raw", [
    str(uuid.uuid4()),                            # well-formed, unknown
    "conv-tie-c",
    "legacy_id-7",                                # ids other than uuids keep their case
    "x" * 65,
    "../x",
    "..",
    "..%2Fx",
    "%2e%2e%2fx",
    "conv-tie-a'--",
    "%27%20OR%20%271%27%3D%271",                  # ' OR '1'='1
    "a.b",
    "a%00b",
    "%C3%A9t%C3%A9",                              # not ASCII
])
def test_unknown_or_malformed_ids_are_404(api, raw):
    connection = http.client.HTTPConnection("127.0.0.1", api.port, timeout=10)
    try:  # http.client sends the path as given: no client-side normalisation
        connection.request("GET", f"/api/conversations/{raw}")
        response = connection.getresponse()
        status, body = response.status, json.loads(response.read())
    finally:
        connection.close()
    assert status == 404, (raw, body)
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"


def test_the_detail_takes_no_parameters(api, data):
    response = api.get(f"/api/conversations/{data.conv_id('a')}", params={"limit": "10"})
    assert_error(response, 400, "invalid_request_error", "'limit'")


# -- access and plans ----------------------------------------------------------------------------

def test_strangers_get_401_without_a_key(api, data):
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to call from")
    for path in ("/api/conversations", f"/api/conversations/{data.conv_id('a')}",
                 "/api/conversations/../x"):
        response = api.get(path, host=address)
        assert_error(response, 401, "authentication_error", "DASHBOARD_API_KEY")


@pytest.mark.parametrize("filters, index", [
    (ConversationFilter(), "conversations_last_request_at"),
    (ConversationFilter(domain=TEAM), "conversations_domain_last_request_at"),
    (ConversationFilter(account="acc_team_2"), "conversations_account_last_request_at"),
    (ConversationFilter(since=NOW - timedelta(days=1)), "conversations_last_request_at"),
])
def test_the_list_uses_the_indexes(api, filters, index):
    assert index in plan(api, page_query(filters).limit(50))


@pytest.mark.parametrize("build_query", [
    lambda conversation_id: requests_query(conversation_id).limit(5001),
    branch_ends_query,
])
def test_the_requests_of_a_conversation_use_their_index(api, data, build_query):
    text = plan(api, build_query(data.conv_id("a")))
    db = api.app.extensions["nexus.db"]
    # On a partition PostgreSQL names its copy of an index after the columns.
    expected = "_conversation_id_received_at_idx" if is_postgres(db) else \
        "requests_conversation_received_at"
    assert expected in text


def plan(api, query) -> str:
    db = api.app.extensions["nexus.db"]
    sql, params = query.sql()
    with db.connection_context(), db.atomic():
        if is_postgres(db):
            # The dataset is tiny: forbid sequential scans to see which index it can use.
            db.execute_sql("SET LOCAL enable_seqscan = off")
            rows = db.execute_sql("EXPLAIN " + sql, params).fetchall()
        else:
            rows = db.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall()
    return " ".join(str(part) for line in rows for part in line)


def test_cost_is_rounded_to_the_micro_dollar():
    # The rows keep whole micro-dollars; the API shows dollars with six places.
    from app.api import serialise
    row = dict(conversation_row(cost_microusd=1), title="t")
    assert serialise.conversation(row)["cost_usd"] == 0.000001
    assert Decimal(str(serialise.conversation(dict(row, cost_microusd=12_345_678))["cost_usd"])) \
        == Decimal("12.345678")
