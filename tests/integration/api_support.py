"""Serving the JSON API for tests: a real socket (the access rule needs the peer address), a
dataset covering every filter, and small assertion helpers. Fixtures are in conftest.py."""

from __future__ import annotations

import json
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import requests
from werkzeug.serving import make_server

from app import api, create_app
from tests.factories import (
    insert_chunks,
    insert_requests,
    message_reply,
    messages_body,
    request_row,
    sse_event,
)

KEY = "dashboard-key-0123456789abcdef"
HOSTILE = "Is it 100% sure? snake_case_name, O'Reilly said \"quoted\"; '; DROP TABLE requests; " \
          "-- C:\\temp"
ISO = "%Y-%m-%dT%H:%M:%S.%fZ"


def with_api(app):
    """The app with the JSON API registered, until create_app registers it itself."""
    if "api" not in app.blueprints:
        api.init_app(app)
    return app


def non_loopback_address() -> str | None:
    """A local address other clients would come from, if this machine has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


class Server:
    """An app on a threaded werkzeug server listening on every IPv4 address."""

    def __init__(self, app):
        self.app = app
        self.server = make_server("0.0.0.0", 0, app, threaded=True)
        self.port = self.server.server_port
        self.http = requests.Session()
        self.http.trust_env = False  # no HTTP_PROXY detour: the peer address is the point
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def get(self, path: str, host: str = "127.0.0.1", **kwargs) -> requests.Response:
        return self.http.get(self.url(path, host), timeout=10, **kwargs)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.http.close()


@dataclass
class Dataset:
    rows: dict[str, dict]
    events: list[str]

    def ids(self, *names: str) -> set[str]:
        return {self.rows[name]["id"] for name in names}

    @property
    def rows_by_id(self) -> dict[str, dict]:
        return {row["id"]: row for row in self.rows.values()}

    def newest_first(self) -> list[str]:
        ordered = sorted(self.rows.values(), key=lambda r: (r["received_at"], r["id"]),
                         reverse=True)
        return [row["id"] for row in ordered]


def build_dataset(now: datetime) -> Dataset:
    """Rows that each filter tells apart, times relative to `now`; chunks for one stream."""
    ago = lambda **kw: now - timedelta(**kw)  # noqa: E731
    conv = str(uuid.uuid4())
    tie = ago(hours=5)
    rows = {
        "stream": request_row(
            received_at=ago(minutes=10), stream=True, first_token_ms=950.0, conversation_id=conv,
            branch_id="main", session_id="sess-1", tool_call_count=1, tool_names=["Bash"],
            request_body=messages_body("hello world", stream=True),
            response_body=message_reply("Streamed answer"), cost_usd=Decimal("1.234567")),
        "haiku": request_row(
            received_at=ago(minutes=20), model="claude-haiku-4-5",
            request_type="query_evaluation", conversation_id=conv, branch_id="main",
            request_body=messages_body("apple cider recipe", model="claude-haiku-4-5")),
        "ratelimited": request_row(
            received_at=ago(hours=2), domain="other.example.com", account_id="acc_other",
            status="429", response_body=json.dumps({"type": "error", "error": {
                "type": "rate_limit_error", "message": "Number of requests exceeded"}})),
        "failed": request_row(
            received_at=ago(days=2), domain="other.example.com", account_id="acc_other",
            model="claude-opus-4-1", status="502", outcome="failed", error_type="api_error",
            error_message="upstream unreachable 50% of the time", response_body=None,
            cost_usd=None),
        "hangup": request_row(
            received_at=ago(days=3), domain="localhost:3000", account_id=None,
            request_type="quota", status="client_disconnected", outcome="client_disconnected",
            error_type="client_disconnected", error_message="client closed the connection"),
        "hostile": request_row(received_at=ago(days=10), request_body=messages_body(HOSTILE)),
        "tie_a": request_row(received_at=tie, id="00000000-0000-4000-8000-00000000000a"),
        "tie_b": request_row(received_at=tie, id="00000000-0000-4000-8000-00000000000b"),
        "count": request_row(
            received_at=ago(hours=6), path="/v1/messages/count_tokens", request_type=None,
            response_body=json.dumps({"input_tokens": 7})),
        "notjson": request_row(
            received_at=ago(hours=7), method="GET", path="/v1/nothing", status="404",
            request_type=None, model=None, request_body="plain text, not JSON",
            response_body="{truncated", response_truncated=True),
        "hung_499": request_row(
            received_at=ago(hours=8), status="499", outcome="client_disconnected",
            stream=True),
    }
    events = [
        sse_event("message_start", {"type": "message_start", "message": {"id": "msg_1"}}),
        sse_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": "text_delta", "text": "Str"}}),
        ": keep-alive comment\n\n",
        "event: ping\ndata: not json\n\n",
        sse_event("message_stop", {"type": "message_stop"}),
    ]
    insert_requests(*rows.values())
    insert_chunks(rows["stream"], events)
    return Dataset(rows, events)


def make_app(database_url: str, tmp_path, **settings):
    """An app with the JSON API over `database_url` (which it neither connects nor migrates)."""
    return with_api(create_app({"DATABASE_URL": database_url,
                                "CREDENTIALS_DIR": str(tmp_path / "credentials"), **settings},
                               env_file=None))


def listed(server, **params) -> dict:
    response = server.get("/api/requests", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["Cache-Control"] == "no-store"
    return response.json()


def listed_ids(server, **params) -> list[str]:
    return [item["id"] for item in listed(server, **params)["requests"]]


def assert_error(response, status: int, error_type: str, *words: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == error_type
    for word in words:
        assert word in body["error"]["message"], body
    return body["error"]["message"]
