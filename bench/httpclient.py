"""A minimal HTTP/1.1 keep-alive client on a raw socket, built for timing.

Why not http.client: it parses headers through the email package (several times the CPU of
this), and it does not tell when the first body byte arrived, which is what TTFB needs. This
client sends prebuilt request bytes, stamps every recv() and understands exactly the framings
the fake upstream and the proxy use: Content-Length, chunked, or close-delimited.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from time import perf_counter

RECV_SIZE = 65536
MESSAGE_STOP = b"event: message_stop"


class ProtocolError(Exception):
    """The answer could not be read as HTTP/1.1 (the connection is then unusable)."""


@dataclass(slots=True)
class Result:
    status: int
    ttfb_s: float  # request sent -> first body byte received (after the headers)
    total_s: float  # request sent -> last body byte received
    body: bytes


class Connection:
    """One keep-alive connection; reconnects lazily after close() or a server close."""

    def __init__(self, host: str, port: int, timeout_s: float = 30.0, quickack: bool = False):
        self.address = (host, port)
        self.timeout_s = timeout_s
        # Real clients let the kernel delay their ACKs (~40 ms on Linux when there is nothing
        # to piggyback them on); a server that sends without TCP_NODELAY then stalls on them.
        # quickack ACKs every segment at once, hiding such stalls (Linux only).
        self.quickack = quickack
        self.sock: socket.socket | None = None
        self.buf = bytearray()
        self.recv_at = 0.0  # perf_counter() of the last recv() that returned bytes

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.buf.clear()

    def request(self, raw: bytes) -> Result:
        """Send one prebuilt request and read its whole answer. Raises OSError/ProtocolError.

        Like every HTTP client, it sends again once on a fresh connection when a kept-alive
        one turns out to be closed by the server (idle timeout: uvicorn's is 5 s) before any
        byte of the answer came back."""
        reused = self.sock is not None
        if self.sock is None:
            self.sock = socket.create_connection(self.address, self.timeout_s)
            # Without it a 76 KB body's last segment can wait for the previous one's ACK.
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = perf_counter()
        try:
            self.sock.sendall(raw)
            status, headers = self._read_head()
        except TimeoutError:
            raise  # a server that does not answer: no second try
        except (OSError, ProtocolError):
            if not reused or self.buf:
                raise
            self.close()
            return self.request(raw)
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body, first_at = self._read_chunked()
        elif "content-length" in headers:
            body, first_at = self._read_exact(int(headers["content-length"]))
        else:
            body, first_at = self._read_to_close()
        ended = perf_counter()
        if headers.get("connection", "").lower() == "close":
            self.close()
        return Result(status, (first_at or ended) - started, ended - started, body)

    # ------------------------------------------------------------------ reading

    def _recv(self) -> bytes:
        data = self.sock.recv(RECV_SIZE)
        if data:
            self.recv_at = perf_counter()
            if self.quickack:  # the kernel clears the flag again: re-arm it after each read
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        return data

    def _fill(self) -> None:
        data = self._recv()
        if not data:
            raise ProtocolError("the server closed the connection mid-answer")
        self.buf += data

    def _read_head(self) -> tuple[int, dict[str, str]]:
        while (end := self.buf.find(b"\r\n\r\n")) < 0:
            self._fill()
        lines = self.buf[:end].decode("latin-1").split("\r\n")
        del self.buf[: end + 4]
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ProtocolError(f"bad status line {lines[0]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(parts[1]), headers

    def _line(self) -> bytes:
        while (end := self.buf.find(b"\r\n")) < 0:
            self._fill()
        line = bytes(self.buf[:end])
        del self.buf[: end + 2]
        return line

    def _first_byte_at(self) -> float:
        # recv_at is the stamp of the recv() that delivered the newest buffered byte; when a
        # body byte is already buffered it arrived with that recv() at the latest.
        if not self.buf:
            self._fill()
        return self.recv_at

    def _read_exact(self, size: int) -> tuple[bytes, float | None]:
        first_at = self._first_byte_at() if size else None
        while len(self.buf) < size:
            self._fill()
        body = bytes(self.buf[:size])
        del self.buf[:size]
        return body, first_at

    def _read_chunked(self) -> tuple[bytes, float | None]:
        parts: list[bytes] = []
        first_at = None
        while True:
            try:
                size = int(self._line().split(b";", 1)[0], 16)
            except ValueError as err:
                raise ProtocolError(f"bad chunk size: {err}") from None
            if size == 0:
                while self._line():  # trailers, up to the blank line
                    pass
                return b"".join(parts), first_at
            if first_at is None:
                first_at = self._first_byte_at()
            while len(self.buf) < size + 2:
                self._fill()
            parts.append(bytes(self.buf[:size]))
            del self.buf[: size + 2]

    def _read_to_close(self) -> tuple[bytes, float | None]:
        first_at = self._first_byte_at() if self.buf else None
        while data := self._recv():
            first_at = first_at or self.recv_at
            self.buf += data
        body = bytes(self.buf)
        self.close()
        return body, first_at


def check_answer(result: Result, stream: bool) -> str | None:
    """Why this answer is not a success of the Messages API, or None when it is one."""
    if result.status != 200:
        return f"status {result.status}: {result.body[:200]!r}"
    if stream:
        if MESSAGE_STOP not in result.body:
            return "stream ended without message_stop"
        return None
    try:
        message = json.loads(result.body)
    except ValueError:
        return f"body is not JSON: {result.body[:200]!r}"
    if not isinstance(message, dict) or message.get("type") != "message":
        return f"body is not a message: {result.body[:200]!r}"
    return None


def build_request(host: str, port: int, path: str, body: bytes,
                  headers: list[tuple[str, str]]) -> bytes:
    """The raw bytes of a POST, built once per workload so that sending costs nothing."""
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}",
             *(f"{name}: {value}" for name, value in headers),
             f"Content-Length: {len(body)}", "", ""]
    return "\r\n".join(lines).encode("latin-1") + body
