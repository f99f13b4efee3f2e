"""The wire side of the fake upstream's HTTP handler: one client connection.

Reads request bodies (Content-Length or chunked), writes the status line, headers and
body segments per framing (chunked, length, close), pauses while watching for the
client leaving, and aborts with an RST. ``tests.fakes.handler`` decides what to send.
"""

from __future__ import annotations

import gzip
import json
import select
import socket
import struct
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any

from tests.fakes.api_headers import http_date
from tests.fakes.received import Received

_REASONS = {529: "Overloaded"}
_PEEK_FLAGS = socket.MSG_PEEK | getattr(socket, "MSG_DONTWAIT", 0)


class ClientGone(Exception):
    """The client closed its side while the fake was still responding."""


def _wait_readable(sock: socket.socket, timeout: float) -> bool:
    # poll() has no FD_SETSIZE limit (hundreds of streams); gevent's patched
    # select module drops poll, and its select() has no such limit either.
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    return bool(select.select([sock], [], [], timeout)[0])


class Connection(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 120  # idle keep-alive connections are reaped after this
    rec: Received  # the exchange in progress, set once its request is read

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # hundreds of requests per test: keep stderr quiet

    # Connections are tracked for their whole life, so stop() also ends idle
    # keep-alive ones instead of leaving them served by a stopped fake.
    def setup(self) -> None:
        super().setup()
        # Like the real API's front ends: each write goes out at once. Without it, a write that
        # follows another waits for the peer's delayed ACK (~40 ms on Linux).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection, True)  # type: ignore[attr-defined]

    def finish(self) -> None:
        self.server.fake._track(self.connection, False)  # type: ignore[attr-defined]
        super().finish()

    # ------------------------------------------------------------------ plumbing

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
            raise ClientGone from exc

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
                raise ClientGone from exc
            if not peeked:
                raise ClientGone
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
        except ClientGone:
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
