"""Server-Sent Events framing for the byte-for-byte relay of Anthropic Messages streams.

Framing follows the WHATWG rules (lines end in ``\\n``, ``\\r\\n`` or ``\\r``; a blank line
ends an event), with one deliberate difference: a ``\\r`` that may be the first half of a
``\\r\\n`` pair is not treated as ending an event until the next byte (or ``flush``) settles
it. This keeps every event's ``raw`` bytes identical however the stream is split, and keeps
``event_boundary`` and ``SSEDecoder`` in agreement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from app.proxy.message_fold import MessageFolder

__all__ = ["MessageFolder", "SSEDecoder", "SSEEvent", "error_event_bytes", "event_boundary"]

_BOM = b"\xef\xbb\xbf"
_LF = 0x0A
_CR = 0x0D
_COLON = 0x3A


@dataclass(slots=True)
class SSEEvent:
    """One dispatched event: its name, joined data lines and the exact bytes it came from."""

    event: str | None
    data: str
    raw: bytes


def _lone_cr_end(buf: bytes | bytearray, pattern: bytes, start: int, best: int) -> int:
    # A blank line ended by a lone \r is only settled once a following byte shows it is not
    # the first half of \r\n; at the very end of the buffer fall back to the previous match.
    n = len(buf)
    i = buf.rfind(pattern, start)
    if i >= 0 and i + 2 == n:
        i = buf.rfind(pattern, start, n - 1)
    if i >= 0 and i + 2 > best and buf[i + 2] != _LF:
        return i + 2
    return best


def _boundary(buf: bytes | bytearray, start: int) -> int:
    # Only patterns lying wholly at or after `start` are considered; callers guarantee that
    # nothing complete lies before it. A buffer always begins at the start of a line.
    n = len(buf)
    i = buf.rfind(b"\n\n", start)
    best = i + 2 if i >= 0 else 0
    if buf.find(b"\r", start) >= 0:
        i = buf.rfind(b"\n\r\n", start)
        if i >= 0 and i + 3 > best:
            best = i + 3
        i = buf.rfind(b"\r\r\n", start)
        if i >= 0 and i + 3 > best:
            best = i + 3
        best = _lone_cr_end(buf, b"\r\r", start, best)
        best = _lone_cr_end(buf, b"\n\r", start, best)
    if best == 0 and start == 0 and n:
        first = buf[0]
        if first == _LF:
            best = 1
        elif first == _CR and n > 1:
            best = 2 if buf[1] == _LF else 1
    return best


def event_boundary(buf: bytes | bytearray) -> int:
    """Return the index just past the last complete event in ``buf`` (0 if there is none)."""
    return _boundary(buf, 0)


class SSEDecoder:
    """Incremental SSE decoder that never raises and reports each event's exact raw bytes."""

    __slots__ = ("_buf", "_carry", "_started")

    def __init__(self) -> None:
        self._buf = bytearray()
        # Bytes of blocks that dispatch nothing (comments, blank lines, data-less fields);
        # they are prepended to the next event's raw so that no byte goes missing.
        self._carry = bytearray()
        self._started = False

    @property
    def pending_bytes(self) -> int:
        """Bytes received but not yet returned in any event's ``raw``."""
        return len(self._buf) + len(self._carry)

    def feed(self, data: bytes) -> list[SSEEvent]:
        """Consume ``data`` and return the events it completes."""
        if not data:
            return []
        buf = self._buf
        # Patterns are at most 3 bytes long, so anything that could complete now starts
        # within the last 3 bytes already held; rescanning older bytes would be quadratic.
        start = len(buf) - 3 if len(buf) > 3 else 0
        buf += data
        end = _boundary(buf, start)
        if not end:
            return []
        chunk = bytes(buf[:end])
        del buf[:end]
        return self._parse(chunk, final=False)

    def flush(self) -> list[SSEEvent]:
        """At end of stream, return the unterminated trailing event if it carries data."""
        chunk = bytes(self._buf)
        self._buf.clear()
        events = self._parse(chunk, final=True) if chunk else []
        self._carry.clear()
        return events

    def _parse(self, chunk: bytes, final: bool) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        pos = 0
        if not self._started:
            self._started = True
            if chunk.startswith(_BOM):
                pos = len(_BOM)
        body_chunk = chunk[pos:] if pos else chunk
        start = 0
        name: str | None = None
        data: list[str] | None = None
        for line in body_chunk.splitlines(True):
            pos += len(line)
            body = line.rstrip(b"\r\n")
            if not body:
                if data is not None:
                    raw = self._raw(chunk, start, pos)
                    events.append(SSEEvent(name or None, "\n".join(data), raw))
                    start = pos
                name = None
                data = None
                continue
            if body[0] == _COLON:
                continue
            colon = body.find(b":")
            if colon < 0:
                field, value = body, b""
            else:
                field, value = body[:colon], body[colon + 1 :]
                if value[:1] == b" ":
                    value = value[1:]
            if field == b"data":
                if data is None:
                    data = []
                data.append(value.decode("utf-8", "replace"))
            elif field == b"event":
                name = value.decode("utf-8", "replace")
        if final and data is not None:
            raw = self._raw(chunk, start, pos)
            events.append(SSEEvent(name or None, "\n".join(data), raw))
            start = pos
        if start < len(chunk):
            self._carry += chunk[start:]
        return events

    def _raw(self, chunk: bytes, start: int, end: int) -> bytes:
        if not self._carry:
            return chunk[start:end]
        raw = bytes(self._carry) + chunk[start:end]
        self._carry.clear()
        return raw


def error_event_bytes(error_type: str, message: str) -> bytes:
    """Return an ``event: error`` SSE event shaped like the ones the Anthropic API sends."""
    payload = {"type": "error", "error": {"type": error_type, "message": message}}
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    # "replace" keeps a lone surrogate in `message` from raising at the last moment.
    return b"event: error\ndata: " + text.encode("utf-8", "replace") + b"\n\n"
