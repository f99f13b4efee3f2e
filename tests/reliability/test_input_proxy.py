"""Bad input on the proxy routes, sent to a real `python wsgi.py` (gevent, SQLite) in front of the
fake upstream: each gets Anthropic's error shape or a correct relay — never a 500 or a
traceback — the server keeps serving, and the recorded row can be read back."""

from __future__ import annotations

import json

import pytest
import requests

from app.proxy.inbound import MAX_JSON_DEPTH
from tests.fakes.upstream import RawReply, Reply, build_sse, text_block
from tests.reliability.abuse_support import (
    HEADERS,
    assert_error,
    header_of,
    json_of,
    message,
    raw_exchange,
    recorded,
    status_of,
)
from tests.support import ProxyProcess

LIMIT = 65536


@pytest.fixture(scope="module")
def abused(fake_upstream_server, tmp_path_factory):
    """One proxy for the module, with a small body limit so that "huge" stays cheap."""
    proc = ProxyProcess(fake_upstream_server.base_url, tmp_path_factory.mktemp("abused"),
                        {"MAX_REQUEST_BYTES": str(LIMIT), "STORAGE_BATCH_INTERVAL_MS": "20"})
    yield proc
    proc.stop()


@pytest.fixture
def proxy_under_abuse(abused, upstream):
    abused.assert_alive()
    since = len(abused.lines)
    yield abused
    abused.assert_alive()
    # Still serving a normal request after whatever the test threw at it.
    upstream.reset()
    assert requests.post(abused.url + "/v1/messages", json=message(), headers=HEADERS,
                         timeout=10).status_code == 200
    assert_no_traceback(abused.lines[since:])


def assert_no_traceback(lines: list[str]) -> None:
    at = next((i for i, line in enumerate(lines) if "Traceback" in line), None)
    assert at is None, "\n".join(line[:2000] for line in lines[at:at + 30])


def nested(depth: int) -> bytes:
    """A messages body whose content is `depth` levels deep in all."""
    inner = depth - 3  # body {} > messages [] > message {}, then `inner` nested lists
    return (b'{"model":"m","messages":[{"role":"user","content":' + b"[" * inner
            + b"]" * inner + b"}]}")


BAD_BODIES = {
    "malformed": b'{"model": "claude", "messages": [',
    "trailing garbage": b'{"model": "claude"} {"x": 1}',
    "array": b'[{"model": "claude"}]',
    "string": b'"hello"',
    "null": b"null",
    "number": b"1e999999",
    "empty": b"",
    "invalid utf-8": b'{"model": "claude-\xff\xfe", "messages": []}',
    "encoded surrogate": b'{"model": "\xed\xa0\x80"}',
    "truncated": b'{"model": "m", "max_tokens": Infinity,',
    f"nested {MAX_JSON_DEPTH + 1}": nested(MAX_JSON_DEPTH + 1),
    "nested past the parser": nested(5000),
}


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
@pytest.mark.parametrize("name", list(BAD_BODIES))
def test_bad_bodies_are_refused_with_400_and_recorded(proxy_under_abuse, upstream, path, name):
    sent = requests.post(proxy_under_abuse.url + path, data=BAD_BODIES[name], headers=HEADERS,
                         timeout=10)
    assert_error(sent, 400, "invalid_request_error")
    assert upstream.received == []  # refused before the upstream is contacted
    row = recorded(proxy_under_abuse.url, sent.headers["x-nexus-request-id"])
    assert (row["status"], row["outcome"], row["error_type"]) == (
        400, "failed", "invalid_request_error")
    assert row["path"] == path and row["conversation_id"] is None


def test_depth_limit_lets_the_deepest_allowed_body_through(proxy_under_abuse, upstream):
    sent = requests.post(proxy_under_abuse.url + "/v1/messages", data=nested(MAX_JSON_DEPTH),
                         headers=HEADERS, timeout=10)
    assert sent.status_code == 200, sent.text[:300]
    assert len(upstream.received) == 1
    row = recorded(proxy_under_abuse.url, sent.headers["x-nexus-request-id"])
    assert row["status"] == 200 and row["request_body"]["model"] == "m"
    page = requests.get(f"{proxy_under_abuse.url}/dashboard/requests/{row['id']}", timeout=10)
    assert page.status_code == 200


