"""`/metrics` in Prometheus text format (SPEC §9.3).

    recorder.py   event-driven: requests, tokens, cost, latencies, upstream attempts, alerts
    collector.py  read at scrape time: writer, spool, database check, notifier, live feed,
                  build info, uptime

Every app has its own CollectorRegistry (tests build many apps in one process). Access: open
while DASHBOARD_API_KEY is unset (a scraper in another container must reach it); once the key is
set, every caller presents it, loopback included, as for `/api` — behind a reverse proxy on the
same host every client would look like loopback (app/api/access.py).

Several processes (gunicorn workers): with PROMETHEUS_MULTIPROC_DIR set in the environment
before start, prometheus_client keeps the event-driven metrics in files of that folder, and a
scrape of any worker answers their sum over all workers (MultiProcessCollector), plus the
scrape-time state of the worker that answered.
"""

from __future__ import annotations

import atexit
import os

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector

from app.api import access
from app.config import ConfigError
from app.metrics.collector import StateCollector
from app.metrics.recorder import ExchangeMetrics

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

bp = Blueprint("metrics", __name__)


class Metrics:
    """The app's metrics: `app.extensions["nexus.metrics"]`."""

    def __init__(self, app: Flask):
        self.multiproc_dir = os.environ.get(MULTIPROC_ENV) or None
        if self.multiproc_dir and not os.path.isdir(self.multiproc_dir):
            # Checked first: prometheus_client opens its files there as metrics are created.
            raise ConfigError(f"{MULTIPROC_ENV}={self.multiproc_dir!r}: not a folder (create "
                              "it, empty, before the processes start)")
        self.registry = CollectorRegistry()
        # The writer's price table, so costs match the rows; storage is set up after us.
        self.exchanges = ExchangeMetrics(
            self.registry,
            prices=lambda: getattr(app.extensions.get("nexus.writer"), "prices", None))
        self.state = StateCollector(app)
        if self.multiproc_dir:
            from prometheus_client import multiprocess

            # The scrape sums every worker's files; the state is this worker's own.
            self.scrape = CollectorRegistry()
            multiprocess.MultiProcessCollector(self.scrape, path=self.multiproc_dir)
            self.scrape.register(self.state)
            # A worker's live gauges (in flight) must leave the sum when it exits; gunicorn's
            # child_exit hook should call mark_process_dead too, for workers that crash.
            atexit.register(multiprocess.mark_process_dead, os.getpid(), self.multiproc_dir)
        else:
            self.registry.register(self.state)
            ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, memory, …
            self.scrape = self.registry

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """(body, content type) in the format the scraper asks for: Prometheus text 0.0.4
        unless its Accept header names OpenMetrics or text 1.0.0."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.scrape), content_type


@bp.route("/metrics")
def metrics() -> Response:
    key = current_app.config["NEXUS_SETTINGS"].dashboard_api_key
    if key is not None:
        access.check(request.remote_addr, request.headers, key)
    body, content_type = current_app.extensions["nexus.metrics"].render(
        request.headers.get("Accept"))
    return Response(body, content_type=content_type,
                    headers={"Cache-Control": "no-store"})


def init_app(app: Flask) -> None:
    """Create the metrics, subscribe them to the event bus, register `/metrics`."""
    metrics = Metrics(app)
    metrics.exchanges.subscribe(app.extensions["nexus.events"])
    app.extensions["nexus.metrics"] = metrics
    app.register_blueprint(bp)
