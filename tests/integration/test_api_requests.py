"""`GET /api/requests` on SQLite and PostgreSQL through a real socket: every filter, text
search with hostile strings, ordering, paging with the total, 400s, and index use."""

from __future__ import annotations

from datetime import timedelta, timezone

import pytest

from app.storage.database import is_postgres
from app.storage.queries import RequestFilter, page_query
from tests.integration.api_support import ISO, assert_error, listed, listed_ids


def test_list_is_newest_first_with_ties_broken_by_id(api_server, api_data):
    body = listed(api_server)
    assert [item["id"] for item in body["requests"]] == api_data.newest_first()
    assert body["total"] == len(api_data.rows) and body["limit"] == 50 and body["offset"] == 0
    ids = [item["id"] for item in body["requests"]]
    assert ids.index(api_data.rows["tie_b"]["id"]) + 1 == ids.index(api_data.rows["tie_a"]["id"])


def test_list_items_are_summaries_without_bodies(api_server, api_data):
    row = api_data.rows["stream"]
    item = next(i for i in listed(api_server)["requests"] if i["id"] == row["id"])
    assert item == {
        "id": row["id"], "received_at": row["received_at"].strftime(ISO),
        "completed_at": row["completed_at"].strftime(ISO),
        "domain": "team.example.com", "account_id": "acc_team_1", "method": "POST",
        "path": "/v1/messages", "model": "claude-sonnet-4-5", "request_type": "inference",
        "stream": True, "status": 200, "outcome": "completed", "error_type": None,
        "duration_ms": 1500.25, "first_token_ms": 950.0, "input_tokens": 12,
        "output_tokens": 34, "cache_creation_input_tokens": 0, "cache_creation_5m_tokens": 0,
        "cache_creation_1h_tokens": 0, "cache_read_input_tokens": 0, "cost_usd": 1.234567,
        "tool_call_count": 1, "conversation_id": row["conversation_id"], "branch_id": "main",
        "session_id": "sess-1"}
    hangup = next(i for i in listed(api_server, status="client_disconnected")["requests"]
                  if i["id"] == api_data.rows["hangup"]["id"])
    assert hangup["status"] == "client_disconnected" and hangup["account_id"] is None
    failed = listed(api_server, status="error")["requests"][0]
    assert failed["cost_usd"] is None


def test_the_page_query_never_selects_bodies_or_headers(api_server):
    sql, _ = page_query(RequestFilter(text="x")).sql()
    selected = sql.split(" FROM ")[0]
    for column in ("request_body", "response_body", "request_headers", "response_headers"):
        assert column not in selected


@pytest.mark.parametrize("params, names", [
    ({"domain": "other.example.com"}, ("ratelimited", "failed")),
    ({"domain": "OTHER.example.com"}, ("ratelimited", "failed")),
    ({"domain": "localhost:3000"}, ("hangup",)),
    ({"account": "acc_other"}, ("ratelimited", "failed")),
    ({"model": "claude-haiku-4-5"}, ("haiku",)),
    ({"model": "claude-opus-4-1", "domain": "other.example.com"}, ("failed",)),
    ({"type": "query_evaluation"}, ("haiku",)),
    ({"type": "quota"}, ("hangup",)),
    ({"status": "200"}, ("stream", "haiku", "hostile", "tie_a", "tie_b", "count")),
    ({"status": "429"}, ("ratelimited",)),
    ({"status": "4xx"}, ("ratelimited", "notjson", "hung_499")),
    ({"status": "5XX"}, ("failed",)),
    ({"status": "error"}, ("failed",)),
    ({"status": "client_disconnected"}, ("hangup", "hung_499")),
    ({"status": "201"}, ()),
    ({"domain": "nobody.example.com"}, ()),
    ({"domain": "", "account": "", "q": ""}, None),  # empty values filter nothing
])
def test_each_filter(api_server, api_data, params, names):
    expected = set(api_data.rows) if names is None else set(names)
    body = listed(api_server, **params)
    assert {item["id"] for item in body["requests"]} == api_data.ids(*expected)
    assert body["total"] == len(expected)


def test_conversation_filter(api_server, api_data):
    conv = api_data.rows["stream"]["conversation_id"]
    assert listed_ids(api_server, conversation_id=conv) == [api_data.rows["stream"]["id"],
                                                        api_data.rows["haiku"]["id"]]


def test_relative_times(api_server, api_data):
    recent = ("stream", "haiku", "ratelimited", "tie_a", "tie_b", "count", "notjson", "hung_499")
    assert set(listed_ids(api_server, since="24h")) == api_data.ids(*recent)
    assert set(listed_ids(api_server, since="7d")) == api_data.ids(*recent, "failed", "hangup")
    assert set(listed_ids(api_server, since="30m")) == api_data.ids("stream", "haiku")
    assert set(listed_ids(api_server, until="7d")) == api_data.ids("hostile")
    assert set(listed_ids(api_server, since="7d", until="24h")) == api_data.ids("failed", "hangup")


def test_absolute_times_dates_offsets_and_exclusive_until(api_server, api_data):
    hostile = api_data.rows["hostile"]["received_at"]
    day = hostile.date()
    next_day = (day + timedelta(days=1)).isoformat()
    assert listed_ids(api_server, since=day.isoformat(), until=next_day) == \
        [api_data.rows["hostile"]["id"]]
    assert listed_ids(api_server, until=day.isoformat()) == []
    stream = api_data.rows["stream"]["received_at"]
    exact = stream.strftime(ISO)
    assert api_data.rows["stream"]["id"] not in listed_ids(api_server, until=exact)
    assert listed_ids(api_server, since=exact) == [api_data.rows["stream"]["id"]]
    in_paris = (stream - timedelta(seconds=1)).astimezone(timezone(timedelta(hours=2)))
    assert listed_ids(api_server, since=in_paris.isoformat()) == [api_data.rows["stream"]["id"]]
    naive = (stream - timedelta(seconds=1)).replace(tzinfo=None).isoformat()
    assert listed_ids(api_server, since=naive) == [api_data.rows["stream"]["id"]]


