"""`GET /api/requests/<id>` and `/chunks` on SQLite and PostgreSQL through a real socket, the
access rule of `/api/*`, and a database that cannot be read."""

from __future__ import annotations

import http.client
import json
import uuid

import pytest

from app.storage import close as close_storage
from app.storage.models import Request
from tests.integration.api_support import (
    HOSTILE,
    ISO,
    KEY,
    Server,
    assert_error,
    make_app,
    non_loopback_address,
)
from tests.support import free_port


def test_detail_has_every_column_and_bodies_round_trip(api_server, api_data):
    row = api_data.rows["stream"]
    response = api_server.get(f"/api/requests/{row['id']}")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == set(Request._meta.fields)
    expected = dict(row, request_body=json.loads(row["request_body"]),
                    response_body=json.loads(row["response_body"]), status=200,
                    cost_usd=float(row["cost_usd"]), received_at=row["received_at"].strftime(ISO),
                    completed_at=row["completed_at"].strftime(ISO))
    assert body == expected
    assert body["request_headers"][1] == ["x-api-key", "sk-ant-…abcd"]
    hostile = api_server.get(f"/api/requests/{api_data.rows['hostile']['id']}").json()
    assert hostile["request_body"]["messages"][0]["content"] == HOSTILE


def test_detail_keeps_text_that_is_not_json(api_server, api_data):
    body = api_server.get(f"/api/requests/{api_data.rows['notjson']['id']}").json()
    assert body["request_body"] == "plain text, not JSON"
    assert body["response_body"] == "{truncated" and body["response_truncated"] is True
    failed = api_server.get(f"/api/requests/{api_data.rows['failed']['id']}").json()
    assert failed["response_body"] is None and failed["status"] == 502


def test_detail_accepts_an_upper_case_uuid(api_server, api_data):
    row = api_data.rows["haiku"]
    assert api_server.get(f"/api/requests/{row['id'].upper()}").json()["id"] == row["id"]


@pytest.mark.parametrize("raw", [
    str(uuid.uuid4()),                           # well-formed, unknown
    "abc",
    "00000000-0000-4000-8000-00000000000a'--",
    "%27%20OR%20%271%27%3D%271",                 # ' OR '1'='1
    "..",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
])
def test_unknown_or_malformed_ids_are_404(api_server, raw):
    for suffix in ("", "/chunks"):
        connection = http.client.HTTPConnection("127.0.0.1", api_server.port, timeout=10)
        try:  # http.client sends the path as given: no client-side normalisation
            connection.request("GET", f"/api/requests/{raw}{suffix}")
            response = connection.getresponse()
            status, body = response.status, json.loads(response.read())
        finally:
            connection.close()
        assert status == 404, (raw, suffix, body)
        assert body["type"] == "error" and body["error"]["type"] == "not_found_error"


# -- chunks --------------------------------------------------------------------------------------

def test_chunks_are_the_stored_events_in_order(api_server, api_data):
    row = api_data.rows["stream"]
    body = api_server.get(f"/api/requests/{row['id']}/chunks").json()
    assert body["request_id"] == row["id"] and body["total"] == len(api_data.events)
    chunks = body["chunks"]
    assert [c["seq"] for c in chunks] == list(range(len(api_data.events)))
    assert [c["raw"] for c in chunks] == api_data.events
    assert [c["offset_ms"] for c in chunks] == [800.0 + 12.5 * n for n in range(5)]
    assert [c["event"] for c in chunks] == ["message_start", "content_block_delta", None,
                                            "ping", "message_stop"]
    assert chunks[1]["data"]["delta"] == {"type": "text_delta", "text": "Str"}
    assert chunks[2]["data"] is None and chunks[3]["data"] == "not json"


def test_chunks_page_with_the_total(api_server, api_data):
    row = api_data.rows["stream"]
    body = api_server.get(f"/api/requests/{row['id']}/chunks", params={"limit": 2,
                                                                    "offset": 2}).json()
    assert [c["seq"] for c in body["chunks"]] == [2, 3] and body["total"] == 5
    response = api_server.get(f"/api/requests/{row['id']}/chunks", params={"limit": "x"})
    assert_error(response, 400, "invalid_request_error", "'limit'")


def test_a_request_without_chunks_has_an_empty_list(api_server, api_data):
    row = api_data.rows["haiku"]
    body = api_server.get(f"/api/requests/{row['id']}/chunks").json()
    assert body == {"request_id": row["id"], "chunks": [], "total": 0, "limit": 1000,
                    "offset": 0}


# -- access --------------------------------------------------------------------------------------

def test_without_a_key_other_hosts_get_401_with_a_hint(api_server, api_data):
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to call from")
    for path in ("/api/requests", f"/api/requests/{api_data.rows['stream']['id']}", "/api/nope"):
        response = api_server.get(path, host=address)
        assert_error(response, 401, "authentication_error", "DASHBOARD_API_KEY", "loopback")
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert api_server.get("/health/live", host=address).status_code == 200, "only /api is guarded"


def test_with_a_key_everyone_must_present_it(api_keyed, api_data):
    path = f"/api/requests/{api_data.rows['stream']['id']}"
    assert_error(api_keyed.get(path), 401, "authentication_error", "Missing key")
    for headers in ({"Authorization": "Bearer wrong-key-0123456789"},
                    {"X-Dashboard-Key": "wrong-key-0123456789"},
                    {"X-Dashboard-Key": KEY[:-1]}, {"X-Dashboard-Key": KEY + "x"}):
        assert_error(api_keyed.get(path, headers=headers), 401, "authentication_error", "Invalid")
    for headers in ({"Authorization": KEY}, {"Authorization": f"Basic {KEY}"},
                    {"x-api-key": KEY}):  # not a form the API reads
        assert_error(api_keyed.get(path, headers=headers), 401, "authentication_error", "Missing")
    for headers in ({"Authorization": f"Bearer {KEY}"}, {"authorization": f"bearer {KEY}"},
                    {"X-Dashboard-Key": KEY}, {"x-dashboard-key": KEY},
                    {"X-Dashboard-Key": KEY, "Authorization": "Bearer not-the-key-0123456"}):
        response = api_keyed.get(path, headers=headers)
        assert response.status_code == 200, (headers, response.text)
        assert response.json()["id"] == api_data.rows["stream"]["id"]
    listing = api_keyed.get("/api/requests", headers={"X-Dashboard-Key": KEY}).json()
    assert listing["total"] == len(api_data.rows)
    address = non_loopback_address()
    if address is not None:
        assert api_keyed.get(path, host=address).status_code == 401
        assert api_keyed.get(path, host=address,
                         headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_an_unreadable_database_is_503_not_500(tmp_path):
    url = f"postgresql://nexus@127.0.0.1:{free_port()}/nexus?connect_timeout=2"
    broken = Server(make_app(url, tmp_path))
    try:
        assert_error(broken.get("/api/requests"), 503, "api_error", "database")
    finally:
        broken.stop()
        close_storage(broken.app)
