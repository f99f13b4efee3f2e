"""A fake of Claude's OAuth token endpoint (`POST /v1/oauth/token`), for refresh and login.

Like the real one it rotates refresh tokens: a refresh token works once, so a proxy that
refreshes twice with the same token gets `invalid_grant` — exactly what the tests must catch.
`hold()` makes it hang (requests read, never answered) until `release()`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

CLIENT_ID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"


@dataclass
class TokenCall:
    body: dict[str, Any]
    received_at: float
    status: int = 0
    answer: dict[str, Any] = field(default_factory=dict)


@dataclass
class TokenError:
    """Answer this error instead of tokens (the real endpoint's shape)."""

    status: int = 400
    error: str = "invalid_grant"
    description: str = "Refresh token not found or invalid"


class FakeOAuth:
    """Serves the token endpoint on 127.0.0.1; `token_url` is what the proxy is pointed at."""

    def __init__(self, expires_in: int = 28800, delay_s: float = 0.0):
        self.expires_in = expires_in
        self.delay_s = delay_s  # how long each answer takes: lets concurrent refreshes pile up
        self.calls: list[TokenCall] = []
        self.errors: list[TokenError] = []
        self._valid_refresh: set[str] = set()
        self._codes: dict[str, str] = {}  # authorization code -> PKCE challenge
        self._lock = threading.Lock()
        self._gate = threading.Event()  # cleared by `hold`: requests hang until `release`
        self._gate.set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> FakeOAuth:
        self._thread.start()
        return self

    def hold(self) -> None:
        """Hang every request (read, then no answer) until `release` — a stuck endpoint."""
        self._gate.clear()

    def release(self) -> None:
        """Answer the held requests (and the next ones) normally."""
        self._gate.set()

    def held(self) -> list[TokenCall]:
        """Calls received and not answered yet."""
        return [c for c in self.calls if not c.status]

    def stop(self) -> None:
        self._gate.set()
        self._server.shutdown()
        self._server.server_close()

    @property
    def token_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}/v1/oauth/token"

    def issue_refresh_token(self) -> str:
        """A refresh token the endpoint will accept once (put it in a credential file)."""
        token = "sk-ant-ort01-" + secrets.token_urlsafe(24)
        with self._lock:
            self._valid_refresh.add(token)
        return token

    def expect_code(self, code: str, challenge: str) -> None:
        """Accept this authorization code once, for the verifier matching `challenge`."""
        self._codes[code] = challenge

    def refresh_calls(self) -> list[TokenCall]:
        return [c for c in self.calls if c.body.get("grant_type") == "refresh_token"]

    def _answer(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self._gate.wait()
        if self.delay_s:
            time.sleep(self.delay_s)
        with self._lock:
            if self.errors:
                error = self.errors.pop(0)
                return error.status, {"error": error.error,
                                      "error_description": error.description}
            if body.get("client_id") != CLIENT_ID:
                return 400, {"error": "invalid_client", "error_description": "Unknown client"}
            grant = body.get("grant_type")
            if grant == "refresh_token":
                if body.get("refresh_token") not in self._valid_refresh:
                    return 400, {"error": "invalid_grant",
                                 "error_description": "Refresh token not found or invalid"}
                self._valid_refresh.discard(body["refresh_token"])  # rotated: single use
            elif grant == "authorization_code":
                challenge = self._codes.pop(body.get("code", ""), None)
                verifier = body.get("code_verifier", "")
                digest = base64.urlsafe_b64encode(
                    hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
                if challenge is None or digest != challenge:
                    return 400, {"error": "invalid_grant",
                                 "error_description": "Invalid authorization code"}
            else:
                return 400, {"error": "unsupported_grant_type",
                             "error_description": f"Unsupported grant type {grant!r}"}
            refresh = "sk-ant-ort01-" + secrets.token_urlsafe(24)
            self._valid_refresh.add(refresh)
        return 200, {
            "token_type": "Bearer",
            "access_token": "sk-ant-oat01-" + secrets.token_urlsafe(24),
            "expires_in": self.expires_in,
            "refresh_token": refresh,
            "scope": "user:inference user:profile",
            "organization": {"uuid": "0f7c2d1e-org", "name": "Fake Org"},
            "account": {"uuid": "5b8e1c6a-acct", "email_address": "dev@example.com"},
        }

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 — http.server's naming
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                call = TokenCall(body if isinstance(body, dict) else {}, time.monotonic())
                with fake._lock:
                    fake.calls.append(call)
                if self.path != "/v1/oauth/token":
                    status, answer = 404, {"error": "not_found"}
                elif self.headers.get("Content-Type", "").split(";")[0] != "application/json":
                    status, answer = 415, {"error": "invalid_request",
                                           "error_description": "JSON body expected"}
                else:
                    status, answer = fake._answer(call.body)
                call.status, call.answer = status, answer
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        return Handler
