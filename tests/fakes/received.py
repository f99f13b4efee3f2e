"""``Received``: one exchange with the fake upstream, as its log records it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.behaviours import Behaviour


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
