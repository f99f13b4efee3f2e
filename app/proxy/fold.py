"""Reading an upstream answer on the side of the relay, into the Exchange record.

`StreamFold` rebuilds a streamed message (via the SSE decoder and MessageFolder); `BodyFold`
keeps a plain body (bounded) and parses it as JSON at the end. Both see the bytes after the
client got them, and neither raises: what cannot be understood is recorded as such.
"""

from __future__ import annotations

import json
import logging

from app.proxy.decoding import UnsupportedEncoding, decoder_for
from app.proxy.exchange import Exchange
from app.proxy.sse import MessageFolder, SSEDecoder

log = logging.getLogger(__name__)


class _Decoded:
    """Runs bytes through the answer's Content-Encoding; gives up quietly on bad data."""

    def __init__(self, content_encoding: str | None):
        self.failed: str | None = None
        try:
            self._decoder = decoder_for(content_encoding)
        except UnsupportedEncoding as err:
            self._decoder = None
            self.failed = f"unsupported content-encoding {err}"

    def decode(self, data: bytes, final: bool = False) -> bytes:
        if self._decoder is None:
            return b""
        try:
            out = self._decoder.decompress(data)
            return out + self._decoder.flush() if final else out
        except Exception as err:  # corrupt compressed data must not break the relay
            self._decoder = None
            self.failed = f"could not decode body: {err}"
            return b""


# A stream's events are kept for the record up to this many bytes (the rebuilt message is
# always whole); past it `response_truncated` is set. Real answers stay far below it.
CHUNKS_LIMIT = 32 << 20


class StreamFold:
    """Folds an SSE answer into the non-streaming message shape, with usage and chunks."""

    def __init__(self, exchange: Exchange, content_encoding: str | None, keep_chunks: bool,
                 chunks_limit: int = CHUNKS_LIMIT):
        self.exchange = exchange
        self.decoder = SSEDecoder()
        self.folder = MessageFolder()
        self._decoded = _Decoded(content_encoding)
        self._keep_chunks = keep_chunks
        self._chunks_limit = chunks_limit
        self._finished = False

    @property
    def complete(self) -> bool:
        return self.folder.complete

    @property
    def error(self) -> dict | None:
        return self.folder.error

    def feed(self, data: bytes, at_ms: float) -> None:
        self._events(self.decoder.feed(self._decoded.decode(data)), at_ms)

    def _events(self, events, at_ms: float) -> None:
        chunks = self.exchange.chunks
        for event in events:
            self.folder.feed(event, at_ms)
            if not self._keep_chunks:
                continue
            if chunks.nbytes + len(event.raw) > self._chunks_limit:
                # The record keeps the first events only, like a plain body's first 32 MiB:
                # each kept byte is held again while its row is built and written.
                self._keep_chunks = False
                self.exchange.response_body_truncated = True
                continue
            chunks.append((round(at_ms, 3), event.raw))

    def finish(self, at_ms: float) -> None:
        """Record what was folded on the exchange (idempotent)."""
        if self._finished:
            return
        self._finished = True
        tail = self._decoded.decode(b"", final=True)
        self._events(self.decoder.feed(tail) + self.decoder.flush(), at_ms)
        folder, exchange = self.folder, self.exchange
        exchange.response = folder.message
        exchange.usage = dict(folder.usage) if folder.usage else None
        exchange.tool_uses = list(folder.tool_uses)
        if folder.first_content_ms is not None:
            exchange.first_token_ms = round(folder.first_content_ms, 3)
        if folder.message and folder.message.get("model"):
            exchange.model = folder.message["model"]
        if folder.error:
            exchange.error_type = folder.error.get("type")
            exchange.error_message = folder.error.get("message")
        if folder.problems:
            log.warning("stream of %s folded with problems: %s", exchange.id,
                        "; ".join(folder.problems[:5]))


class BodyFold:
    """Keeps a non-SSE body (up to `limit` bytes) and reads it as JSON when it ends."""

    def __init__(self, exchange: Exchange, content_encoding: str | None, limit: int):
        self.exchange = exchange
        self.limit = limit
        self._encoding = content_encoding
        self._parts: list[bytes] = []
        self._size = 0
        self._finished = False

    complete = True
    error = None

    def feed(self, data: bytes, at_ms: float) -> None:
        if self._size + len(data) > self.limit:
            data = data[: max(0, self.limit - self._size)]
            self.exchange.response_body_truncated = True
        if data:
            self._parts.append(data)
            self._size += len(data)

    def finish(self, at_ms: float) -> None:
        """Record the body and what it says (idempotent)."""
        if self._finished:
            return
        self._finished = True
        exchange = self.exchange
        exchange.response_body = b"".join(self._parts)
        self._parts = []
        if exchange.response_body_truncated or not exchange.response_body:
            return
        decoded = _Decoded(self._encoding)
        text = decoded.decode(exchange.response_body, final=True)
        try:
            body = json.loads(text)
        except ValueError:
            return
        if not isinstance(body, dict):
            return
        exchange.response = body
        if isinstance(body.get("usage"), dict):
            exchange.usage = body["usage"]
        if isinstance(body.get("model"), str):
            exchange.model = body["model"]
        content = body.get("content")
        if isinstance(content, list):
            exchange.tool_uses = [
                {"id": b.get("id"), "name": b.get("name"), "input": b.get("input")}
                for b in content if isinstance(b, dict) and b.get("type") == "tool_use"]
        error = body.get("error")
        if body.get("type") == "error" and isinstance(error, dict):
            exchange.error_type = error.get("type")
            exchange.error_message = error.get("message")
