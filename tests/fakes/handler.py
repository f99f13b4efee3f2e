"""The fake upstream's HTTP handler: it logs each request and renders its behaviour.

A ``Reply`` becomes the route's normal success (message, event stream, token count,
model list, 404); ``ErrorReply``, ``Reset``, ``Stall``, ``StreamFailure`` and
``RawReply`` fail as they say. Bytes go out through ``tests.fakes.connection``.
"""

from __future__ import annotations

import gzip
import time
import zlib
from typing import Any
from urllib.parse import parse_qsl

from tests.fakes.api_headers import (
    common_headers,
    merge_headers,
    ratelimit_headers,
    unified_headers,
)
from tests.fakes.behaviours import (
    Behaviour,
    ErrorReply,
    RawReply,
    Reply,
    Reset,
    Stall,
    StreamFailure,
)
from tests.fakes.connection import ClientGone, Connection
from tests.fakes.errors import ERROR_MESSAGES, ERROR_TYPES, error_body
from tests.fakes.messages import build_message, compact_json, count_input_tokens, new_request_id
from tests.fakes.models import model_info, models_page
from tests.fakes.received import Received
from tests.fakes.sse import MID_STREAM_ERROR, build_sse, sse_event, start_usage

SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"
JSON_CONTENT_TYPE = "application/json"


def _accepts_gzip(accept_encoding: str | None) -> bool:
    for item in (accept_encoding or "").split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() in ("gzip", "*"):
            q = params.strip()
            return not (q.startswith("q=") and float(q[2:] or 0) == 0)
    return False


class Handler(Connection):
    def do_POST(self) -> None:
        self._exchange()

    do_GET = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_POST

    # ------------------------------------------------------------------ exchange

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
        except (ClientGone, OSError):
            if rec.closed_at is None:
                rec.closed_at = time.monotonic()
            rec.completed = False
            self.close_connection = True
        finally:
            rec._finished.set()

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

