"""What the proxy answers itself, never contacting the upstream: bad requests, oversize bodies,
CORS preflight, the descriptor, unknown routes — all in Anthropic's error shape."""

from __future__ import annotations

import socket

import requests

ERROR_KEYS = {"type", "error"}
KEY = "sk-ant-api03-local-answers-0000"


def assert_anthropic_error(response, status, error_type):
    assert response.status_code == status
    body = response.json()
    assert set(body) == ERROR_KEYS and body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert body["error"]["message"]


def test_malformed_json_is_400_and_upstream_untouched(proxy, upstream):
    for path in ("/v1/messages", "/v1/messages/count_tokens"):
        response = requests.post(proxy.url + path, data=b'{"model": "x", "messages": [',
                                 headers={"content-type": "application/json"}, timeout=10)
        assert_anthropic_error(response, 400, "invalid_request_error")
        assert response.headers["x-nexus-request-id"]
    for body in (b"[1, 2]", b"\xff\xfe{}", b""):
        response = requests.post(proxy.url + "/v1/messages", data=body, timeout=10)
        assert_anthropic_error(response, 400, "invalid_request_error")
    assert upstream.received == []


def test_oversized_body_is_413_without_reading_it(start_proxy, upstream):
    proxy = start_proxy(MAX_REQUEST_BYTES="1000")
    response = requests.post(proxy.url + "/v1/messages", data=b"x" * 1001, timeout=10)
    assert_anthropic_error(response, 413, "request_too_large")
    assert "1000" in response.json()["error"]["message"]

    def chunks():
        for _ in range(20):
            yield b'{"pad": "' + b"y" * 100 + b'"}'

    response = requests.post(proxy.url + "/v1/messages", data=chunks(), timeout=10)
    assert_anthropic_error(response, 413, "request_too_large")
    ok = requests.post(proxy.url + "/v1/messages", timeout=10, headers={"x-api-key": KEY},
                       json={"model": "m", "max_tokens": 1, "messages": []})
    assert ok.status_code == 200
    assert len(upstream.received) == 1


def test_declared_huge_body_is_refused_before_it_is_sent(start_proxy, upstream):
    proxy = start_proxy(MAX_REQUEST_BYTES="1000")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 5000000000\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):  # the proxy closes: the rest is never read
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413")
    assert b"request_too_large" in answer
    assert upstream.received == []


def test_dot_segments_are_refused(proxy, upstream):
    for path in ("/v1/../admin", "/v1/%2e%2e/admin", "/v1/messages/./x"):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
        assert answer.split(b" ", 2)[1] in (b"400", b"404"), (path, answer[:200])
    assert upstream.received == []


def test_cors_preflight_answered_locally(proxy, upstream):
    response = requests.options(proxy.url + "/v1/messages", timeout=5, headers={
        "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-api-key, anthropic-version, content-type"})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert response.headers["Access-Control-Allow-Headers"] == (
        "x-api-key, anthropic-version, content-type")
    assert upstream.received == []
    answer = requests.post(proxy.url + "/v1/messages", timeout=10,
                           headers={"Origin": "https://app.example", "x-api-key": KEY},
                           json={"model": "m", "max_tokens": 1, "messages": []})
    assert answer.headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "x-nexus-request-id" in answer.headers["Access-Control-Expose-Headers"]


def test_root_descriptor_and_head(proxy, upstream):
    head = requests.head(proxy.url + "/", timeout=5)
    assert head.status_code == 200
    body = requests.get(proxy.url + "/", timeout=5).json()
    assert body["name"] == "Claude Nexus Proxy" and body["version"]
    assert body["links"]["messages"] == "/v1/messages"
    assert upstream.received == []


def test_unknown_routes_and_methods(proxy, upstream):
    response = requests.get(proxy.url + "/nope", timeout=5)
    assert_anthropic_error(response, 404, "not_found_error")
    response = requests.request("PROPFIND", proxy.url + "/v1/messages", timeout=5)
    assert_anthropic_error(response, 405, "invalid_request_error")
    assert upstream.received == []


def test_health_endpoints(proxy):
    assert requests.get(proxy.url + "/health/live", timeout=5).json() == {"status": "ok"}
    assert requests.get(proxy.url + "/health/ready", timeout=5).json() == {"status": "ready"}
    health = requests.get(proxy.url + "/health", timeout=5).json()
    assert health["status"] in ("ok", "degraded")
    assert health["version"]
    assert health["in_flight"] == 0


def test_expect_100_continue_is_answered_by_the_proxy(proxy, upstream):
    body = b'{"model": "m", "max_tokens": 1, "messages": [], "pad": "' + b"p" * 4000 + b'"}'
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                     b"x-api-key: sk-ant-api03-expect-test\r\n"
                     + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    received = upstream.received[0]
    assert received.body == body
    assert received.header("expect") is None
