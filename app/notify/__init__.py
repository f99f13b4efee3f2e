"""Notifications (SPEC §8): Slack messages about upstream errors and timeouts, OAuth refresh
failures, quota alerts and, optionally, a digest of each inference request.

    records.py   what a message is about, copied off the events on the request path
    targets.py   which webhook a domain's messages go to
    dedupe.py    identical alerts at most once per 10 minutes, repeats counted
    messages.py  the Block Kit payloads
    notifier.py  the owner: bounded queues and the worker that posts them

The notifier is built (not started) with the app; the server starts it with the writer and
stops it after the writer has drained (a drain can still raise quota alerts).
"""

from __future__ import annotations

from flask import Flask

from app.notify.notifier import Notifier
from app.notify.targets import Defaults, Targets


def init_app(app: Flask) -> None:
    """Create the notifier and subscribe it to the event bus."""
    settings = app.config["NEXUS_SETTINGS"]
    targets = Targets(app.extensions["nexus.access"].store,
                      Defaults(settings.slack_webhook_url, settings.slack_channel,
                               settings.slack_username, settings.slack_icon_emoji))
    writer = app.extensions.get("nexus.writer")
    notifier = Notifier(targets, public_base_url(settings.public_url, settings.host,
                                                 settings.port),
                        digest=settings.slack_conversation_digest,
                        prices=writer.prices if writer is not None else None,
                        clock=lambda: app.extensions["nexus.clock"]())
    notifier.subscribe(app.extensions["nexus.events"])
    app.extensions["nexus.notifier"] = notifier


def public_base_url(public_url: str | None, host: str, port: int) -> str:
    """PUBLIC_URL, else `http://HOST:PORT` (an IPv6 address in brackets)."""
    if public_url:
        return public_url.rstrip("/")
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def start(app: Flask) -> None:
    app.extensions["nexus.notifier"].start()


def stop(app: Flask) -> None:
    """Send what is queued for up to 2 s, then give up on the rest (logged)."""
    app.extensions["nexus.notifier"].stop()
