"""Hostile ids and filter values on the JSON API and the dashboard, against a real proxy process
on each engine (a temp SQLite file, a fresh PostgreSQL database): SQL-injection text is data,
never SQL; every malformed parameter is a 400 naming it, every unknown id a 404, both JSON in
Anthropic's shape (dashboard: an HTML page), and never a 500."""

from __future__ import annotations

import pytest
import requests

from tests.databases import engine_url as database_for
from tests.reliability.abuse_support import HEADERS, SQLI, XSS, assert_error, message, recorded
from tests.support import ProxyProcess

EVIL_IDS = ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "%00", "' OR '1'='1", SQLI[:60],
            "x" * 5000, "\u00e9\u2603\U0001f600", "%ff%fe", "00000000-0000-0000-0000-000000000000",
            "<script>alert(1)</script>", "1;SELECT pg_sleep(5)"]

BAD_PARAMS = [
    ("limit", "-1"), ("limit", "abc"), ("limit", "1e3"), ("offset", "1e9"), ("offset", "-5"),
    ("since", "yesterday"), ("since", "99999999d"), ("since", "2025-13-45"),
    ("until", "' OR 1=1 --"), ("status", "2xxx"), ("status", "'; DROP TABLE requests; --"),
    ("q", "a\x00b"), ("domain", "\x00"), ("nonsense", "1"),
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request, fake_upstream_server, tmp_path_factory):
    """A proxy on each engine holding two recorded exchanges with hostile text (one per module:
    the tests only read)."""
    fake_upstream_server.reset()
    workdir = tmp_path_factory.mktemp("hostile")
    with database_for(request.param, workdir, request) as url:
        proc = ProxyProcess(fake_upstream_server.base_url, workdir,
                            {"DATABASE_URL": url, "STORAGE_BATCH_INTERVAL_MS": "20"})
        try:
            yield from _recorded_hostile(proc)
        finally:
            proc.stop()


def _recorded_hostile(proc):
    ids = {}
    for name, text in (("sqli", f"find {SQLI} please"), ("xss", f"render {XSS} please")):
        sent = requests.post(proc.url + "/v1/messages", json=message(text), headers=HEADERS,
                             timeout=10)
        assert sent.status_code == 200
        ids[name] = sent.headers["x-nexus-request-id"]
    for request_id in ids.values():
        recorded(proc.url, request_id)
    yield proc, ids
    assert not [line for line in proc.lines if "Traceback" in line or '"level": "error"' in line]


def api(proc, path: str, **params) -> requests.Response:
    return requests.get(proc.url + path, params=params, timeout=20)


def test_sql_injection_text_is_data(served):
    proc, ids = served
    total = api(proc, "/api/requests").json()["total"]
    assert total == 2
    found = api(proc, "/api/requests", q=SQLI)
    assert found.status_code == 200
    assert [row["id"] for row in found.json()["requests"]] == [ids["sqli"]]
    for name in ("domain", "account", "model", "type", "conversation_id", "q"):
        answer = api(proc, "/api/requests", **{name: "x' OR '1'='1' --"})
        assert answer.status_code == 200 and answer.json()["total"] == 0, (name, answer.text)
    # "%" is a plain character, not LIKE's wildcard ("please" would match "e%e" otherwise).
    assert api(proc, "/api/requests", q="e%e").json()["total"] == 0
    assert api(proc, "/api/conversations", domain="' OR 1=1 --").json()["total"] == 0
    assert api(proc, "/api/usage/window", account="' OR 1=1 --").status_code == 200
    assert api(proc, "/api/ratelimits", account="' OR 1=1 --").status_code == 200
    # Tables and rows are all still there.
    assert api(proc, "/api/requests").json()["total"] == total
    stored = recorded(proc.url, ids["sqli"])
    assert stored["request_body"]["messages"][0]["content"] == f"find {SQLI} please"


@pytest.mark.parametrize("path", ["/api/requests/{}", "/api/requests/{}/chunks",
                                  "/api/conversations/{}"])
def test_hostile_ids_are_404(served, path):
    proc, _ = served
    for raw_id in EVIL_IDS:
        answer = requests.get(proc.url + path.format(requests.utils.quote(raw_id, safe="")),
                              timeout=20)
        assert_error(answer, 404, "not_found_error")


def test_malformed_parameters_are_400_naming_them(served):
    proc, _ = served
    for name, value in BAD_PARAMS:
        answer = api(proc, "/api/requests", **{name: value})
        assert answer.status_code == 400, (name, value, answer.text[:200])
        body = assert_error(answer, 400, "invalid_request_error")
        assert name in body["error"]["message"], (name, body)
    repeated = requests.get(proc.url + "/api/requests?domain=a&domain=b", timeout=10)
    assert "domain" in assert_error(repeated, 400, "invalid_request_error")["error"]["message"]
    for path, name, value in (("/api/usage/window", "hours", "1e400"),
                              ("/api/usage/daily", "days", "100000000"),
                              ("/api/stats", "since", "<script>"),
                              ("/api/conversations", "since", "' OR 1=1"),
                              ("/api/requests/x/chunks", "limit", "-1")):
        answer = api(proc, path, **{name: value})
        assert answer.status_code in (400, 404), (path, answer.status_code, answer.text[:200])
        assert answer.json()["type"] == "error"


def test_the_dashboard_answers_hostile_filters_with_a_page(served):
    proc, ids = served
    for params in ({"q": SQLI}, {"q": XSS}, {"domain": XSS, "model": SQLI}, {"since": "x"},
                   {"status": "<b>"}, {"page": "-1"}, {"page": "99999999999999999999"},
                   {"q": "a\x00b"}, {"limit": "1e9"}):
        page = requests.get(proc.url + "/dashboard/requests", params=params, timeout=20)
        assert page.status_code in (200, 400), (params, page.status_code)
        assert page.headers["content-type"].startswith("text/html")
        assert "Traceback" not in page.text
        assert "<script>window.__xss" not in page.text and "<img src=x" not in page.text
    for raw_id in EVIL_IDS:
        page = requests.get(proc.url + "/dashboard/requests/" + requests.utils.quote(raw_id),
                            timeout=20)
        assert page.status_code == 404, (raw_id, page.status_code)
        page = requests.get(proc.url + "/dashboard/conversations/"
                            + requests.utils.quote(raw_id, safe=""), timeout=20)
        assert page.status_code == 404, (raw_id, page.status_code)
    detail = requests.get(f"{proc.url}/dashboard/requests/{ids['xss']}", timeout=20)
    assert detail.status_code == 200
    # Escaped, so shown as text: the markup never reaches the page as markup.
    assert "&lt;script&gt;window.__xss=1" in detail.text
    assert "<script>window.__xss" not in detail.text and "<img src=x" not in detail.text
    assert "<svg onload" not in detail.text and 'hx-get="/x"' not in detail.text