def test_wrong_types_in_a_json_object_are_relayed(proxy_under_abuse, upstream):
    """Type checking is the API's job: the proxy forwards what it cannot classify, records it,
    and keeps its own columns well-typed."""
    body = {"model": 5, "max_tokens": "many", "stream": "yes", "system": 3, "tools": 7,
            "metadata": {"user_id": 5}, "messages": [1, None, {"role": 5, "content": 7},
                                                     {"role": "user", "content": [1, {"type": 5}]}]}
    sent = requests.post(proxy_under_abuse.url + "/v1/messages", json=body, headers=HEADERS,
                         timeout=10)
    assert sent.status_code == 200
    assert json.loads(upstream.received[0].body) == body  # forwarded unchanged
    row = recorded(proxy_under_abuse.url, sent.headers["x-nexus-request-id"])
    assert row["status"] == 200 and row["request_body"] == body
    assert row["stream"] is False  # only `true` asks for a stream
    assert row["request_type"] in ("inference", "query_evaluation", "quota")
    assert row["model"] is None or isinstance(row["model"], str)


def test_a_body_over_the_limit_gets_413(proxy_under_abuse, upstream):
    big = json.dumps(message("x" * (LIMIT + 1))).encode()
    sent = requests.post(proxy_under_abuse.url + "/v1/messages", data=big, headers=HEADERS,
                         timeout=10)
    assert_error(sent, 413, "request_too_large")
    assert sent.headers.get("connection", "").lower() == "close"
    # Chunked, so no Content-Length announces it: counted while reading.
    chunked = requests.post(proxy_under_abuse.url + "/v1/messages",
                            data=iter([big[i:i + 8192] for i in range(0, len(big), 8192)]),
                            headers=HEADERS, timeout=10)
    assert_error(chunked, 413, "request_too_large")
    # A Content-Length far beyond it is refused before a byte of the body is read.
    head = (f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            f"\r\nx-api-key: {HEADERS['x-api-key']}\r\nContent-Length: {10**15}\r\n\r\n")
    raw = raw_exchange(proxy_under_abuse.port, head.encode())
    assert status_of(raw) == 413 and json_of(raw)["error"]["type"] == "request_too_large"
    assert upstream.received == []
    row = recorded(proxy_under_abuse.url, sent.headers["x-nexus-request-id"])
    assert (row["status"], row["error_type"]) == (413, "request_too_large")


@pytest.mark.parametrize("length", ["abc", "-5", "1e3"])
def test_a_content_length_that_is_no_number_gets_400(proxy_under_abuse, upstream, length):
    head = (f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
            f"\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n{{}}")
    raw = raw_exchange(proxy_under_abuse.port, head.encode())
    assert status_of(raw) == 400
    assert upstream.received == []


def test_huge_headers_are_refused_and_the_server_lives_on(proxy_under_abuse, upstream):
    one_huge = requests.post(proxy_under_abuse.url + "/v1/messages", json=message(),
                             headers={**HEADERS, "x-big": "a" * 100_000}, timeout=10)
    assert_error(one_huge, 400, "invalid_request_error")
    long_line = requests.post(proxy_under_abuse.url + "/v1/messages?" + "q" * 20_000,
                              json=message(), headers=HEADERS, timeout=10)
    assert long_line.status_code in (400, 414)
    assert upstream.received == []


def test_too_many_headers_get_a_json_error_and_no_traceback(abused, upstream):
    since = len(abused.lines)
    many = requests.post(abused.url + "/v1/messages", json=message(),
                         headers={**HEADERS, **{f"x-h{i}": "v" for i in range(150)}}, timeout=10)
    assert many.status_code in (400, 431)
    assert upstream.received == []
    abused.assert_alive()
    assert_no_traceback(abused.lines[since:])
    assert_error(many, many.status_code, "invalid_request_error")


@pytest.mark.parametrize("prefix", ["/v1/messages", "/v1/models", "/api/requests", "/dashboard/",
                                    "/health"])
def test_an_unknown_method_gets_405(proxy_under_abuse, upstream, prefix):
    answer = requests.request("BREW", proxy_under_abuse.url + prefix, headers=HEADERS,
                              timeout=10)
    assert answer.status_code == 405
    if prefix.startswith(("/v1", "/api")):
        assert_error(answer, 405, "invalid_request_error")
    assert upstream.received == []


@pytest.mark.parametrize("host", [
    "../../etc/passwd", "..%2f..%2fetc%2fpasswd", "a/b\\c", "..", ".", "/etc/passwd",
    "evil.example/../../x", "C:\\windows", "%00", "\u00e9vil.example"])
