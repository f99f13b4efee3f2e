"""Serving with gevent: the WSGI server, signal handling and graceful shutdown.

On SIGTERM or SIGINT the server stops accepting, reports not-ready, closes idle keep-alive
connections, ends the dashboard's live streams (app/dashboard/live.py), lets in-flight requests
and streams run for up to SHUTDOWN_GRACE_S, then kills what is left, stops the background owners
(the writer drains its queue, or spools it) and returns (the process exits 0).
"""

from __future__ import annotations

import gc
import logging
import signal
import socket
import sys

import gevent
from flask import Flask
from gevent.event import Event
from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer

from app.errors import error_body
from app.version import __version__

log = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.0005  # see settle_runtime
COALESCE_FIRST_WRITE = 16384  # bytes of body sent with the headers (see Handler)


class Handler(WSGIHandler):
    """gevent's handler, plus what the proxy needs: the exact request target and headers, the
    client socket (to notice hang-ups), and idle/busy tracking for graceful shutdown."""

    busy = False

    def handle(self):
        try:
            # Headers, each chunk and the last chunk are separate writes: with Nagle's algorithm
            # every write after the first waits for the client's delayed ACK (~40 ms).
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a Unix socket)
        self.server.connections.add(self)
        try:
            super().handle()
        finally:
            self.server.connections.discard(self)

    def read_requestline(self):
        line = super().read_requestline()
        self.busy = True
        return line

    def handle_one_request(self):
        result = None
        try:
            result = super().handle_one_request()
        finally:
            self.busy = False
            if self.server.draining:
                self.close_connection = True
        # gevent decided on keep-alive before the flag above: a response that ended while
        # draining (a live stream, a keep-alive client's last request) must close, not wait.
        return None if result is True and self.close_connection else result

    def run_application(self):
        super().run_application()
        if self.close_connection and self.wsgi_input is not None:
            # gevent would read and discard the rest of the body before closing: for a refused
            # upload (413) that can be gigabytes. The connection is closing; skip it.
            self.wsgi_input.content_length = self.wsgi_input.position
            self.wsgi_input.chunked_input = False

    def _write_with_headers(self, data):
        # gevent sends the headers, then the first piece of the body, in two sends; one send
        # is one syscall less, and on loopback the sender also pays for the receiver's TCP
        # processing of every segment. A large first piece keeps gevent's way (no copy).
        if len(data) > COALESCE_FIRST_WRITE:
            return super()._write_with_headers(data)
        self.headers_sent = True
        self.finalize_headers()
        towrite = bytearray(b"HTTP/1.1 ")  # status and headers are latin-1 bytes already
        towrite += self.status
        towrite += b"\r\n"
        for header, value in self.response_headers:
            towrite += header
            towrite += b": "
            towrite += value
            towrite += b"\r\n"
        towrite += b"\r\n"
        if data and self.response_use_chunked:
            towrite += b"%x\r\n" % len(data)
            towrite += data
            towrite += b"\r\n"
        else:
            towrite += data
        self._sendall(towrite)

    def _handle_client_error(self, ex):
        # A request gevent cannot parse (more than 100 headers, a bad request line, a broken
        # chunked body): gevent prints a bare traceback for some of them and answers an empty
        # 400. One log line, and the error in Anthropic's shape like every other refusal.
        reason = (str(ex) or type(ex).__name__).splitlines()[0][:200]
        log.warning("invalid request from %s: %s", self.client_address[0]
                    if isinstance(self.client_address, tuple) else self.client_address, reason)
        body = error_body("invalid_request_error", f"The request could not be parsed: {reason}")
        head = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
        return "400", head + body

    def get_environ(self):
        env = super().get_environ()
        env["RAW_URI"] = self.path
        env["nexus.client_socket"] = self.socket
        # Same rule as gevent's environ: names with "_" are dropped (header smuggling).
        env["nexus.raw_headers"] = [(k, v) for k, v in self.headers.items() if "_" not in k]
        return env

    def log_request(self):
        pass  # the exchange log says more, once per exchange

    def close_if_idle(self) -> None:
        if not self.busy and self.socket is not None:
            try:
                self.socket.shutdown(socket.SHUT_RD)  # its pending readline returns at once
            except OSError:
                pass


