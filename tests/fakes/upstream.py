"""A faithful fake of the Anthropic Messages API upstream, for tests and the benchmark.

    fake = FakeUpstream().start()
    fake.script(Reply(content=[text_block("hi")]), ErrorReply(529), StreamFailure(mode="eof"))
    ... point the code under test at fake.base_url ...
    fake.wait_for(3); fake.received[0].headers; fake.stop()

Each request (any path) pops the next scripted behaviour; with the script empty
the ``default`` behaviour (a plain ``Reply()``) applies. A ``Reply`` renders the
route's normal success: a message / event stream on ``POST /v1/messages``, the
token count on ``/v1/messages/count_tokens``, the model list on ``GET /v1/models``
and a 404 ``not_found_error`` anywhere else. Payload shapes live in ``replies``.

Standalone: ``python -m tests.fakes.upstream --port 8787 [--event-delay-ms 50]
[--events 500]`` serves until SIGTERM.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import select
import signal
import socket
import struct
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

from tests.fakes.replies import (
    DEFAULT_TEXT,
    ERROR_MESSAGES,
    ERROR_TYPES,
    MID_STREAM_ERROR,
    Behaviour,
    ErrorReply,
    RawReply,
    Reply,
    Reset,
    Stall,
    StreamFailure,
    build_message,
    build_sse,
    common_headers,
    compact_json,
    count_input_tokens,
    error_body,
    fold_sse,
    http_date,
    merge_headers,
    model_info,
    models_page,
    new_request_id,
    parse_sse,
    ratelimit_headers,
    redacted_thinking_block,
    server_tool_blocks,
    sse_event,
    start_usage,
    text_block,
    text_of_deltas,
    thinking_block,
    tool_use_block,
    unified_headers,
)

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

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"
_REASONS = {529: "Overloaded"}
_PEEK_FLAGS = socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0)


@dataclass(eq=False)
class Received:
    """One request as the fake saw it, plus what it answered.

    Logged as soon as the request is read, so in-flight exchanges are visible. The
    response fields are updated just *before* the bytes they describe are sent, so
    once a client has the last byte they are final; ``wait_finished()`` waits for
    the handler itself to be done (useful after aborts and disconnects).

    ``behaviour`` is what served the request (scripted or default).
    ``response_body`` is the payload written so far, before any content-coding.
    ``usage`` is the last usage the fake reported (message_start's, then the final).
    ``completed``: the whole response went out, properly terminated (a StreamFailure
    "eof" or "error_event" counts; RST, partial and stall do not).
    ``closed_at``: ``time.monotonic()`` when the fake noticed the client had gone
    while it was still responding (failed write, or EOF while waiting); else None.
    """

    method: str
    raw_path: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    json: Any
    received_at: float
    behaviour: Behaviour | None = None
    status: int | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    closed_at: float | None = None
    completed: bool = False
    _body: bytearray = field(default_factory=bytearray, repr=False)
    _finished: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def response_body(self) -> bytes:
        """The response body written so far, as payload (before any content-coding)."""
        return bytes(self._body)

    def header(self, name: str) -> str | None:
        """First request header with this name, case-insensitively."""
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def wait_finished(self, timeout: float = 5.0) -> bool:
        """Block until the fake is done with this exchange (response sent or aborted)."""
        return self._finished.wait(timeout)


class _ClientGone(Exception):
    """The client closed its side while the fake was still responding."""


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
        self._server = _Server((self.host, self.port), _Handler)
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


def _wait_readable(sock: socket.socket, timeout: float) -> bool:
    # poll() has no FD_SETSIZE limit (hundreds of streams); gevent's patched
    # select module drops poll, and its select() has no such limit either.
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    return bool(select.select([sock], [], [], timeout)[0])


def _accepts_gzip(accept_encoding: str | None) -> bool:
    for item in (accept_encoding or "").split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() in ("gzip", "*"):
            q = params.strip()
            return not (q.startswith("q=") and float(q[2:] or 0) == 0)
    return False


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120  # idle keep-alive connections are reaped after this

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # hundreds of requests per test: keep stderr quiet

    # Connections are tracked for their whole life, so stop() also ends idle
    # keep-alive ones instead of leaving them served by a stopped fake.
    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, True)  # type: ignore[attr-defined]

    def finish(self) -> None:
        self.server.fake._track(self.connection, False)  # type: ignore[attr-defined]
        super().finish()

    def do_POST(self) -> None:
        self._exchange()

    do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_POST

    # ------------------------------------------------------------------ plumbing

    def _exchange(self) -> None:
        fake = self.server.fake  # type: ignore[attr-defined]
        body = self._read_body()
        path, _, query = self.path.partition("?")
        rec = Received(
            method=self.command,
            raw_path=self.path,
            path=path,
            query=query,
            headers=list(self.headers.items()),
            body=body,
            json=self._parse_json(body),
            received_at=time.monotonic(),
        )
        self.rec = rec
        try:
            self._respond(fake._arrived(rec))
        except (_ClientGone, OSError):
            if rec.closed_at is None:
                rec.closed_at = time.monotonic()
            rec.completed = False
            self.close_connection = True
        finally:
            rec._finished.set()

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while size := int(self.rfile.readline(65537).split(b";")[0].strip() or b"0", 16):
                parts.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _parse_json(self, body: bytes) -> Any:
        try:
            if self.headers.get("Content-Encoding", "").lower() == "gzip":
                body = gzip.decompress(body)
            return json.loads(body) if body else None
        except (ValueError, OSError, EOFError):
            return None

    def _send(self, data: bytes) -> None:
        try:
            self.connection.sendall(data)
        except OSError as exc:
            raise _ClientGone from exc

    def _pause(self, seconds: float) -> None:
        """Sleep, but notice (and raise on) the client closing its side meanwhile."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if not _wait_readable(self.connection, min(remaining, 0.25)):
                continue
            try:
                peeked = self.connection.recv(1, _PEEK_FLAGS)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise _ClientGone from exc
            if not peeked:
                raise _ClientGone
            # A pipelined next request is waiting: nothing to watch, just sleep.
            time.sleep(max(0.0, deadline - time.monotonic()))

    def _abort(self) -> None:
        """Close with SO_LINGER 0 so the peer gets an RST, not a FIN."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.rfile.close()  # drop the makefile reference, or close() would not close the fd
        self.connection.close()

    # The record is updated *before* the bytes it describes go out (and rolled
    # back if they cannot), so a client that has read the final byte always
    # finds status, usage, response_body and completed already final.

    def _head(self, status: int, headers: list[tuple[str, str]]) -> None:
        if any(k.lower() == "connection" and v.lower() == "close" for k, v in headers):
            self.close_connection = True
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = _REASONS.get(status, "")
        self.rec.status, self.rec.response_headers = status, headers
        lines = [f"HTTP/1.1 {status} {reason}", *(f"{k}: {v}" for k, v in headers)]
        self._send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def _framing_headers(self, content_type: str, framing: str, length: int) -> list:
        headers = [("Date", http_date()), ("Content-Type", content_type)]
        if framing == "chunked":
            headers.append(("Transfer-Encoding", "chunked"))
        elif framing == "length":
            headers.append(("Content-Length", str(length)))
        close = framing == "close" or self.close_connection
        headers.append(("Connection", "close" if close else "keep-alive"))
        return headers

    def _write(self, framing: str, wire: bytes, payload: bytes, *, last: bool = False) -> None:
        """Send one body segment (one HTTP chunk when chunked). ``last`` marks the
        final byte of a length- or close-delimited body; chunked bodies end in _end()."""
        rec = self.rec
        before = len(rec._body)
        rec._body += payload
        rec.completed = last and framing != "chunked"
        if framing == "chunked" and wire:  # an empty chunk would end the body
            wire = b"%x\r\n%s\r\n" % (len(wire), wire)
        try:
            if wire:
                self._send(wire)
        except _ClientGone:
            del rec._body[before:]
            rec.completed = False
            raise

    def _end(self, framing: str) -> None:
        """Terminate the body per its framing: the response is then complete."""
        self.rec.completed = True
        if framing == "chunked":
            self._send(b"0\r\n\r\n")
        elif framing == "close":
            self.close_connection = True

    # ------------------------------------------------------------------ behaviours

    def _respond(self, behaviour: Behaviour) -> None:
        rec = self.rec
        if isinstance(behaviour, Reset):
            self._abort()
        elif isinstance(behaviour, Stall):
            self._pause(behaviour.seconds)
            self.close_connection = True
        elif isinstance(behaviour, RawReply):
            self._raw(behaviour)
        elif isinstance(behaviour, ErrorReply):
            self._pause(behaviour.delay_s)
            self._error(behaviour)
        elif rec.method == "POST" and rec.path in ("/v1/messages", "/v1/messages/count_tokens"):
            if not isinstance(rec.json, dict):
                self._error(ErrorReply(400, message="The request body is not valid JSON."))
            elif rec.path.endswith("count_tokens"):
                self._json({"input_tokens": count_input_tokens(rec.json)}, behaviour)
            else:
                self._message(behaviour)
        elif rec.method == "GET" and rec.path == "/v1/models":
            try:
                page = models_page(dict(parse_qsl(rec.query)))
            except ValueError as exc:
                self._error(ErrorReply(400, message=str(exc)))
            else:
                self._json(page, behaviour)
        elif rec.method == "GET" and (info := model_info(rec.path.removeprefix("/v1/models/"))):
            self._json(info, behaviour)
        else:
            self._error(ErrorReply(404))

    def _message(self, behaviour: Reply | StreamFailure) -> None:
        req = self.rec.json
        reply = behaviour if isinstance(behaviour, Reply) else Reply()
        failure = behaviour if isinstance(behaviour, StreamFailure) else None
        self._pause(reply.delay_s)
        if not req.get("stream"):
            if failure:
                self._broken_json(build_message(req, reply), failure)
            else:
                self._json(build_message(req, reply), reply)
            return
        message, events = build_message(req, reply), build_sse(req, reply)
        encode = self._encoder(reply)
        length = 0
        if reply.framing == "length":  # zlib is deterministic: a dry run gives the size
            length = sum(map(len, self._encoder(reply)(events, final=True)))
        headers = self._framing_headers(SSE_CONTENT_TYPE, reply.framing, length)
        if self._gzip_wanted(reply):
            headers.append(("Content-Encoding", "gzip"))
        headers += [("Cache-Control", "no-cache"), *self._api_headers(reply, json_body=False)]
        self._head(200, merge_headers(headers, reply.headers))

        stop_at = min(failure.after_events, len(events)) if failure else len(events)
        for i, event in enumerate(events[:stop_at]):
            if i and reply.event_delay_s:
                self._pause(reply.event_delay_s)
            if event.startswith(b"event: message_start"):
                self.rec.usage = start_usage(message["usage"])
            elif event.startswith(b"event: message_delta"):
                self.rec.usage = message["usage"]
            last = i == len(events) - 1  # the gzip footer rides the last event's segment
            self._write(reply.framing, b"".join(encode([event], final=last)), event, last=last)
        if failure is None:
            self._end(reply.framing)
        elif failure.mode == "error_event":
            event = sse_event("error", MID_STREAM_ERROR)
            self._write(reply.framing, b"".join(encode([event], final=True)), event, last=True)
            self._end(reply.framing)
        elif failure.mode == "eof":
            self._end(reply.framing)
            self.close_connection = True
        elif failure.mode == "stall":
            self._pause(failure.stall_s)
            self.close_connection = True
        else:  # "reset", or "partial": half of the next event first
            if failure.mode == "partial" and stop_at < len(events):
                half = events[stop_at][: len(events[stop_at]) // 2]
                self._write(reply.framing, b"".join(encode([half])), half)
            # An RST makes the peer's kernel drop what it has not read yet; a mid-stream reset
            # in real life comes after the bytes before it were delivered, so let them land.
            time.sleep(0.1)
            self._abort()

    def _encoder(self, reply: Reply):
        """events -> wire segments; with gzip one compressed, sync-flushed segment each."""
        if not self._gzip_wanted(reply):
            return lambda events, final=False: list(events)
        compressor = zlib.compressobj(wbits=31)

        def encode(events: list[bytes], final: bool = False) -> list[bytes]:
            out = [compressor.compress(ev) + compressor.flush(zlib.Z_SYNC_FLUSH) for ev in events]
            if final:
                out.append(compressor.flush())
            return out

        return encode

    def _broken_json(self, message: dict[str, Any], failure: StreamFailure) -> None:
        """StreamFailure on a non-streaming request: half the JSON body, then fail."""
        body = compact_json(message).encode()
        headers = self._framing_headers(JSON_CONTENT_TYPE, "length", len(body))
        self._head(200, headers + self._api_headers(Reply(), json_body=True))
        self._write("length", body[: len(body) // 2], body[: len(body) // 2])
        if failure.mode == "stall":
            self._pause(failure.stall_s)
        if failure.mode in ("reset", "partial"):
            self._abort()
        self.close_connection = True

    def _json(self, payload: dict[str, Any], behaviour: Behaviour) -> None:
        reply = behaviour if isinstance(behaviour, Reply) else Reply()
        body = compact_json(payload).encode()
        wire = gzip.compress(body, mtime=0) if self._gzip_wanted(reply) else body
        headers = self._framing_headers(JSON_CONTENT_TYPE, reply.framing, len(wire))
        if wire is not body:
            headers.append(("Content-Encoding", "gzip"))
        headers += self._api_headers(reply, json_body=True, usage=payload.get("usage"))
        self._head(200, merge_headers(headers, reply.headers))
        if payload.get("type") == "message":
            self.rec.usage = payload["usage"]
        self._write(reply.framing, wire, body, last=True)
        self._end(reply.framing)

    def _error(self, error: ErrorReply) -> None:
        status = error.status
        error_type = error.error_type or ERROR_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
        message = error.message or ERROR_MESSAGES.get(error_type, "Error")
        request_id = new_request_id()
        body = compact_json(error_body(error_type, message, request_id)).encode()
        headers = self._framing_headers(JSON_CONTENT_TYPE, "length", len(body))
        if error.retry_after is not None:
            headers.append(("retry-after", f"{error.retry_after:g}"))
        if error.should_retry is not None:
            headers.append(("x-should-retry", "true" if error.should_retry else "false"))
        if status == 429:
            headers += ratelimit_headers(exhausted=True)
        headers += common_headers(request_id, json_body=True)
        self._head(status, merge_headers(headers, error.headers))
        self._write("length", body, body, last=True)

    def _raw(self, raw: RawReply) -> None:
        headers = merge_headers([], raw.headers)
        names = {k.lower() for k, _ in headers}
        chunked = any(k.lower() == "transfer-encoding" and "chunked" in v for k, v in headers)
        if not names & {"content-length", "transfer-encoding"}:
            headers.append(("Content-Length", str(len(raw.body))))
        self._head(raw.status, headers)
        framing, step = ("chunked" if chunked else "length"), 65536
        for pos in range(0, len(raw.body), step):
            piece = raw.body[pos : pos + step]
            self._write(framing, piece, piece, last=pos + step >= len(raw.body))
        if chunked or not raw.body:
            self._end(framing)

    def _gzip_wanted(self, reply: Reply) -> bool:
        return reply.compress == "gzip" and _accepts_gzip(self.headers.get("Accept-Encoding"))

    def _api_headers(
        self, reply: Reply, *, json_body: bool, usage: dict[str, Any] | None = None
    ) -> list[tuple[str, str]]:
        req = self.rec.json if isinstance(self.rec.json, dict) else {}
        tokens = (usage or {}).get("input_tokens") or (count_input_tokens(req) if req else 0)
        max_tokens = req.get("max_tokens")
        headers = ratelimit_headers(tokens, max_tokens if isinstance(max_tokens, int) else 0)
        if reply.unified:
            headers += unified_headers(None if reply.unified is True else reply.unified)
        return headers + common_headers(new_request_id(), json_body=json_body)


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
