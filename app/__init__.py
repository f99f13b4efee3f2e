"""Claude Nexus Proxy: the application factory, which reads as the table of contents."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from flask import Flask

from app.config import load_settings


def create_app(config: Mapping[str, Any] | None = None, env_file: str | None = ".env") -> Flask:
    """Build the application: settings, logging, event bus, errors, health, auth, storage (the
    database and the batch writer, not started), proxy, CLI.

    `config` overrides settings by name (tests); everything else comes from the environment
    and the optional `.env` file. Raises ConfigError on a bad setting.
    """
    from app import (
        api,
        auth,
        cli,
        dashboard,
        errors,
        health,
        metrics,
        notify,
        proxy,
        samples,
        storage,
    )
    from app.events import EventBus
    from app.logs import ExchangeLog, configure_logging, init_request_ids

    settings = load_settings(overrides=config, env_file=env_file)
    app = Flask(__name__, template_folder="../templates", static_folder="../static")
    app.config["NEXUS_SETTINGS"] = settings
    configure_logging(settings.log_level, settings.log_format)
    init_request_ids(app)

    # Usage windows and relative ranges read the time here, so tests can set the clock.
    app.extensions["nexus.clock"] = lambda: datetime.now(UTC)
    bus = EventBus()
    app.extensions["nexus.events"] = bus
    ExchangeLog(settings.debug).subscribe(bus)

    errors.init_app(app)
    health.init_app(app)
    metrics.init_app(app)
    auth.init_app(app)
    storage.init_app(app)
    notify.init_app(app)
    samples.init_app(app)
    proxy.init_app(app)
    api.init_app(app)
    dashboard.init_app(app)
    cli.init_app(app)
    return app


def shutdown(app: Flask) -> None:
    """Stop the background owners in reverse order of creation (after serving has stopped):
    the upstream pool, then the writer (queued rows to the database, or to the spool past its
    drain deadline), then the database connections, then the test-sample collector (it writes
    what is queued), then the notifier (the drain may have raised quota alerts; it sends what is
    queued for up to 2 s)."""
    from app import notify, samples, storage

    app.extensions["nexus.proxy"].stop()
    storage.close(app)
    samples.stop(app)
    notify.stop(app)
