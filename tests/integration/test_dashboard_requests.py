"""The dashboard's requests pages (SPEC §7.2) on SQLite and PostgreSQL: the list with its
filters, paging, htmx fragment, live container and empty state; the detail with its chat,
headers, chunk timeline and raw JSON; 404s, 400s and escaping of stored text."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest

from app.storage import close as close_storage
from app.storage import upgrade_on_start
from app.storage.models import bind
from tests.factories import (
    insert_chunks,
    insert_requests,
    message_reply,
    messages_body,
    record_requests,
    request_row,
    sse_event,
)
from tests.integration.api_support import make_app

XSS = "<script>alert(1)</script>"
ROW_ID = re.compile(r'<tr data-id="([0-9a-f-]{36})"')
NOW = datetime.now(UTC)


@pytest.fixture
def dashboard(database_url, tmp_path):
    """An app over an empty, upgraded database of each engine (loopback: no login needed),
    its test client, and a helper inserting rows into that database."""
    app = make_app(database_url, tmp_path)
    upgrade_on_start(app)
    db = app.extensions["nexus.db"]

    def insert(*rows, chunks=None, recorded=False):
        bind(db)
        if recorded:  # the writer's way, usage roll-ups included (it opens its own connection)
            record_requests(*rows)
            return
        with db.connection_context():
            insert_requests(*rows)
            for row, events in (chunks or {}).items():
                insert_chunks(next(r for r in rows if r["id"] == row), events)

    client = app.test_client()
    yield client, insert
    close_storage(app)


def ids(html: str) -> list[str]:
    return ROW_ID.findall(html)


def ago(**kwargs) -> datetime:
    return NOW - timedelta(**kwargs)


def page(client, url: str, status: int = 200, **kwargs) -> str:
    response = client.get(url, **kwargs)
    assert response.status_code == status, response.text[:2000]
    return response.text


# ---------------------------------------------------------------------------------------------
# The list


def dataset() -> dict[str, dict]:
    return {
        "newest": request_row(received_at=ago(minutes=1), stream=True,
                              request_body=messages_body("hello world", stream=True)),
        "haiku": request_row(received_at=ago(minutes=5), model="claude-haiku-4-5",
                             request_type="query_evaluation",
                             request_body=messages_body("apple cider recipe")),
        "other": request_row(received_at=ago(hours=2), domain="other.example.com",
                             account_id="acc_other", status="429"),
        "failed": request_row(received_at=ago(days=2), status="502", outcome="failed",
                              error_type="api_error", error_message="upstream unreachable",
                              response_body=None, cost_usd=None),
        "quota": request_row(received_at=ago(days=3), request_type="quota",
                             conversation_id="conv-1", branch_id="main"),
    }


def test_list_shows_rows_newest_first_in_the_layout(dashboard):
    client, insert = dashboard
    rows = dataset()
    insert(*rows.values())
    html = page(client, "/dashboard/requests")
    assert ids(html) == [row["id"] for row in rows.values()]
    assert '<a href="/dashboard/requests" aria-current="page">Requests</a>' in html
    assert "1–5 of 5 requests" in html
    assert "other.example.com" in html and "acc_other" in html and "claude-haiku-4-5" in html
    assert 'class="status s5">502' in html and "upstream unreachable" not in html
    # Links to each detail, and to the conversation of a linked row.
    assert f'href="/dashboard/requests/{rows["haiku"]["id"]}"' in html
    assert 'href="/dashboard/conversations/conv-1"' in html
    # The filter form swaps the table in place; the table refreshes when a request arrives.
    assert 'hx-get="/dashboard/requests" hx-target="#requests-table"' in html
    assert 'hx-push-url="true"' in html
    assert 'hx-trigger="change, keyup changed delay:400ms from:input[name=q]"' in html
    assert re.search(r'<div id="requests-table"[^>]* data-live hx-get="/dashboard/requests" '
                     r'hx-trigger="live"', html)
    # Bodies are never read by the list.
    assert "hello world" not in html and "apple cider" not in html


def test_each_filter_narrows_the_rows(dashboard):
    client, insert = dashboard
    rows = dataset()
    insert(*rows.values())
    cases = {
        "domain=OTHER.example.com": ["other"],
        "account=acc_other": ["other"],
        "model=claude-haiku-4-5": ["haiku"],
        "type=quota": ["quota"],
        "type=query_evaluation": ["haiku"],
        "status=5xx": ["failed"],
        "status=429": ["other"],
        "status=error": ["failed"],
        "q=apple+cider": ["haiku"],
        "q=unreachable": ["failed"],
        "since=1h": ["newest", "haiku"],
        "until=1d": ["failed", "quota"],
        "conversation_id=conv-1": ["quota"],
        "domain=team.example.com&status=2xx&since=7d": ["newest", "haiku", "quota"],
        "domain=&account=&q=&status=": list(rows),   # an untouched form filters nothing
    }
    for query, expected in cases.items():
        html = page(client, f"/dashboard/requests?{query}")
        assert ids(html) == [rows[name]["id"] for name in expected], query
    # The form shows the filters in use, and offers to clear them.
    html = page(client, "/dashboard/requests?status=5xx&q=unreachable")
    assert '<option value="5xx" selected>' in html
    assert 'name="q" value="unreachable"' in html
    assert "Clear filters" in html
    html = page(client, "/dashboard/requests?domain=nowhere.example.com")
    assert ids(html) == [] and "No requests match these filters." in html
    assert "ANTHROPIC_BASE_URL" not in html


def test_pages_link_to_each_other_and_only_the_first_is_live(dashboard):
    client, insert = dashboard
    rows = [request_row(received_at=ago(minutes=minute)) for minute in range(7)]
    insert(*rows)
    order = [row["id"] for row in rows]
    first = page(client, "/dashboard/requests?limit=3")
    assert ids(first) == order[:3]
    assert "1–3 of 7 requests" in first and "Page 1 of 3" in first
    assert 'href="/dashboard/requests?limit=3&amp;offset=3" rel="next"' in first
    assert 'href="/dashboard/requests?limit=3&amp;offset=6" rel="last"' in first
    assert 'rel="prev"' not in first and 'hx-trigger="live"' in first
    second = page(client, "/dashboard/requests?limit=3&offset=3")
    assert ids(second) == order[3:6] and "4–6 of 7 requests" in second
    assert 'href="/dashboard/requests?limit=3" rel="prev"' in second
    assert 'href="/dashboard/requests?limit=3" rel="first"' in second
    assert 'hx-trigger="live"' not in second   # later pages stay put while rows arrive
    third = page(client, "/dashboard/requests?limit=3&offset=6")
    assert ids(third) == order[6:] and 'rel="next"' not in third
    beyond = page(client, "/dashboard/requests?limit=3&offset=30")
    assert ids(beyond) == [] and "No requests on this page." in beyond
    # Filters travel with the page links.
    filtered = page(client, "/dashboard/requests?limit=3&domain=team.example.com")
    assert "/dashboard/requests?domain=team.example.com&amp;limit=3&amp;offset=3" in filtered


def test_text_search_pages_without_counting_every_match(dashboard):
    client, insert = dashboard
    rows = [request_row(received_at=ago(minutes=minute),
                        request_body=messages_body(f"needle {minute}")) for minute in range(3)]
    insert(*rows, request_row(received_at=ago(minutes=9)))
    first = page(client, "/dashboard/requests?q=needle&limit=2")
    assert ids(first) == [rows[0]["id"], rows[1]["id"]]
    assert "1–2 of more than 2 requests" in first and "Page 1<" in first
    # Without a range, a search covers the last week (and says so in its links and form).
    assert 'href="/dashboard/requests?q=needle&amp;since=7d&amp;limit=2&amp;offset=2" ' \
        'rel="next"' in first
    assert 'rel="last"' not in first
    second = page(client, "/dashboard/requests?q=needle&limit=2&offset=2")
    assert ids(second) == [rows[2]["id"]] and "3–3 of 3 requests" in second
    assert 'rel="next"' not in second and 'rel="prev"' in second
    beyond = page(client, "/dashboard/requests?q=needle&limit=2&offset=10")
    assert "No requests on this page." in beyond


def test_a_search_without_a_range_covers_the_last_week(dashboard):
    client, insert = dashboard
    old = request_row(received_at=ago(days=8), request_body=messages_body("needle old"))
    new = request_row(received_at=ago(days=1), request_body=messages_body("needle new"))
    insert(old, new)
    assert ids(page(client, "/dashboard/requests?q=needle")) == [new["id"]]
    assert ids(page(client, "/dashboard/requests?q=needle&since=30d")) == [new["id"], old["id"]]
    assert ids(page(client, "/dashboard/requests")) == [new["id"], old["id"]]


def test_htmx_requests_get_the_table_fragment_only(dashboard):
    client, insert = dashboard
    rows = dataset()
    insert(*rows.values())
    response = client.get("/dashboard/requests?domain=&status=5xx&q=",
                          headers={"HX-Request": "true", "HX-Trigger": "request-filters"})
    assert response.status_code == 200
    html = response.text
    assert html.startswith('<div id="requests-table"')
    assert "<html" not in html and "<form" not in html and "topbar" not in html
    assert ids(html) == [rows["failed"]["id"]]
    # The address bar shows the filters in use, without the form's empty fields.
    assert response.headers["HX-Push-Url"] == "/dashboard/requests?status=5xx"
    assert 'hx-get="/dashboard/requests?status=5xx" hx-trigger="live"' in html
    assert "HX-Request" in response.headers["Vary"]
    # A live refresh re-reads the same table and leaves the history alone.
    live = client.get("/dashboard/requests?status=5xx",
                      headers={"HX-Request": "true", "HX-Trigger": "requests-table"})
    assert live.status_code == 200 and "HX-Push-Url" not in live.headers
    # Restoring history after a cache miss needs the whole page.
    restore = client.get("/dashboard/requests", headers={
        "HX-Request": "true", "HX-History-Restore-Request": "true"})
    assert "<html" in restore.text and "<form" in restore.text


def test_empty_database_shows_how_to_point_a_client_here(dashboard):
    client, _ = dashboard
    html = page(client, "/dashboard/requests")
    assert "ANTHROPIC_BASE_URL=http://localhost" in html
    assert ids(html) == []
    fragment = page(client, "/dashboard/requests", headers={"HX-Request": "true"})
    assert "ANTHROPIC_BASE_URL" in fragment


def test_bad_filters_answer_400_with_the_message(dashboard):
    client, insert = dashboard
    insert(request_row())
    html = page(client, "/dashboard/requests?status=abc", 400)
    assert "Invalid parameter &#39;status&#39;" in html
    assert "<form" in html and 'value="abc"' in html   # the form stays, to fix the value
    assert ids(html) == []
    assert "Invalid parameter &#39;since&#39;" in page(
        client, "/dashboard/requests?since=yesterday", 400)
    assert "Unknown parameter &#39;colour&#39;" in page(
        client, "/dashboard/requests?colour=red", 400)
    assert "given more than once" in page(client, "/dashboard/requests?domain=a&domain=b", 400)
    fragment = page(client, "/dashboard/requests?status=abc", 400,
                    headers={"HX-Request": "true"})
    assert fragment.startswith('<div id="requests-table"') and "Invalid parameter" in fragment
    assert 'hx-trigger="live"' not in fragment


def test_stored_text_is_escaped_in_the_list(dashboard):
    client, insert = dashboard
    insert(request_row(domain=XSS, account_id=XSS, model=XSS))
    html = page(client, "/dashboard/requests")
    assert XSS not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_recorded_rows_are_offered_as_filter_suggestions(dashboard):
    client, insert = dashboard
    insert(request_row(domain="suggested.example.com", account_id="acc_suggested"),
           recorded=True)
    html = page(client, "/dashboard/requests")
    assert '<option value="suggested.example.com">' in html
    assert '<option value="acc_suggested">' in html


# ---------------------------------------------------------------------------------------------
# The detail


PNG_DATA = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJ"
            "RU5ErkJggg==")


def chat_body() -> str:
    return json.dumps({
        "model": "claude-sonnet-4-5", "max_tokens": 2048, "stream": False,
        "system": [{"type": "text", "text": "You are a careful assistant."}],
        "tools": [{"name": "Bash", "input_schema": {"type": "object"}},
                  {"name": "Read", "input_schema": {"type": "object"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "List the files " + XSS},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": PNG_DATA}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "The user wants ls output.",
                 "signature": "sig"},
                {"type": "text", "text": "Running it now."},
                {"type": "tool_use", "id": "toolu_01", "name": "Bash",
                 "input": {"command": "ls -la", "description": "List files"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01",
                 "content": "README.md\nsetup.py", "is_error": False}]},
            {"role": "system", "content": "Inline system note"},
        ]})


def test_detail_renders_the_conversation_as_chat(dashboard):
    client, insert = dashboard
    answer = json.loads(message_reply("Two files: README.md and setup.py."))
    answer["content"].append({"type": "tool_use", "id": "toolu_02", "name": "Read",
                              "input": {"file_path": "/repo/README.md"}})
    answer["stop_reason"] = "tool_use"
    row = request_row(request_body=chat_body(), response_body=json.dumps(answer),
                      conversation_id="conv-7", branch_id="branch_2",
                      parent_request_id="00000000-0000-4000-8000-000000000001",
                      tool_call_count=1, tool_names=["Read"], message_count=4)
    insert(row)
    html = page(client, f"/dashboard/requests/{row['id']}")
    chat = html[html.index('<div class="rq-chat">'):html.index('id="metadata"')]
    assert "You are a careful assistant." in chat                       # system
    assert "List the files &lt;script&gt;alert(1)&lt;/script&gt;" in chat  # user text
    assert "Running it now." in chat                                    # assistant text
    assert re.search(r'<details class="rq-thinking">\s*<summary>Thinking.*?</summary>\s*'
                     r'<div class="rq-msg-text">The user wants ls output.</div>', chat, re.S)
    assert '<strong class="rq-tool-name">Bash</strong>' in chat            # tool_use
    assert "&#34;command&#34;: &#34;ls -la&#34;" in chat                # its input, pretty
    assert "Tool result" in chat and "README.md\nsetup.py" in chat      # tool_result
    assert chat.count('<strong class="rq-tool-name">Bash</strong>') == 2   # named after its call
    assert "[image: image/png · " in chat and PNG_DATA not in html      # placeholder only
    assert "Inline system note" in chat
    assert "Two files: README.md and setup.py." in chat                 # the answer
    assert "&#34;file_path&#34;: &#34;/repo/README.md&#34;" in chat
    assert "stop: tool_use" in chat
    assert "rq-msg-user" in chat and "rq-msg-assistant" in chat and "rq-msg-answer" in chat
    # Offered tools and the request's settings.
    assert '<span class="rq-tag">Read</span>' in html and "&#34;max_tokens&#34;: 2048" in html
    # Metadata, timings, tokens, cost, links.
    assert "1.50 s" in html and "$0.000546" in html and "claude-sonnet-4-5" in html
    assert 'href="/dashboard/conversations/conv-7"' in html
    assert 'href="/dashboard/conversations/conv-7?branch=branch_2"' in html
    assert 'href="/dashboard/requests/00000000-0000-4000-8000-000000000001"' in html
    assert f'href="/api/requests/{row["id"]}"' in html
    # Headers as stored (the writer masked the key).
    assert "<th scope=\"row\">x-api-key</th><td>sk-ant-…abcd</td>" in html
    assert "request-id" in html and "req_1" in html
    # The raw JSON of both bodies.
    raw = html[html.index('id="raw"'):]
    assert "&#34;tool_use_id&#34;: &#34;toolu_01&#34;" in raw and "Response body" in raw
    assert "&#34;stop_reason&#34;: &#34;tool_use&#34;" in raw
    assert XSS not in html
    assert client.get(f"/dashboard/requests/{row['id']}").headers["Cache-Control"] == "no-store"


def test_detail_of_a_stream_shows_its_chunk_timeline(dashboard):
    client, insert = dashboard
    row = request_row(stream=True, first_token_ms=950.0,
                      request_body=messages_body("hi", stream=True),
                      response_body=message_reply("Streamed answer"))
    events = [
        sse_event("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "model": "claude-sonnet-4-5", "usage": {"input_tokens": 12}}}),
        sse_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": "text_delta", "text": "Str"}}),
        ": keep-alive comment\n\n",
        "event: ping\ndata: not json\n\n",
        sse_event("message_delta", {"type": "message_delta",
                                    "delta": {"stop_reason": "end_turn"},
                                    "usage": {"output_tokens": 34}}),
        sse_event("message_stop", {"type": "message_stop"}),
    ]
    insert(row, chunks={row["id"]: events})
    html = page(client, f"/dashboard/requests/{row['id']}")
    timeline = html[html.index('id="timeline"'):html.index('id="raw"')]
    assert "6 events" in timeline
    names = re.findall(r'<span class="rq-event-name[^"]*">([^<]+)</span>', timeline)
    assert names == ["message_start", "content_block_delta", "(comment)", "ping",
                     "message_delta", "message_stop"]
    offsets = re.findall(r'<td class="num">([\d,.]+) ms</td>', timeline)
    assert offsets == ["800.0", "812.5", "825.0", "837.5", "850.0", "862.5"]
    assert "+12.5" in timeline
    assert "claude-sonnet-4-5 · 12 input tokens" in timeline
    assert ">Str<" in timeline and "end_turn · 34 output tokens" in timeline
    assert "not json" in timeline
    assert "Streamed answer" in html and "first token 950 ms" in html


def test_detail_of_a_failed_or_odd_request(dashboard):
    client, insert = dashboard
    failed = request_row(status="502", outcome="failed", error_type="api_error",
                         error_message="upstream unreachable " + XSS, response_body=None)
    limited = request_row(status="429", response_body=json.dumps({
        "type": "error", "error": {"type": "rate_limit_error", "message": "Slow down"}}))
    odd = request_row(method="GET", path="/v1/models", request_body="plain text, not JSON",
                      response_body="{truncated", response_truncated=True, model=None)
    insert(failed, limited, odd)
    html = page(client, f"/dashboard/requests/{failed['id']}")
    assert "upstream unreachable &lt;script&gt;" in html and XSS not in html
    assert "none recorded" in html
    html = page(client, f"/dashboard/requests/{limited['id']}")
    assert "rate_limit_error" in html and "Slow down" in html
    html = page(client, f"/dashboard/requests/{odd['id']}")
    assert "not a Messages API request" in html
    assert "plain text, not JSON" in html and "{truncated" in html and "not JSON, as stored" in html
    assert "answer truncated" in html


def test_long_conversations_fold_earlier_messages(dashboard):
    client, insert = dashboard
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}"}
                for i in range(11)]
    row = request_row(request_body=json.dumps({"model": "m", "messages": messages}))
    insert(row)
    html = page(client, f"/dashboard/requests/{row['id']}")
    earlier = html[html.index('<details class="rq-earlier">'):html.index("</details>",
                                                                    html.index("message 4"))]
    assert "5 earlier messages" in earlier and "message 0" in earlier
    assert "message 10" in html


def test_unknown_and_malformed_ids_are_404_pages(dashboard):
    client, insert = dashboard
    insert(request_row())
    for path in ("/dashboard/requests/00000000-0000-4000-8000-0000000000ff",
                 "/dashboard/requests/../etc", "/dashboard/requests/..%2Fetc",
                 "/dashboard/requests/not-an-id", "/dashboard/requests/a/b",
                 "/dashboard/requests/%27%3B%20DROP%20TABLE%20requests",
                 "/dashboard/requests/%3Cscript%3Ealert(1)%3C%2Fscript%3E"):
        html = page(client, path, 404)
        assert "Request not found" in html and "<html" in html, path
        assert XSS not in html
