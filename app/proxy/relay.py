"""Relaying an upstream body to the client as it arrives, and ending the exchange exactly once.

The generator gets everything as arguments: it runs after Flask has torn down the request
context, and it never touches the database. For SSE it forwards whole events only — each event
the moment its closing blank line arrives — so that a stream cut mid-event can still end with a
clean `event: error` instead of a corrupt half event; the bytes are otherwise exactly as sent.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable, Iterator
from typing import Any

from gevent import get_hub
from gevent.event import Event
from gevent.monkey import get_original

from app.errors import UpstreamError
from app.proxy.exchange import Exchange
from app.proxy.fold import BodyFold, StreamFold
from app.proxy.sse import error_event_bytes, event_boundary
from app.proxy.upstream import TRANSPORT_ERRORS, UpstreamResponse, transport_error

log = logging.getLogger(__name__)

# An "event" larger than this without a blank line is not SSE as we know it: stop holding it.
MAX_HELD_BYTES = 1 << 20

_RawSocket = get_original("socket", "socket")  # the standard library's, never blocking the hub


class ClientWatch:
    """Notices a client that hangs up while the proxy waits on the upstream.

    Without it a disconnect would only show at the next write, which for a non-streaming call
    or a quiet stream can be minutes away while the upstream keeps generating (and billing)
    tokens. `gone` is an Event; `on_gone` registers what to cut once it is set.

    A read watcher on the client's socket, not a greenlet: every open stream has one, and a
    watcher costs a few hundred bytes where a waiting greenlet holds kilobytes of stack.
    """

    def __init__(self, client_socket: socket.socket):
        self.gone = Event()
        self._on_gone: Callable[[], None] | None = None
        self._fileno = client_socket.fileno()
        self._watcher: Any = get_hub().loop.io(self._fileno, 1)  # 1: readable
        self._watcher.start(self._readable)

    def _readable(self) -> None:
        # In the hub: only a peek that cannot block. Bytes mean the client is sending its
        # next request (it is still there); end of file or an error, that it has gone.
        try:
            data = _peek(self._fileno)
        except (BlockingIOError, InterruptedError):
            return  # woken for nothing: keep watching
        except OSError:
            data = b""
        self.stop()
        if data:
            return
        self.gone.set()
        if self._on_gone is not None:
            self._on_gone()

    def on_gone(self, callback: Callable[[], None]) -> None:
        self._on_gone = callback
        if self.gone.is_set():
            callback()

    def stop(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
            watcher.close()


def _peek(fileno: int) -> bytes:
    """The first byte waiting on a socket, left unread; never blocks."""
    sock = _RawSocket(fileno=fileno)
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    finally:
        sock.detach()  # the socket stays the server's


class RelayBody:
    """The response body: iterates `relay`, and still ends the exchange if never iterated."""

    def __init__(self, exchange: Exchange, answer: UpstreamResponse, fold: StreamFold | BodyFold,
                 align_events: bool, watch: ClientWatch | None):
        self._exchange, self._answer, self._watch = exchange, answer, watch
        self._iterator = relay(exchange, answer, fold, align_events, watch)

    def __iter__(self) -> Iterator[bytes]:
        return self._iterator

    def close(self) -> None:
        self._iterator.close()
        if self._exchange.ended is None:  # closed before the first chunk was asked for
            if self._watch is not None:
                self._watch.stop()
            self._answer.close()
            self._exchange.disconnect("client closed the connection before the answer")


def relay(exchange: Exchange, answer: UpstreamResponse, fold: StreamFold | BodyFold,
          align_events: bool, watch: ClientWatch | None) -> Iterator[bytes]:
    """Yield the upstream body to the client, fold it on the side, end the exchange."""
    held = b""
    failure: UpstreamError | None = None
    settled = False  # the try block reached a verdict (done, disconnected or failure)
    try:
        chunk = answer.first_chunk
        while chunk:
            at_ms = exchange.elapsed_ms()
            if align_events:
                data = held + chunk if held else chunk
                cut = event_boundary(data)
                if cut == 0 and len(data) > MAX_HELD_BYTES:
                    cut = len(data)
                held, chunk = data[cut:], data[:cut]
            if chunk:
                yield chunk
                exchange.bytes_to_client += len(chunk)
                fold.feed(chunk, at_ms)
            chunk = answer.read()
        if watch is not None and watch.gone.is_set():
            raise ConnectionAbortedError("client gone")
        if held:  # the upstream ended on an unterminated event: pass it on as it is
            yield held
            exchange.bytes_to_client += len(held)
            fold.feed(held, exchange.elapsed_ms())
            held = b""
        fold.finish(exchange.elapsed_ms())
        if isinstance(fold, StreamFold) and not fold.complete and not fold.error:
            failure = UpstreamError("The upstream closed the stream before message_stop.")
        settled = True
    except GeneratorExit:
        settled = True
        # What arrived is folded first: the terminal event's subscribers (metrics, logs,
        # Slack) see the usage and first-token time of the part that was relayed.
        fold.finish(exchange.elapsed_ms())
        exchange.disconnect("client closed the connection mid-answer")
        raise
    except TRANSPORT_ERRORS as err:
        settled = True
        if watch is not None and watch.gone.is_set():
            fold.finish(exchange.elapsed_ms())
            exchange.disconnect("client closed the connection mid-answer")
            return
        failure = transport_error(err, "the next bytes of the answer")
        log.warning("upstream failed mid-answer for %s: %s", exchange.id, err)
    finally:
        if watch is not None:
            watch.stop()
        answer.close()
        fold.finish(exchange.elapsed_ms())
        if not settled:  # an unexpected exception is on its way out
            exchange.fail(RuntimeError("relay aborted by an internal error"),
                          status=answer.status)

    if failure is None:
        if fold.error:  # the upstream's own `event: error`, already relayed
            exchange.fail(UpstreamError(str(fold.error.get("message") or ""),
                                        error_type=str(fold.error.get("type") or "api_error")),
                          status=answer.status)
        else:
            exchange.complete()
        return
    if isinstance(fold, StreamFold) and not fold.error:
        try:
            # Partial event bytes in `held` are dropped: the client sees whole events only.
            yield error_event_bytes(failure.error_type, failure.message)
        except GeneratorExit:
            exchange.disconnect("client closed the connection during the error event")
            raise
    exchange.fail(failure, status=answer.status)
    if not isinstance(fold, StreamFold):
        raise AnswerCutShort(failure.message)


class AnswerCutShort(ConnectionResetError):
    """A plain (non-SSE) answer broke off upstream after its status and headers were sent.

    The client can only learn it from the connection closing short of the announced length;
    ending the body normally would leave it waiting for the rest (Content-Length) or, chunked,
    make half a body look whole. Raised out of the body iterator, an ECONNRESET is what the
    server (gevent's handler) takes as "close this connection, quietly".
    """

    def __init__(self, message: str):
        super().__init__(errno.ECONNRESET, message)

