"""The sample collector: the owner of the queue of ended exchanges and of the worker that writes
each one into TEST_SAMPLES_DIR.

    bus ─► subscriber (request path: append the exchange, wake) ─► queue (bounded)
        ─► worker: sample_of (masking) ─► temp file ─► rename

The subscriber never does I/O and never builds the sample: past QUEUE_MAX queued exchanges the
new one is dropped and counted. The worker is a greenlet when gevent has patched threading
(`python wsgi.py`, gunicorn's gevent worker) and each sample is built and written in the hub's
native thread pool — file writes never yield, and a large body would otherwise freeze every
stream for the time of its write; without gevent it is a daemon thread. On stop the worker has
STOP_FLUSH_S to write what is queued; what is left is logged as lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from app.events import EventBus, ExchangeEnded
from app.proxy.exchange import Exchange
from app.samples.files import write_sample
from app.samples.sample import sample_of

log = logging.getLogger(__name__)

QUEUE_MAX = 1000
STOP_FLUSH_S = 5.0

NEW, RUNNING, STOPPING, STOPPED = "new", "running", "stopping", "stopped"


class SampleCollector:
    """Owns the queue and the worker; `app.extensions["nexus.samples"]`."""

    def __init__(self, folder: str | Path, *, queue_max: int = QUEUE_MAX,
                 stop_flush_s: float = STOP_FLUSH_S):
        self.folder = Path(folder)
        self.queue_max, self.stop_flush_s = queue_max, stop_flush_s
        self.written = self.dropped = self.failed = 0
        self.last_error: str | None = None
        self._queue: deque[Exchange] = deque()
        self._state = NEW
        self._green = False
        self._wake: Any = threading.Event()
        self._worker: Any = None
        self._deadline = 0.0

    # ---------------------------------------------------------------- request path

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(ExchangeEnded, self._on_ended)

    def _on_ended(self, event: ExchangeEnded) -> None:
        self.enqueue(event.exchange)

    def enqueue(self, exchange: Exchange) -> None:
        """Queue an ended exchange for the worker (no I/O); past the bound it is dropped."""
        if self._state == STOPPED or len(self._queue) >= self.queue_max:
            self.dropped += 1
            return
        self._queue.append(exchange)
        self._wake.set()

    def metrics(self) -> dict[str, Any]:
        """Samples queued, written, dropped (queue full or stopped), failed (not written)."""
        return {"state": self._state, "folder": str(self.folder), "queued": len(self._queue),
                "written": self.written, "dropped": self.dropped, "failed": self.failed,
                "last_error": self.last_error}

    # ---------------------------------------------------------------- life

    def start(self) -> None:
        """Start the worker (a greenlet under gevent, else a daemon thread)."""
        if self._state != NEW:
            return
        from gevent import monkey

        self._state = RUNNING
        self._green = monkey.is_module_patched("threading")
        if self._green:
            import gevent
            from gevent.event import Event

            self._wake = Event()
            self._worker = gevent.spawn(self._run)
        else:
            self._wake = threading.Event()
            self._worker = threading.Thread(target=self._run, name="nexus-samples",
                                            daemon=True)
            self._worker.start()
        if self._queue:
            self._wake.set()
        log.info("samples: writing each exchange to %s", self.folder.resolve())

    def stop(self, timeout: float | None = None) -> None:
        """Write what is queued for up to `timeout` (STOP_FLUSH_S), then give up on the rest.
        A collector never started writes its queue here, in the caller."""
        timeout = self.stop_flush_s if timeout is None else timeout
        self._deadline = time.monotonic() + timeout
        if self._state == NEW:
            self._state = STOPPING
            self._drain()
        elif self._state == RUNNING:
            self._state = STOPPING
            self._wake.set()
            self._worker.join(timeout + 1.0)
            alive = not self._worker.dead if self._green else self._worker.is_alive()
            if alive and self._green:
                self._worker.kill(block=True, timeout=1)
        else:
            return
        self._state = STOPPED
        if self._queue:
            self.dropped += len(self._queue)
            log.warning("samples: %d exchange(s) not written at shutdown (no time left)",
                        len(self._queue))
            self._queue.clear()
        if self.dropped or self.failed:
            log.warning("samples: %d written, %d dropped (queue full), %d failed",
                        self.written, self.dropped, self.failed)

    # ---------------------------------------------------------------- worker

    def _run(self) -> None:
        while True:
            self._wake.clear()
            self._drain()
            if self._state != RUNNING:
                return
            self._wake.wait()

    def _drain(self) -> None:
        while self._queue:
            if self._state != RUNNING and time.monotonic() >= self._deadline:
                return
            self._write(self._queue.popleft())

    def _write(self, exchange: Exchange) -> None:
        try:
            if self._green:
                import gevent

                gevent.get_hub().threadpool.apply(self._build_and_write, (exchange,))
            else:
                self._build_and_write(exchange)
            self.written += 1
        except Exception as err:  # a full disk or an odd exchange must not stop the worker
            self.failed += 1
            self.last_error = f"{type(err).__name__}: {err}"
            log.warning("samples: cannot write the sample of %s: %s", exchange.id,
                        self.last_error)

    def _build_and_write(self, exchange: Exchange) -> Path:
        return write_sample(self.folder, sample_of(exchange))
