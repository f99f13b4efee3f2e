"""Health endpoints (SPEC §9.3) and what they report: upstream as last seen, the database (a
bounded, cached check: app/storage/checks.py), the storage writer and its spool, notifications,
the dashboard's live feed, draining state.

`/health` never touches the proxy's request path: it reads counters the owners keep, and the
database check runs on its own connection, at most every few seconds, for at most ~2 s.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, current_app, jsonify

from app.events import EventBus, ExchangeEnded, ExchangeStarted
from app.version import __version__

bp = Blueprint("health", __name__)


class HealthState:
    """Process health: in-flight exchanges, the upstream's last answer, whether we are draining,
    and the database check (built on first use: storage is set up after health)."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.started = time.monotonic()
        self.draining = False
        self.in_flight = 0
        self.upstream_last: dict | None = None
        self._lock = threading.Lock()
        self._database_check: Any = None

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

    def uptime_s(self) -> float:
        return time.monotonic() - self.started

    def database(self) -> dict[str, Any]:
        """The database check's latest result (cached; checks again when it is stale)."""
        if self._database_check is None:
            from app.storage.checks import DatabaseCheck

            writer = self.app.extensions["nexus.writer"]
            self._database_check = DatabaseCheck(self.app.extensions["nexus.db"],
                                                 progress=lambda: writer.rows_written)
        return self._database_check.result()

    def report(self) -> dict:
        from app.storage.checks import spool_report

        upstream = self.upstream_last
        extensions = self.app.extensions
        writer = extensions["nexus.writer"]
        database = self.database()
        status = "ok"
        if self.draining:
            status = "draining"
        elif (upstream is not None and not upstream["reachable"]) or writer.degraded \
                or not database["reachable"]:
            # The proxy still serves; the database fails or rows wait in the spool.
            status = "degraded"
        notifier, live = extensions.get("nexus.notifier"), extensions.get("nexus.live")
        samples = extensions.get("nexus.samples")
        return {
            "status": status,
            "version": __version__,
            "uptime_s": round(self.uptime_s(), 1),
            "in_flight": self.in_flight,
            "upstream": {"base_url": self.app.config["NEXUS_SETTINGS"].claude_api_base_url,
                         "last_seen": upstream},
            "database": database,
            "writer": writer.metrics(),
            "spool": spool_report(writer.spool.folder, writer.spool.pending,
                                  writer.spooler.failing),
            "notifications": notifier.metrics() if notifier is not None else None,
            "live": live.metrics() if live is not None else None,
            "samples": samples.metrics() if samples is not None else None,
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
    state = HealthState(app)
    state.subscribe(app.extensions["nexus.events"])
    app.extensions["nexus.health"] = state
    app.register_blueprint(bp)
