"""A fake Slack incoming-webhook server on 127.0.0.1, answering like the real one.

    slack = FakeSlack().start()
    ... point SLACK_WEBHOOK_URL at slack.url (or a domain's block at slack.url_for("team")) ...
    slack.wait_delivered(1); slack.delivered()[0].payload; slack.stop()

Real webhooks answer `200` with the text body `ok`, or `400 invalid_payload` (not JSON, not an
object), `400 no_text` (neither `text` nor `blocks`), `400 invalid_blocks` (blocks Slack would
not render: more than 50, a section text over 3000 characters, a header over 150), `404
no_service` (a path that is no webhook), `500 internal_error`, `429 rate_limited` with
`Retry-After`. Modes make it misbehave: ``HANG`` holds every request unanswered until the mode
changes (or `stop`), ``ERROR`` answers 500, ``RATE_LIMITED`` 429 with `Retry-After: 1`.
`script(...)` queues modes for the next requests only. Every request is recorded with its
arrival time (`time.monotonic()`), its payload and, once answered, its status.
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

NORMAL, HANG, ERROR, RATE_LIMITED = "normal", "hang", "error", "rate_limited"
WEBHOOK_PATH = "/services/T0FAKE/B0FAKE/"


@dataclass(eq=False)
class Delivery:
    """One POST the fake received."""

    path: str
    raw: bytes
    payload: Any
    received_at: float
    status: int | None = None   # None while held (HANG)
    answer: str = ""

    @property
    def text(self) -> str:
        """The whole payload as JSON, to search for a value anywhere in it."""
        return json.dumps(self.payload, ensure_ascii=False)


class FakeSlack:
    def __init__(self, mode: str = NORMAL, retry_after: int = 1):
        self.mode = mode
        self.retry_after = retry_after
        self.received: list[Delivery] = []
        self._script: deque[str] = deque()
        self._cond = threading.Condition()
        self._released = threading.Event()
        if mode != HANG:
            self._released.set()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # ---------------------------------------------------------------- life

    def start(self) -> FakeSlack:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        return self.url_for("global")

    def url_for(self, name: str) -> str:
        """Another webhook of the same fake: its path ends with `name`."""
        return f"http://127.0.0.1:{self._server.server_port}{WEBHOOK_PATH}{name}"

    # ---------------------------------------------------------------- behaviour

    def set_mode(self, mode: str) -> None:
        """Change how requests are answered; leaving HANG answers the held ones (in `mode`)."""
        with self._cond:
            self.mode = mode
        if mode == HANG:
            self._released.clear()
        else:
            self._released.set()

    def script(self, *modes: str) -> None:
        """Answer the next requests in these modes (HANG not allowed), then as `mode` says."""
        assert HANG not in modes, "use set_mode(HANG)"
        with self._cond:
            self._script.extend(modes)

    # ---------------------------------------------------------------- looking

    def delivered(self, name: str | None = None) -> list[Delivery]:
        """Messages answered `200 ok` (to webhook `name`, if given), in arrival order."""
        with self._cond:
            return [d for d in self.received if d.status == 200
                    and (name is None or d.path == WEBHOOK_PATH + name)]

    def wait_delivered(self, n: int, timeout: float = 10.0, name: str | None = None
                       ) -> list[Delivery]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.delivered(name)) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"fake Slack got {len(self.delivered(name))} "
                                         f"message(s), wanted {n}: {self.received}")
                self._cond.wait(left)
            return self.delivered(name)

    def wait_received(self, n: int, timeout: float = 10.0) -> list[Delivery]:
        """Wait for `n` requests, answered or not."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.received) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"fake Slack got {len(self.received)} request(s), "
                                         f"wanted {n}")
                self._cond.wait(left)
            return list(self.received)

    # ---------------------------------------------------------------- answering

    def _arrived(self, delivery: Delivery) -> str:
        with self._cond:
            self.received.append(delivery)
            self._cond.notify_all()
            return self._script.popleft() if self._script else self.mode

    def _answered(self, delivery: Delivery, status: int, answer: str) -> None:
        with self._cond:
            delivery.status, delivery.answer = status, answer
            self._cond.notify_all()

    def _verdict(self, delivery: Delivery, mode: str) -> tuple[int, str, dict[str, str]]:
        if mode == HANG:
            self._released.wait()
            with self._cond:
                mode = self._script.popleft() if self._script else self.mode
            mode = NORMAL if mode == HANG else mode
        if mode == ERROR:
            return 500, "internal_error", {}
        if mode == RATE_LIMITED:
            return 429, "rate_limited", {"Retry-After": str(self.retry_after)}
        if not delivery.path.startswith(WEBHOOK_PATH):
            return 404, "no_service", {}
        problem = payload_problem(delivery.payload)
        if problem:
            return 400, problem, {}
        return 200, "ok", {}

    def _handler_class(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802 — http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = None
                delivery = Delivery(self.path, raw, payload, time.monotonic())
                status, answer, headers = fake._verdict(delivery, fake._arrived(delivery))
                fake._answered(delivery, status, answer)
                data = answer.encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "text/html")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up waiting (a timeout while held)

            def log_message(self, *args):
                pass

        return Handler


def payload_problem(payload: Any) -> str | None:
    """The error Slack would answer for this payload, or None if it would post it."""
    if not isinstance(payload, dict):
        return "invalid_payload"
    blocks = payload.get("blocks")
    if not payload.get("text") and not blocks:
        return "no_text"
    if blocks is None:
        return None
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "invalid_blocks"
    for block in blocks:
        if not isinstance(block, dict) or "type" not in block:
            return "invalid_blocks"
        text = block.get("text")
        if block["type"] == "header" and (not isinstance(text, dict) or
                                          text.get("type") != "plain_text" or
                                          len(text.get("text", "")) > 150):
            return "invalid_blocks"
        if block["type"] == "section":
            fields = block.get("fields") or []
            if text is None and not fields:
                return "invalid_blocks"
            if text is not None and len(text.get("text", "")) > 3000:
                return "invalid_blocks"
            if len(fields) > 10 or any(len(f.get("text", "")) > 2000 for f in fields):
                return "invalid_blocks"
        if block["type"] == "context" and not 1 <= len(block.get("elements") or []) <= 10:
            return "invalid_blocks"
    return None