class Server(WSGIServer):
    handler_class = Handler

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.connections: set[Handler] = set()
        self.draining = False


def serve(app: Flask, host: str | None = None, port: int | None = None) -> int:
    """Serve until SIGTERM/SIGINT, then shut down gracefully; returns the exit code."""
    from app import shutdown
    from app.storage import upgrade_on_start
    from app.storage.database import StorageError

    settings = app.config["NEXUS_SETTINGS"]
    host = host or settings.host
    port = port or settings.port
    try:
        upgrade_on_start(app)  # before listening: no client meets a half-built schema
    except StorageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    try:
        # A pool (unbounded) rather than bare spawning, so that stop() can wait for it.
        server = Server((host, port), app, spawn=Pool(), log=None,
                        error_log=logging.getLogger("gevent.pywsgi"))
        server.init_socket()
    except OSError as err:
        print(f"error: cannot listen on {host}:{port}: {err.strerror or err}", file=sys.stderr)
        return 1

    stop = Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    start_owners(app)
    settle_runtime()
    server.start()
    base = f"http://{_display_host(host)}:{server.server_port}"
    log.info("Claude Nexus Proxy %s listening on %s, forwarding to %s", __version__, base,
             settings.claude_api_base_url)
    print(f"\nClaude Nexus Proxy {__version__} is running on {base}\n"
          f"  Point Claude Code at it:  export ANTHROPIC_BASE_URL={base}\n"
          f"  Health:                   {base}/health\n", flush=True)

    stop.wait()
    # A second signal (a second Ctrl-C) cuts what is still running instead of waiting.
    gevent.signal_handler(signal.SIGTERM, _cut, server)
    gevent.signal_handler(signal.SIGINT, _cut, server)
    grace = settings.shutdown_grace_s
    log.info("shutting down: waiting up to %.0fs for %d connection(s)", grace,
             len(server.connections))
    begin_drain(app, [server])
    server.stop(timeout=grace)  # waits for busy handlers, then kills the rest
    shutdown(app)
    log.info("stopped")
    return 0


def start_owners(app: Flask) -> None:
    """Start the background owners of a serving process (this server, or a gunicorn worker).

    Before listening, so no exchange ends unrecorded; the writer's loop (and the replay of any
    spool left by an earlier run) only runs once the caller's greenlet waits."""
    from app import notify, samples, storage
    from app.auth import log_credential_states
    from app.dashboard import live

    storage.start(app)
    notify.start(app)
    samples.start(app)
    live.start(app)
    log_credential_states(app)


def settle_runtime() -> None:
    """Once start-up is done, before serving, tune the interpreter for the hub's sake.

    - Freeze what start-up built (modules, classes, functions, the app: some 80,000 objects)
      out of the garbage collector's reach: a full collection walks every object it tracks,
      with the hub stopped, tens of milliseconds each time for objects that live as long as
      the process.
    - Hand the GIL over sooner (SWITCH_INTERVAL_S): the writer builds and inserts rows in a
      native thread (app/storage/runner.py), and while it holds the GIL the hub, woken by a
      socket, waits for it up to the switch interval — 5 ms by default, at every wake-up of
      every request in flight. Shorter still (0.2 ms) the two threads trade the GIL so often
      that both run slower.
    """
    gc.collect()  # start-up's own garbage first: frozen, it would never be collected
    gc.freeze()
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def begin_drain(app: Flask, servers: list[Server]) -> None:
    """The start of a graceful stop: report not-ready, stop accepting, close idle keep-alive
    connections and end the dashboard's live streams (they never end by themselves, and would
    hold the whole grace period). In-flight requests and streams go on."""
    from app.dashboard import live

    app.extensions["nexus.health"].draining = True
    for server in servers:
        server.draining = True
        server.close()  # stop accepting
        for handler in list(server.connections):
            handler.close_if_idle()
    live.stop(app)


def _cut(server: Server) -> None:
    log.warning("second signal: cutting %d in-flight connection(s)", len(server.connections))
    server.pool.kill(block=False)


def _display_host(host: str) -> str:
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
