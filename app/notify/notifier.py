"""The notifier: the owner of the Slack queue and of the one worker that sends it.

    bus ─► subscriber (request path: copy a small record, append, wake) ─► inbox (bounded)
        ─► worker: target? ─► de-duplicate ─► Block Kit payload ─► outbox (bounded) ─► POST

Subscribers never do I/O: they run on the request path (and in the writer, for quota alerts).
The worker is a greenlet when gevent has patched threading (`python wsgi.py`, gunicorn's gevent
worker), else a daemon thread (tests serving in threads). It posts the outbox in order with
`requests` (10 s timeout); a connection error, a timeout or a 5xx is retried with exponential
back-off (1, 2, 4 … 60 s), a 429 after Slack's `Retry-After`, and meanwhile the messages stay
queued, so none is lost once Slack answers again — up to SLACK_QUEUE_MAX in each queue, past
which the oldest are dropped and counted. A message Slack refuses (another 4xx: a bad payload,
a revoked webhook) would be refused again: it is logged and dropped. One slow or failing
webhook holds up the messages queued behind it; a proxied request never waits for any of it.
On stop, the worker has STOP_FLUSH_S to send what is queued (repeat counts of open
de-duplication windows included), then it is cut and the count of unsent messages is logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests

from app.events import EventBus, ExchangeEnded, OAuthRefreshFailed, UsageAlert
from app.notify.dedupe import Dedupe, Repeats
from app.notify.messages import message_for
from app.notify.records import digest, is_upstream_trouble, upstream_problem, wants_digest
from app.notify.targets import Target, Targets
from app.usage.pricing import PriceTable

log = logging.getLogger(__name__)

SLACK_QUEUE_MAX = 1000
POST_TIMEOUT_S = 10.0
BACKOFF_FIRST_S, BACKOFF_MAX_S = 1.0, 60.0
RETRY_AFTER_MAX_S = 600.0
STOP_FLUSH_S = 2.0
TICK_S = 1.0  # the worker looks for ended de-duplication windows at least this often

NEW, RUNNING, STOPPING, STOPPED = "new", "running", "stopping", "stopped"


@dataclass(slots=True)
class Outgoing:
    target: Target
    payload: dict
    attempts: int = 0


class Notifier:
    """Owns the queues and the worker; `app.extensions["nexus.notifier"]`."""

    def __init__(self, targets: Targets, base_url: str, *, digest: bool = False,
                 prices: PriceTable | None = None,
                 clock: Callable[[], datetime] | None = None,
                 timeout: float = POST_TIMEOUT_S, queue_max: int = SLACK_QUEUE_MAX,
                 stop_flush_s: float = STOP_FLUSH_S):
        self.targets, self.base_url = targets, base_url
        self.digest, self.prices = digest, prices
        self.clock = clock or (lambda: datetime.now(UTC))
        self.timeout, self.queue_max, self.stop_flush_s = timeout, queue_max, stop_flush_s
        self.dedupe = Dedupe()
        self.sent = self.failed = self.dropped = self.retries = self.skipped = 0
        self.last_error: str | None = None
        self._inbox: deque[Any] = deque()
        self._outbox: deque[Outgoing] = deque()
        self._state = NEW
        self._green = False
        self._wake: Any = threading.Event()
        self._worker: Any = None
        self._session: requests.Session | None = None
        self._retry_at = 0.0
        self._backoff = 0.0
        self._deadline = 0.0

    # ---------------------------------------------------------------- request path

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(ExchangeEnded, self._on_ended)
        bus.subscribe(OAuthRefreshFailed, self.enqueue)
        bus.subscribe(UsageAlert, self.enqueue)

    def _on_ended(self, event: ExchangeEnded) -> None:
        if is_upstream_trouble(event):
            self.enqueue(upstream_problem(event.exchange))
        elif self.digest and wants_digest(event):
            self.enqueue(digest(event.exchange))

    def enqueue(self, record: Any) -> None:
        """Queue a record for the worker (no I/O); past the bound the oldest is dropped."""
        if self._state == STOPPED:
            self.dropped += 1
            return
        if len(self._inbox) >= self.queue_max:
            self._inbox.popleft()
            self.dropped += 1
        self._inbox.append(record)
        self._wake.set()

    def metrics(self) -> dict[str, Any]:
        """Figures for /health: messages queued, sent, failed (refused by Slack), dropped (queue
        full), deduplicated (held back as repeats), retries, skipped (no target)."""
        return {"state": self._state, "queued": len(self._inbox) + len(self._outbox),
                "sent": self.sent, "failed": self.failed, "dropped": self.dropped,
                "deduplicated": self.dedupe.suppressed, "retries": self.retries,
                "skipped": self.skipped, "last_error": self.last_error}

    # ---------------------------------------------------------------- life

    def start(self) -> None:
        if self._state != NEW:
            return
        from gevent import monkey

        self._state = RUNNING
        self._session = requests.Session()
        self._green = monkey.is_module_patched("threading")
        if self._green:
            import gevent
            from gevent.event import Event

            self._wake = Event()
            self._worker = gevent.spawn(self._run)
        else:
            self._wake = threading.Event()
            self._worker = threading.Thread(target=self._run, name="nexus-slack", daemon=True)
            self._worker.start()
        if self._inbox:
            self._wake.set()

    def stop(self, timeout: float | None = None) -> None:
        """Send what is queued for up to `timeout` (STOP_FLUSH_S), then give up on the rest."""
        if self._state == NEW:
            self._state = STOPPED
        if self._state != RUNNING:
            return
        timeout = self.stop_flush_s if timeout is None else timeout
        self._deadline = time.monotonic() + timeout
        self._state = STOPPING
        self._wake.set()
        self._worker.join(timeout + 0.5)
        alive = not self._worker.dead if self._green else self._worker.is_alive()
        if alive and self._green:
            self._worker.kill(block=True, timeout=1)  # a post still hanging is cut short
        self._state = STOPPED
        unsent = len(self._inbox) + len(self._outbox) + len(self.dedupe.flush())
        if unsent:
            log.warning("slack: %d notification(s) not sent at shutdown (Slack did not take "
                        "them within %.0fs)", unsent, timeout)
        if self._session is not None and (self._green or not alive):
            self._session.close()

    # ---------------------------------------------------------------- worker

    def _run(self) -> None:
        while True:
            try:
                if self._step():
                    return
            except Exception:
                log.exception("slack: notifier worker error; it carries on")
                time.sleep(TICK_S)

    def _step(self) -> bool:
        """One turn of the worker; True when it is done (stopping, and flushed or out of
        time)."""
        if self._state == STOPPED:  # a thread left hanging in a post by `stop`
            return True
        self._wake.clear()
        self._intake()
        stopping = self._state == STOPPING
        follow_ups = self.dedupe.flush() if stopping else self.dedupe.due(self.clock())
        for record, repeats in follow_ups:
            self._queue_out(record, repeats)
        now = time.monotonic()
        if stopping and (not self._outbox or now >= self._deadline):
            return True
        if self._outbox and now >= self._retry_at:
            self._send(self._outbox[0])
            return False
        wait = TICK_S
        if self._outbox:
            wait = min(wait, self._retry_at - now)
        if stopping:
            wait = min(wait, self._deadline - now)
        self._wake.wait(max(0.0, wait))
        return False

    def _intake(self) -> None:
        while self._inbox:
            record = self._inbox.popleft()
            send, repeats = self.dedupe.admit(record, self.clock())
            if send:
                self._queue_out(record, repeats)

    def _queue_out(self, record: Any, repeats: Repeats | None) -> None:
        target = self.targets.for_domain(getattr(record, "domain", None))
        if target is None:
            self.skipped += 1
            return
        try:
            payload = target.dress(message_for(record, self.base_url, repeats, self.prices))
        except Exception:
            log.exception("slack: could not build a message for %s", type(record).__name__,
                          extra={"request_id": getattr(record, "request_id", None)})
            self.failed += 1
            return
        if len(self._outbox) >= self.queue_max:
            self._outbox.popleft()
            self.dropped += 1
        self._outbox.append(Outgoing(target, payload))

    def _send(self, item: Outgoing) -> None:
        item.attempts += 1
        try:
            answer = self._session.post(item.target.webhook_url, json=item.payload,
                                        timeout=self.timeout)
        except requests.RequestException as err:
            self._retry(item, f"{type(err).__name__}: {err}", None)
            return
        with answer:
            status, body = answer.status_code, answer.text[:200]
            retry_after = answer.headers.get("Retry-After")
        if 200 <= status < 300:
            self._outbox.popleft()
            self.sent += 1
            self._backoff = 0.0
            if item.attempts > 1:
                log.info("slack: %s answers again; %d message(s) queued",
                         item.target.describe(), len(self._outbox))
        elif status == 429 or status >= 500:
            self._retry(item, f"HTTP {status} {body}".strip(),
                        _seconds(retry_after) if status == 429 else None)
        else:
            self._outbox.popleft()
            self.failed += 1
            self.last_error = f"HTTP {status} {body}".strip()
            log.error("slack: %s refused a message (%s); it is dropped",
                      item.target.describe(), self.last_error)

    def _retry(self, item: Outgoing, error: str, retry_after: float | None) -> None:
        self.retries += 1
        self.last_error = error
        if retry_after is not None:
            delay = min(retry_after, RETRY_AFTER_MAX_S)
        else:
            delay = self._backoff = min(self._backoff * 2 or BACKOFF_FIRST_S, BACKOFF_MAX_S)
        self._retry_at = time.monotonic() + delay
        log.warning("slack: delivery to %s failed (%s); retrying in %.0fs, %d message(s) "
                    "queued", item.target.describe(), error, delay, len(self._outbox))


def _seconds(value: str | None) -> float | None:
    """Retry-After in seconds (Slack sends a number); None if absent or not a number."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and seconds >= 0 else None
