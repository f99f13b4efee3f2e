"""What the fake upstream does with a request: plain dataclasses, scripted per request.

``Reply``, ``ErrorReply``, ``Reset``, ``Stall``, ``StreamFailure`` and ``RawReply``
carry no logic; ``tests.fakes.handler`` renders them and the builders in
``tests.fakes.messages`` / ``tests.fakes.sse`` compute what a ``Reply`` sends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

HeaderValue = str | int | float | None
Headers = Mapping[str, HeaderValue] | Sequence[tuple[str, HeaderValue]]


@dataclass
class Reply:
    """A success: a message (JSON) or its event stream (SSE), per the request's ``stream``.

    ``message_id`` pins the message id; when None it is derived from the request and
    the content, so ``build_message``/``build_sse`` reproduce what the server sent.
    """

    content: list[dict[str, Any]] | None = None
    stop_reason: str | None = "end_turn"
    model: str | None = None
    usage: dict[str, Any] | None = None
    headers: Headers | None = None
    delay_s: float = 0.0
    event_delay_s: float = 0.0
    framing: str = "chunked"  # "chunked" | "length" | "close"
    compress: str | None = None  # "gzip"
    unified: bool | Mapping[str, str] = False  # a mapping overrides unified header values
    message_id: str | None = None
    stop_sequence: str | None = None


@dataclass
class ErrorReply:
    """An Anthropic error response: ``{"type":"error","error":{...},"request_id":...}``."""

    status: int = 529
    error_type: str | None = None
    message: str | None = None
    headers: Headers | None = None
    retry_after: float | int | None = None
    should_retry: bool | None = None
    delay_s: float = 0.0


@dataclass
class Reset:
    """Read the request, then RST the connection before any response byte."""


@dataclass
class Stall:
    """Read the request and send nothing for ``seconds``, then close (FIN)."""

    seconds: float = 30.0


@dataclass
class StreamFailure:
    """Start a normal SSE stream, break it after ``after_events`` complete events.

    mode: "reset" (RST), "eof" (clean end without message_stop), "stall" (silence
    for ``stall_s`` then FIN), "error_event" (mid-stream ``event: error`` then a
    clean end), "partial" (half of the next event, then RST).
    """

    after_events: int = 3
    mode: str = "reset"
    stall_s: float = 30.0


@dataclass
class RawReply:
    """Exactly these bytes. Content-Length is added only if neither it nor
    Transfer-Encoding is among ``headers``; with ``Transfer-Encoding: chunked``
    the body is chunked by the server."""

    status: int = 200
    headers: Headers | None = None
    body: bytes = b""


Behaviour = Reply | ErrorReply | Reset | Stall | StreamFailure | RawReply
