"""Where the batch writer's work runs, with gevent or without.

Serving with gevent (`python wsgi.py`, gunicorn's gevent worker): the writer's loop is a
greenlet, and every blocking call it makes — sqlite3, file I/O, CPU-heavy row building — runs
in one of two native threads of its own pool while the greenlet waits cooperatively. sqlite3
and file calls never yield to the hub, so on the hub a big insert would freeze every proxied
stream for its duration. Cooperative calls (psycopg2 under psycogreen) run in a child greenlet
instead. Two threads: one can write the spool while the other waits on the database.

Without gevent (tests that serve in plain threads, scripts), the loop is a daemon thread and
calls run directly in it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

GREEN_CALL_S = 60.0  # a cooperative call (PostgreSQL) that takes longer is given up


class Abandoned(Exception):
    """A database call was given up because the writer is stopping."""


def _outcome(fn: Callable, *args: Any) -> tuple[Any, Exception | None]:
    # Exceptions travel back as values: gevent prints a traceback for any that escapes a pool
    # task or a greenlet, and these (a locked database, a full disk) are expected.
    try:
        return fn(*args), None
    except Exception as err:
        return None, err


class Runner:
    """Runs the writer's loop and its blocking calls; see the module docstring."""

    def __init__(self, on_attention: Callable[[], None], stopping: Callable[[], bool]):
        self._on_attention = on_attention  # called whenever `attention` is set during a call
        self._stopping = stopping
        self.green = False
        self.abandoned = False  # a native call was left running: its resources stay open
        self.wake = threading.Event()       # the loop's own wake-up
        self.attention = threading.Event()  # wakes the loop even in the middle of a call
        self._pool: Any = None
        self._loop: Any = None

    def start(self, target: Callable[[], None]) -> None:
        from gevent import monkey

        self.green = monkey.is_module_patched("threading")
        if self.green:
            import gevent
            from gevent.event import Event
            from gevent.threadpool import ThreadPool

            self.wake, self.attention = Event(), Event()
            self._pool = ThreadPool(2)
            self._loop = gevent.spawn(target)
        else:
            self.wake, self.attention = threading.Event(), threading.Event()
            self._loop = threading.Thread(target=target, name="nexus-writer", daemon=True)
            self._loop.start()

    def call(self, fn: Callable, *args: Any, native: bool = True, database: bool = False):
        """fn(*args), from the loop. Under gevent: in a native thread (native=False: a child
        greenlet), waiting cooperatively. A database call is given up (Abandoned) once the
        writer is stopping, and a cooperative one after GREEN_CALL_S (TimeoutError)."""
        if not self.green:
            return fn(*args)
        import gevent

        task = (self._pool.spawn if native else gevent.spawn)(_outcome, fn, *args)
        deadline = None if native else time.monotonic() + GREEN_CALL_S
        while not task.ready():
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            gevent.wait([task, self.attention], count=1, timeout=timeout)
            self.attention.clear()
            self._on_attention()
            if task.ready() or not database:
                continue
            stopping = self._stopping()
            if stopping or (deadline is not None and time.monotonic() >= deadline):
                if native:
                    self.abandoned = True  # a thread cannot be cut short: it runs on
                else:
                    task.kill(block=False)
                if stopping:
                    raise Abandoned
                raise TimeoutError(f"no answer from the database within {GREEN_CALL_S:.0f}s")
        value, error = task.get()
        if error is not None:
            raise error
        return value

    def sleep(self, seconds: float) -> None:
        if self.green:
            import gevent

            gevent.sleep(seconds)
        else:
            time.sleep(seconds)

    def join(self, timeout: float) -> bool:
        """Wait for the loop to end; False if it is still running (it is then killed when it
        is a greenlet; a thread, a daemon, is left to the process's exit)."""
        self.wake.set()
        self.attention.set()
        self._loop.join(timeout)
        if self.green and not self._loop.dead:
            self._loop.kill(block=False)
            return False
        return self.green or not self._loop.is_alive()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.kill()
