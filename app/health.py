"""Health endpoints (SPEC §9.3) and what they report: upstream as last seen, the storage
writer, draining state."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from flask import Blueprint, Flask, current_app, jsonify

from app.events import EventBus, ExchangeEnded, ExchangeStarted
from app.version import __version__

bp = Blueprint("health", __name__)


class HealthState:
    """Process health: in-flight exchanges, the upstream's last answer, whether we are draining."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.draining = False
        self.in_flight = 0
        self.upstream_last: dict | None = None
        self._lock = threading.Lock()

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(ExchangeStarted, self._on_started)
        bus.subscribe(ExchangeEnded, self._on_ended)

    def _on_started(self, event: ExchangeStarted) -> None:
        with self._lock:
            self.in_flight += 1

    def _on_ended(self, event: ExchangeEnded) -> None:
        exchange = event.exchange
        with self._lock:
            self.in_flight -= 1
        if exchange.attempts:  # the upstream was contacted: its answer (or silence) counts
            last = exchange.attempts[-1]
            self.upstream_last = {
                "at": datetime.now(UTC).isoformat(timespec="seconds"),
                "status": last.status,
                "error": last.error,
                "reachable": last.status is not None,
            }

    def report(self) -> dict:
        upstream = self.upstream_last
        writer = current_app.extensions["nexus.writer"]
        status = "ok"
        if self.draining:
            status = "draining"
        elif (upstream is not None and not upstream["reachable"]) or writer.degraded:
            # The proxy still serves; the database fails or rows wait in the spool.
            status = "degraded"
        return {
            "status": status,
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "in_flight": self.in_flight,
            "upstream": {"base_url": current_app.config["NEXUS_SETTINGS"].claude_api_base_url,
                         "last_seen": upstream},
            "writer": writer.metrics(),
        }


@bp.route("/health")
def health():
    report = current_app.extensions["nexus.health"].report()
    return jsonify(report), 503 if report["status"] == "draining" else 200


@bp.route("/health/live")
def live():
    """The process answers: restart it if this fails."""
    return jsonify({"status": "ok"})


@bp.route("/health/ready")
def ready():
    """Whether to send traffic here: not while shutting down."""
    state = current_app.extensions["nexus.health"]
    if state.draining:
        return jsonify({"status": "draining"}), 503
    return jsonify({"status": "ready"})


def init_app(app: Flask) -> None:
    state = HealthState()
    state.subscribe(app.extensions["nexus.events"])
    app.extensions["nexus.health"] = state
    app.register_blueprint(bp)
