"""The JSON API's parameter parsing and access rule, without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from werkzeug.datastructures import Headers

from app.api import access, params
from app.errors import AuthenticationFailed
from app.storage.queries import RequestFilter
from tests.unit.params_support import refused

NOW = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)
KEY = "k" * 24


def parsed(**args) -> RequestFilter:
    return params.request_filter({k: [v] if isinstance(v, str) else v for k, v in args.items()},
                                 now=NOW)



def test_no_parameters_filter_nothing():
    assert parsed() == RequestFilter()
    assert parsed(domain="", account=" ", q="") == RequestFilter()


def test_values_map_to_filters():
    assert parsed(domain=" Team.Example.COM ", account="acc_1", model="claude-sonnet-4-5",
                  type="inference", conversation_id="c1", q=" two words ") == RequestFilter(
        domain="team.example.com", account="acc_1", model="claude-sonnet-4-5",
        request_type="inference", conversation_id="c1", text=" two words ")


@pytest.mark.parametrize("raw, expected", [
    ("24h", NOW - timedelta(hours=24)),
    ("7d", NOW - timedelta(days=7)),
    ("30m", NOW - timedelta(minutes=30)),
    ("2W", NOW - timedelta(weeks=2)),
    ("2025-03-01", datetime(2025, 3, 1, tzinfo=UTC)),
    ("2025-03-01T10:30:00", datetime(2025, 3, 1, 10, 30, tzinfo=UTC)),
    ("2025-03-01T10:30:00Z", datetime(2025, 3, 1, 10, 30, tzinfo=UTC)),
    ("2025-03-01T12:30:00+02:00", datetime(2025, 3, 1, 10, 30, tzinfo=UTC)),
    ("2025-03-01 10:30:00.123456", datetime(2025, 3, 1, 10, 30, 0, 123456, tzinfo=UTC)),
])
def test_times(raw, expected):
    since = parsed(since=raw).since
    assert since == expected and since.tzinfo is not None
    assert since.utcoffset() == timedelta(0)
    assert parsed(until=raw).until == expected


@pytest.mark.parametrize("raw", ["yesterday", "24", "h", "-1d", "1y", "2025-02-30",
                                 "0001-01-01T00:00:00+01:00", "9999999d", "1e3h"])
def test_bad_times(raw):
    refused(lambda: parsed(since=raw), "'since'")


def test_since_after_until():
    refused(lambda: parsed(since="2025-03-02", until="2025-03-01"), "'since'", "'until'")
    assert parsed(since="2025-03-01", until="2025-03-01").since is not None


@pytest.mark.parametrize("raw, expected", [("200", "200"), ("404", "404"), ("4xx", "4xx"),
                                           ("5XX", "5xx"), ("error", "error"),
                                           ("Client_Disconnected", "client_disconnected")])
def test_status_forms(raw, expected):
    assert parsed(status=raw).status == expected


@pytest.mark.parametrize("raw", ["20", "2000", "600", "6xx", "xx", "4x", "failed", "200x"])
def test_bad_status(raw):
    refused(lambda: parsed(status=raw), "'status'")


def test_unknown_repeated_and_oversized_parameters():
    refused(lambda: parsed(acount="a"), "'acount'", "domain")
    refused(lambda: parsed(domain=["a", "b"]), "'domain'", "more than once")
    refused(lambda: parsed(q="x" * 1001), "'q'")
    assert parsed(q="x" * 1000).text == "x" * 1000
    refused(lambda: parsed(model="m" * 501), "'model'")
    refused(lambda: parsed(q="a\x00"), "'q'", "NUL")


def test_paging():
    assert params.list_paging({}) == (50, 0)
    assert params.list_paging({"limit": ["10"], "offset": ["20"], "domain": ["d"]}) == (10, 20)
    assert params.list_paging({"limit": ["501"]}) == (500, 0)
    assert params.list_paging({"limit": ["0"]}) == (0, 0)
    assert params.chunk_paging({}) == (1000, 0)
    assert params.chunk_paging({"limit": ["20000"]}) == (10000, 0)
    for bad in ("-1", "1.0", "ten", "١٢"):  # Arabic-Indic digits are digits to str.isdigit
        refused(lambda bad=bad: params.list_paging({"limit": [bad]}), "'limit'")
    refused(lambda: params.list_paging({"offset": [str(2**31)]}), "'offset'")
    refused(lambda: params.chunk_paging({"domain": ["d"]}), "'domain'")


@pytest.mark.parametrize("raw, expected", [
    ("3f2b1c4e-8d7a-4e6f-9a0b-1c2d3e4f5a6b", "3f2b1c4e-8d7a-4e6f-9a0b-1c2d3e4f5a6b"),
    ("3F2B1C4E-8D7A-4E6F-9A0B-1C2D3E4F5A6B", "3f2b1c4e-8d7a-4e6f-9a0b-1c2d3e4f5a6b"),
    ("3f2b1c4e8d7a4e6f9a0b1c2d3e4f5a6b", None),
    ("../../etc/passwd", None),
    ("3f2b1c4e-8d7a-4e6f-9a0b-1c2d3e4f5a6b' OR '1'='1", None),
    ("", None),
])
def test_request_ids(raw, expected):
    assert params.request_id(raw) == expected


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1", True), ("127.5.6.7", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.0.0.1", False), ("192.0.2.2", False), ("::ffff:192.0.2.2", False), ("fe80::1", False),
    ("128.0.0.1", False), ("", False), (None, False), ("localhost", False), ("garbage", False),
])
def test_loopback(address, loopback):
    assert access.is_loopback(address) is loopback


def test_without_a_key_only_loopback_is_answered():
    access.check("127.0.0.1", Headers(), None)
    access.check("::1", Headers(), None)
    for address in ("10.1.2.3", "2001:db8::1", None):
        with pytest.raises(AuthenticationFailed) as caught:
            # A client cannot claim to be local: forwarding headers are not read.
            access.check(address, Headers({"X-Forwarded-For": "127.0.0.1",
                                           "X-Real-IP": "127.0.0.1"}), None)
        assert "DASHBOARD_API_KEY" in caught.value.message
        assert caught.value.headers["WWW-Authenticate"].startswith("Bearer")


def test_with_a_key_everyone_presents_it():
    for address in ("127.0.0.1", "10.1.2.3"):
        for headers in ({"Authorization": f"Bearer {KEY}"}, {"X-Dashboard-Key": KEY},
                        {"authorization": f"BEARER  {KEY} "}):
            access.check(address, Headers(headers), KEY)
        for headers, word in (({}, "Missing"), ({"Authorization": KEY}, "Missing"),
                              ({"x-api-key": KEY}, "Missing"),
                              ({"Authorization": f"Bearer {KEY}x"}, "Invalid"),
                              ({"X-Dashboard-Key": "é" + KEY}, "Invalid")):
            with pytest.raises(AuthenticationFailed) as caught:
                access.check(address, Headers(headers), KEY)
            assert word in caught.value.message
