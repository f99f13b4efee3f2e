"""A faithful fake of the Anthropic Messages API upstream, for tests and the benchmark.

    fake = FakeUpstream().start()
    fake.script(Reply(content=[text_block("hi")]), ErrorReply(529), StreamFailure(mode="eof"))
    ... point the code under test at fake.base_url ...
    fake.wait_for(3); fake.received[0].headers; fake.stop()

Each request (any path) pops the next scripted behaviour; with the script empty
the ``default`` behaviour (a plain ``Reply()``) applies. A ``Reply`` renders the
route's normal success: a message / event stream on ``POST /v1/messages``, the
token count on ``/v1/messages/count_tokens``, the model list on ``GET /v1/models``
and a 404 ``not_found_error`` anywhere else. Payload shapes live in ``messages`` and
``sse`` (headers in ``api_headers``); ``handler`` renders them on the wire.

Standalone: ``python -m tests.fakes.upstream --port 8787 [--event-delay-ms 50]
[--events 500]`` serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import collections
import signal
import socket
import sys
import threading
from http.server import ThreadingHTTPServer

from tests.fakes.api_headers import unified_headers
from tests.fakes.behaviours import (
    Behaviour,
    ErrorReply,
    RawReply,
    Reply,
    Reset,
    Stall,
    StreamFailure,
)
from tests.fakes.handler import Handler
from tests.fakes.messages import (
    DEFAULT_TEXT,
    build_message,
    count_input_tokens,
    redacted_thinking_block,
    server_tool_blocks,
    text_block,
    text_of_deltas,
    thinking_block,
    tool_use_block,
)
from tests.fakes.received import Received
from tests.fakes.sse import build_sse, fold_sse, parse_sse

__all__ = [
    "DEFAULT_TEXT",
    "ErrorReply",
    "FakeUpstream",
    "RawReply",
    "Received",
    "Reply",
    "Reset",
    "Stall",
    "StreamFailure",
    "build_message",
    "build_sse",
    "count_input_tokens",
    "fold_sse",
    "parse_sse",
    "redacted_thinking_block",
    "server_tool_blocks",
    "text_block",
    "text_of_deltas",
    "thinking_block",
    "tool_use_block",
    "unified_headers",
]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024  # listen backlog: bursts of hundreds of connects
    fake: FakeUpstream


class FakeUpstream:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        default: Behaviour | None = None,
        record: bool = True,
    ) -> None:
        self.host, self.port = host, port
        self.default: Behaviour = default if default is not None else Reply()
        self.record = record  # False keeps memory flat in long benchmark runs
        self.received: list[Received] = []
        self._queue: collections.deque[Behaviour] = collections.deque()
        self._cond = threading.Condition()
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> FakeUpstream:
        self._server = _Server((self.host, self.port), Handler)
        self._server.fake = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        # End open connections (idle, streaming or stalled) so their threads exit now.
        with self._cond:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ scripting

    def script(self, *behaviours: Behaviour) -> FakeUpstream:
        with self._cond:
            self._queue.extend(behaviours)
        return self

    def reset(self) -> None:
        """Forget the script and the received log (the default behaviour stays)."""
        with self._cond:
            self._queue.clear()
            self.received.clear()

    def wait_for(self, n: int, timeout: float = 5.0) -> list[Received]:
        """Block until ``n`` requests have arrived; returns the log (TimeoutError if not)."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.received) >= n, timeout):
                raise TimeoutError(f"fake upstream got {len(self.received)} requests, wanted {n}")
            return list(self.received)

    def _arrived(self, rec: Received) -> Behaviour:
        with self._cond:
            behaviour = self._queue.popleft() if self._queue else self.default
            rec.behaviour = behaviour
            if self.record:
                self.received.append(rec)
                self._cond.notify_all()
            return behaviour

    def _track(self, conn: socket.socket, active: bool) -> None:
        with self._cond:
            (self._connections.add if active else self._connections.discard)(conn)


# ---------------------------------------------------------------------- standalone


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake Anthropic Messages API upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8787)
    parser.add_argument("--event-delay-ms", type=float, default=0.0, help="sleep between events")
    parser.add_argument("--events", type=int, default=0, help="text deltas per streamed reply")
    args = parser.parse_args(argv)

    content = [text_block(text_of_deltas(args.events))] if args.events else None
    default = Reply(content=content, event_delay_s=args.event_delay_ms / 1000)
    fake = FakeUpstream(args.host, args.port, default=default, record=False).start()
    print(f"fake upstream listening on {fake.base_url}", flush=True)

    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    while not stopping.wait(0.5):
        pass
    fake.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
