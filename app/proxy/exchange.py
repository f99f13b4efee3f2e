"""The Exchange: one record per client request, carried through its whole life.

Lifecycle: built from the client request (`inbound.read_exchange`), `ExchangeStarted` published,
forwarded (attempts appended), relayed, then ended exactly once by `complete`, `fail` or
`disconnect`, which stamp the outcome and publish the matching terminal event. Later calls to
any of the three are ignored, so an error handler and a stream's `finally` can both call them
safely. The parsed request body (`request_json`) is let go once the terminal event's
subscribers have run; the body's bytes stay. Nothing here touches Flask, the database or the
network.
"""

from __future__ import annotations

import time
import uuid
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from app.events import (
    ExchangeCompleted,
    ExchangeDisconnected,
    ExchangeEnded,
    ExchangeFailed,
    ExchangeStarted,
)

CLIENT_DISCONNECTED = "client_disconnected"

# What kind of record a path makes: full Messages rows, light rows for everything else.
MESSAGES = "messages"
COUNT_TOKENS = "count_tokens"
OTHER = "other"


class Chunks:
    """A stream's events as relayed, in order: (offset in ms, raw bytes) pairs.

    One buffer and two arrays rather than a list of tuples: a long stream holds thousands of
    events until it is recorded, and a tuple, a float and a bytes object would add some 120
    bytes to each; here it is 16. Iterating gives the pairs back.
    """

    __slots__ = ("_data", "_ends", "_offsets")

    def __init__(self, pairs: Iterable[tuple[float, bytes]] = ()):
        self._data = bytearray()
        self._ends = array("Q")
        self._offsets = array("d")
        for pair in pairs:
            self.append(pair)

    def append(self, pair: tuple[float, bytes]) -> None:
        at_ms, raw = pair
        self._data += raw
        self._ends.append(len(self._data))
        self._offsets.append(at_ms)

    def __iter__(self) -> Iterator[tuple[float, bytes]]:
        start = 0
        for at_ms, end in zip(self._offsets, self._ends, strict=True):
            yield at_ms, bytes(self._data[start:end])
            start = end

    def __len__(self) -> int:
        return len(self._ends)

    @property
    def nbytes(self) -> int:
        """The events' bytes, all together."""
        return len(self._data)


@dataclass
class Attempt:
    number: int
    started_ms: float          # since the exchange was received
    duration_ms: float
    status: int | None         # None when the attempt failed in transport
    error: str | None = None
    retry_delay_s: float | None = None


@dataclass(eq=False)
class Exchange:
    method: str
    path: str
    query: str
    domain: str
    publish: Callable[[Any], None] = field(repr=False)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    kind: str = OTHER
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started: float = field(default_factory=time.monotonic, repr=False)
    account_id: str | None = None
    auth_mode: str | None = None         # passthrough or domain_credential
    client_addr: str | None = None
    user_agent: str | None = None
    session_id: str | None = None
    agent_id: str | None = None
    request_headers: list[tuple[str, str]] = field(default_factory=list, repr=False)
    request_body: bytes = field(default=b"", repr=False)
    request_json: Any = field(default=None, repr=False)
    model: str | None = None
    stream: bool = False
    request_type: str | None = None

    attempts: list[Attempt] = field(default_factory=list)
    upstream_status: int | None = None
    response_headers: list[tuple[str, str]] = field(default_factory=list, repr=False)
    response_body: bytes = field(default=b"", repr=False)  # non-SSE bodies, as received
    response_body_truncated: bool = False
    response: dict | None = field(default=None, repr=False)  # parsed or rebuilt message
    usage: dict | None = None
    tool_uses: list[dict] = field(default_factory=list, repr=False)
    chunks: Chunks = field(default_factory=Chunks, repr=False)  # SSE events, when kept
    first_byte_ms: float | None = None   # first upstream body byte, since received
    first_token_ms: float | None = None  # first content delta of a stream, since received
    bytes_to_client: int = 0

    status: int | str | None = None      # HTTP status sent, or CLIENT_DISCONNECTED
    error_type: str | None = None
    error_message: str | None = None
    completed_at: datetime | None = None
    duration_ms: float | None = None
    ended: ExchangeEnded | None = field(default=None, repr=False)

    def elapsed_ms(self) -> float:
        """Milliseconds since the request was received."""
        return (time.monotonic() - self.started) * 1000

    def start(self) -> None:
        self.publish(ExchangeStarted(self))

    def complete(self) -> None:
        """The answer reached the client in full (whatever its status)."""
        self.status = self.upstream_status
        self._end(ExchangeCompleted)

    def fail(self, error: Exception, status: int | None = None) -> None:
        """The proxy answered with its own error, or the upstream broke off mid-answer."""
        if self.ended is not None:
            return
        self.error_type = getattr(error, "error_type", None) or type(error).__name__
        self.error_message = getattr(error, "message", None) or str(error)
        self.status = status if status is not None else getattr(error, "status", 500)
        self._end(ExchangeFailed)

    def disconnect(self, reason: str = "client closed the connection") -> None:
        """The client went away before the answer was complete."""
        if self.ended is not None:
            return
        self.status = CLIENT_DISCONNECTED
        self.error_type = CLIENT_DISCONNECTED
        self.error_message = reason
        self._end(ExchangeDisconnected)

    def _end(self, event_type: type[ExchangeEnded]) -> None:
        if self.ended is not None:
            return
        self.completed_at = datetime.now(UTC)
        self.duration_ms = round(self.elapsed_ms(), 3)
        self.ended = event_type(self)
        self.publish(self.ended)
        # The subscribers have read what they need of the parsed body (the record keeps the
        # bytes): a queued exchange holding a 100 KB body parsed would hold thousands of
        # objects for the garbage collector to walk until the writer is done with it.
        self.request_json = None