def test_path_traversal_in_the_host_header_reads_no_file(proxy_under_abuse, upstream, host):
    """The domain names a credential file: one that could leave the folder is refused (401,
    Anthropic-shaped) and recorded under the name sent; nothing outside is read or made."""
    head = (f"POST /v1/messages HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"x-api-key: {HEADERS['x-api-key']}\r\nConnection: close\r\n")
    body = json.dumps(message()).encode()
    raw = raw_exchange(proxy_under_abuse.port, head.encode("utf-8") + f"Content-Length: "
                       f"{len(body)}\r\n\r\n".encode() + body)
    status = status_of(raw)
    assert status in (200, 400, 401), raw[:300]
    if status != 200:
        assert json_of(raw)["type"] == "error"
        assert upstream.received == []
    if host in (".", ".."):  # no valid host name at all: refused before it is an exchange
        assert status == 400 and b"x-nexus-request-id" not in raw.lower()
        return
    row = recorded(proxy_under_abuse.url, header_of(raw, "x-nexus-request-id"))
    # Recorded under the name sent (a UTF-8 Host read back from WSGI's latin-1, no mojibake).
    assert row["domain"] == host.lower()
    assert row["status"] == status


@pytest.mark.parametrize("path", [
    "/v1/../api/requests", "/v1/%2e%2e/api/requests", "/v1/messages/..%2f..%2fhealth",
    "/v1/./messages", "/v1/%2E/messages"])
def test_dot_segments_in_the_path_are_refused(proxy_under_abuse, upstream, path):
    raw = raw_exchange(proxy_under_abuse.port, (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nx-api-key: {HEADERS['x-api-key']}\r\n"
        "Connection: close\r\n\r\n").encode())
    assert status_of(raw) in (400, 404), raw[:300]
    assert json_of(raw)["type"] == "error"
    assert upstream.received == []


def test_invalid_utf8_outside_the_body_is_recorded_readably(proxy_under_abuse, upstream):
    """Header values and query strings are bytes on the wire; stored and shown, never fatal."""
    body = json.dumps(message()).encode()
    head = (b"POST /v1/messages?beta=\xff\xfe&x=%ff HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nx-api-key: " + HEADERS["x-api-key"].encode()
            + b"\r\nUser-Agent: agent-\xff\xfe-\xc3\x28\r\nx-claude-code-session-id: s\xe9\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
    raw = raw_exchange(proxy_under_abuse.port, head + body)
    assert status_of(raw) in (200, 400), raw[:300]
    request_id = header_of(raw, "x-nexus-request-id")
    row = recorded(proxy_under_abuse.url, request_id)
    assert row["user_agent"].startswith("agent-")
    page = requests.get(f"{proxy_under_abuse.url}/dashboard/requests/{request_id}", timeout=10)
    assert page.status_code == 200


@pytest.mark.parametrize("stream", [False, True])
def test_escaped_surrogates_and_nul_in_strings_are_relayed_and_recorded(proxy_under_abuse,
                                                                       upstream, stream):
    """Valid JSON that no database text column can hold as such (a lone surrogate, U+0000):
    forwarded byte for byte, recorded, and readable in the API and the dashboard."""
    # The fake cannot build replies around such text itself: the answer is scripted as bytes.
    answer = b"".join(build_sse({"model": "m"}, Reply(message_id="msg_abuse", content=[
        text_block("answer with SURROGATE and NUL in it")]))).replace(
            b"SURROGATE", b"\\udfff").replace(b"NUL", b"\\u0000") if stream else (
        b'{"id":"msg_abuse","type":"message","role":"assistant","model":"m\\ud800",'
        b'"content":[{"type":"text","text":"x\\udfff\\u0000"}],"stop_reason":"end_turn",'
        b'"usage":{"input_tokens":1,"output_tokens":1}}')
    upstream.script(RawReply(headers=[("content-type", "text/event-stream" if stream else
                                       "application/json")], body=answer))
    body = (b'{"model":"m\\ud800","stream":' + (b"true" if stream else b"false")
            + b',"messages":[{"role":"user","content":"a\\udfff\\u0000b"}]}')
    sent = requests.post(proxy_under_abuse.url + "/v1/messages", data=body, headers=HEADERS,
                         timeout=10)
    assert sent.status_code == 200
    assert upstream.received[0].body == body and sent.content == answer
    row = recorded(proxy_under_abuse.url, sent.headers["x-nexus-request-id"])
    assert row["status"] == 200 and row["outcome"] == "completed"
    page = requests.get(f"{proxy_under_abuse.url}/dashboard/requests/{row['id']}", timeout=10)
    assert page.status_code == 200


def test_the_dashboard_shows_a_refused_very_deep_body(abused, upstream):
    proxy_under_abuse = abused  # without the fixture's log check: the failure logs a traceback
    sent = requests.post(proxy_under_abuse.url + "/v1/messages", data=nested(5000),
                         headers=HEADERS, timeout=10)
    assert_error(sent, 400, "invalid_request_error")
    row = recorded(proxy_under_abuse.url, sent.headers["x-nexus-request-id"])
    assert isinstance(row["request_body"], str)  # shown as stored text by the API
    page = requests.get(f"{proxy_under_abuse.url}/dashboard/requests/{row['id']}", timeout=10)
    assert page.status_code == 200
