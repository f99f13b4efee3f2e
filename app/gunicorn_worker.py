"""Serving under gunicorn (packaging/gunicorn.conf.py): a gevent worker that runs the app the way
`python wsgi.py` does, and gunicorn's own log lines in our format.

gunicorn's stock gevent workers would lose what the proxy needs from the server (app/serve.py):
the exact request target and header names, the client socket that shows a hang-up mid-stream,
TCP_NODELAY, and a drain that closes idle keep-alive connections and ends the dashboard's live
streams. So each worker serves with app/serve.py's Server and Handler, starts the background
owners (writer, notifier, samples, live feed) itself, and on SIGTERM drains for up to
SHUTDOWN_GRACE_S, then writes or spools the queued rows before it exits.

Migrations are not applied here but once, before the workers start (the config's `on_starting`
hook), so a worker respawned while the database is down still serves and spools.
"""

from __future__ import annotations

import logging
import time

import gevent
from gevent.pool import Pool
from gunicorn import glogging
from gunicorn.workers.ggevent import GeventWorker

from app.logs import configure_logging

log = logging.getLogger(__name__)


class Worker(GeventWorker):
    def run(self) -> None:
        from app import shutdown
        from app.serve import Server, begin_drain, settle_runtime, start_owners

        app = self.wsgi
        start_owners(app)
        settle_runtime()
        servers = []
        for sock in self.sockets:
            sock.setblocking(1)
            server = Server(sock, application=app, spawn=Pool(self.worker_connections),
                            log=None, error_log=logging.getLogger("gevent.pywsgi"))
            server.start()
            servers.append(server)

        while self.alive:  # SIGTERM (gunicorn's graceful stop) clears it
            self.notify()
            gevent.sleep(1.0)

        grace = app.config["NEXUS_SETTINGS"].shutdown_grace_s
        busy = sum(len(server.connections) for server in servers)
        log.info("worker %s shutting down: waiting up to %.0fs for %d connection(s)",
                 self.pid, grace, busy)
        begin_drain(app, servers)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(
                server.pool.free_count() != server.pool.size for server in servers):
            self.notify()  # the arbiter kills a worker that stops reporting
            gevent.sleep(0.1)
        for server in servers:
            server.stop(timeout=1)  # cut what is left
        shutdown(app)
        log.info("worker %s stopped", self.pid)


class Logger(glogging.Logger):
    """gunicorn's error log through our handler (text or JSON, secrets masked); no access log,
    the exchange log says more, once per exchange."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        from app.config import load_settings

        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)
        for logger in (self.error_log, self.access_log):
            logger.handlers.clear()
            logger.propagate = True
        self.access_log.disabled = True