def test_pagination_walks_every_row_once_with_the_total(api_server, api_data):
    seen = []
    for offset in range(0, len(api_data.rows) + 3, 3):
        body = listed(api_server, limit=3, offset=offset)
        assert body["total"] == len(api_data.rows) and body["limit"] == 3
        assert body["offset"] == offset
        seen += [item["id"] for item in body["requests"]]
    assert seen == api_data.newest_first()
    filtered = listed(api_server, domain="team.example.com", limit=2, offset=1)
    by_id = api_data.rows_by_id
    team = [i for i in api_data.newest_first() if by_id[i]["domain"] == "team.example.com"]
    assert filtered["total"] == len(team) == 8
    assert [item["id"] for item in filtered["requests"]] == team[1:3]
    assert listed(api_server, limit=0) == {"requests": [], "total": len(api_data.rows), "limit": 0,
                                       "offset": 0}
    assert listed(api_server, limit=100000)["limit"] == 500
    beyond = listed(api_server, offset=1000)
    assert beyond["requests"] == [] and beyond["total"] == len(api_data.rows)


@pytest.mark.parametrize("q, names", [
    ("hello WORLD", ("stream",)),               # case-insensitive, request body
    ("Streamed answer", ("stream",)),           # response body
    ("unreachable", ("failed",)),               # error message
    ("50%", ("failed",)),                       # % is a character, not a wildcard
    ("%", ("failed", "hostile")),
    ("e_c", ("hostile",)),                      # _ too ("apple cider" must not match)
    ("%_%", ()),
    ("'; DROP TABLE requests; --", ("hostile",)),
    ("O'Reilly said \"quoted\"", ("hostile",)),  # quotes, stored JSON-escaped
    ("C:\\temp", ("hostile",)),                 # a backslash, stored as \\ in JSON
    ("\\", ("hostile",)),
    ("' OR '1'='1", ()),
    ("\"; SELECT pg_sleep(5); --", ()),
    ("no such text anywhere", ()),
])
def test_text_search_is_literal(api_server, api_data, q, names):
    body = listed(api_server, q=q)
    assert {item["id"] for item in body["requests"]} == api_data.ids(*names)
    assert body["total"] == len(names)


def test_hostile_filters_change_nothing(api_server, api_data):
    for value in ("'; DROP TABLE requests; --", "x' OR '1'='1", "%", "_", "\\"):
        for name in ("domain", "account", "model", "type", "conversation_id"):
            assert listed(api_server, **{name: value})["total"] == 0
    assert listed(api_server)["total"] == len(api_data.rows)


@pytest.mark.parametrize("params, name", [
    ({"limit": "abc"}, "limit"),
    ({"limit": "-1"}, "limit"),
    ({"limit": "1.5"}, "limit"),
    ({"offset": "x"}, "offset"),
    ({"offset": str(2**40)}, "offset"),
    ({"status": "6xx"}, "status"),
    ({"status": "2000"}, "status"),
    ({"status": "ok"}, "status"),
    ({"since": "yesterday"}, "since"),
    ({"since": "24x"}, "since"),
    ({"until": "2025-13-01"}, "until"),
    ({"until": "9999-12-31T23:59:59-05:00"}, "until"),
    ({"since": "2025-03-02", "until": "2025-03-01"}, "since"),
    ({"acount": "acc_1"}, "acount"),
    ({"domain": ["a.example.com", "b.example.com"]}, "domain"),
    ({"q": "a\x00b"}, "q"),
    ({"q": "x" * 1001}, "q"),
    ({"model": "m" * 501}, "model"),
])
def test_bad_parameters_are_400_naming_the_parameter(api_server, params, name):
    response = api_server.get("/api/requests", params=params)
    assert_error(response, 400, "invalid_request_error", f"'{name}'")


@pytest.mark.parametrize("filters, sqlite_index, pg_index", [
    (RequestFilter(), "requests_received_at", "_received_at_idx"),
    (RequestFilter(domain="team.example.com"), "requests_domain_received_at",
     "_domain_received_at_idx"),
    (RequestFilter(account="acc_other"), "requests_account_received_at",
     "_account_id_received_at_idx"),
    (RequestFilter(model="claude-haiku-4-5"), "requests_model_received_at",
     "_model_received_at_idx"),
    (RequestFilter(conversation_id="c"), "requests_conversation_received_at",
     "_conversation_id_received_at_idx"),
])
def test_list_filters_use_the_indexes(api_server, filters, sqlite_index, pg_index):
    db = api_server.app.extensions["nexus.db"]
    sql, params = page_query(filters).limit(50).sql()
    with db.connection_context(), db.atomic():
        if is_postgres(db):
            # The dataset is tiny: forbid sequential scans to see which index it can use.
            # On a partition PostgreSQL names its copy of an index after the columns.
            db.execute_sql("SET LOCAL enable_seqscan = off")
            plan, index = db.execute_sql("EXPLAIN " + sql, params).fetchall(), pg_index
        else:
            plan = db.execute_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall()
            index = sqlite_index
    text = " ".join(str(part) for line in plan for part in line)
    assert index in text, text
