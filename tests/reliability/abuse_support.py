"""Helpers of the bad-input and abuse tests: raw HTTP on a socket (for what `requests` refuses
to send), the proxy's error shapes, and the recorded row of an exchange read back through the
proxy's own JSON API."""

from __future__ import annotations

import json
import socket
import time

import requests

KEY = "sk-ant-api03-abuse-tests-0000000000000000000000-Zz09"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01",
           "content-type": "application/json"}
# Script and markup in every form a template could get wrong: element, attribute, URL,
# quotes that end an attribute, and an htmx attribute that would fetch something.
XSS = ("<script>window.__xss=1;alert('xss')</script>"
       "<img src=x onerror=\"window.__xss=2;alert(2)\">"
       "\"'><svg onload=alert(3)>javascript:alert(4)"
       "<div hx-get=\"/x\" hx-trigger=\"load\">hx</div>")
SQLI = ("'; DROP TABLE requests; -- \" OR 1=1 -- %_ \\x00 "
        "') UNION SELECT password_hash, name FROM dashboard_users --")


def message(text: str = "Hello", **extra) -> dict:
    return {"model": "claude-sonnet-4-5", "max_tokens": 64,
            "messages": [{"role": "user", "content": text}], **extra}


def assert_error(response: requests.Response, status: int, error_type: str) -> dict:
    """The proxy's own error: this status, Anthropic's JSON shape, and no traceback."""
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.headers.get("content-type", "").startswith("application/json"), \
        response.headers
    body = response.json()
    assert set(body) >= {"type", "error"} and body["type"] == "error", body
    assert body["error"]["type"] == error_type, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body


def recorded(base_url: str, request_id: str, timeout: float = 10.0) -> dict:
    """The exchange's row as `GET /api/requests/<id>` shows it, once the writer stored it."""
    deadline = time.monotonic() + timeout
    while True:
        answer = requests.get(f"{base_url}/api/requests/{request_id}", timeout=10)
        if answer.status_code == 200:
            return answer.json()
        assert answer.status_code == 404, (answer.status_code, answer.text[:300])
        if time.monotonic() > deadline:
            raise AssertionError(f"request {request_id} was never recorded")
        time.sleep(0.05)


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Send `data` as is on a new connection and read until the server closes it (the request
    should say `Connection: close`; a half-close would count as the client hanging up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):  # refused before the end was sent
            pass
        out = b""
        while True:
            try:
                piece = sock.recv(65536)
            except ConnectionResetError:
                break
            if not piece:
                break
            out += piece
    return out


def status_of(raw: bytes) -> int:
    line = raw.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/1."), raw[:200]
    return int(line.split()[1])


def header_of(raw: bytes, name: str) -> str:
    head = raw.partition(b"\r\n\r\n")[0].decode("latin-1")
    for line in head.split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    raise AssertionError(f"no {name} header in {head[:500]}")


def body_of(raw: bytes) -> bytes:
    head, _, body = raw.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        out, rest = b"", body
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2:]
        return out
    return body


def json_of(raw: bytes) -> dict:
    return json.loads(body_of(raw))
