"""Closed-loop load generation from worker processes, one keep-alive connection each.

Processes rather than threads: under the GIL ten client threads queue behind each other for
up to the 5 ms switch interval, which would show up as "latency" of whatever is measured.
Each worker keeps one connection per target port for the whole run, so every measurement
after the first warm-up starts on warm connections. All workers of a run warm up until a
common start time, measure until a common end time, and report only requests that completed
inside that window.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from typing import Any

from bench.httpclient import Connection, ProtocolError, Result, check_answer

DISPATCH_MARGIN_S = 0.05  # time for every worker to get its job before the warm-up starts


@dataclass
class Job:
    port: int
    request: bytes
    stream: bool
    start_at: float  # time.monotonic(): the clock is system-wide, the same in every process
    end_at: float


@dataclass
class Outcome:
    """What one worker saw in one run; samples are seconds, measured window only."""

    latency: list[float] = field(default_factory=list)
    ttfb: list[float] = field(default_factory=list)
    completed: int = 0
    errors: int = 0  # failed answers, measured window and warm-up alike
    warmup_requests: int = 0
    cpu_s: float = 0.0  # this worker's CPU time during the measured window
    first_error: str | None = None

    def merge(self, other: Outcome) -> None:
        self.latency += other.latency
        self.ttfb += other.ttfb
        self.completed += other.completed
        self.errors += other.errors
        self.warmup_requests += other.warmup_requests
        self.cpu_s += other.cpu_s
        self.first_error = self.first_error or other.first_error


def _one(conn: Connection, job: Job, outcome: Outcome) -> Result | None:
    """One request; returns its Result, or None after counting an error."""
    try:
        result = conn.request(job.request)
    except (OSError, ProtocolError, ValueError) as err:  # ValueError: a malformed number
        conn.close()  # the connection's state is unknown: start a fresh one
        problem = f"{type(err).__name__}: {err}"
        result = None
    else:
        problem = check_answer(result, job.stream)
    if problem is not None:
        outcome.errors += 1
        outcome.first_error = outcome.first_error or problem
        return None
    return result


def run_job(job: Job, conn: Connection) -> Outcome:
    outcome = Outcome()
    # Warm-up: run until the common start, so that every connection on both hops is open
    # and busy when measuring begins (at least one request, even if dispatch was late).
    while True:
        _one(conn, job, outcome)
        outcome.warmup_requests += 1
        if time.monotonic() >= job.start_at:
            break
    cpu_started = time.process_time()
    while time.monotonic() < job.end_at:
        result = _one(conn, job, outcome)
        if result is not None and time.monotonic() <= job.end_at:
            outcome.latency.append(result.total_s)
            outcome.ttfb.append(result.ttfb_s)
            outcome.completed += 1
    outcome.cpu_s = time.process_time() - cpu_started
    return outcome


def _worker(pipe: Pipe, host: str, quickack: bool) -> None:
    connections: dict[int, Connection] = {}
    while (job := pipe.recv()) is not None:
        try:
            if job.port not in connections:
                connections[job.port] = Connection(host, job.port, quickack=quickack)
            conn = connections[job.port]
            pipe.send(run_job(job, conn))
        except Exception:
            pipe.send(Outcome(errors=1, first_error=traceback.format_exc()))
    for conn in connections.values():
        conn.close()


class LoadGenerator:
    """A fixed set of worker processes; `run` uses the first `concurrency` of them."""

    def __init__(self, workers: int, host: str = "127.0.0.1", quickack: bool = False):
        ctx = multiprocessing.get_context("fork")  # cheap, and workers need nothing re-imported
        self._pipes: list[Pipe] = []
        self._procs = []
        for _ in range(workers):
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, host, quickack), daemon=True)
            proc.start()
            child.close()
            self._pipes.append(parent)
            self._procs.append(proc)

    def run(self, port: int, request: bytes, stream: bool, concurrency: int, warmup_s: float,
            duration_s: float, snapshot: Callable[[], Any] = lambda: None
            ) -> tuple[Outcome, Any, Any]:
        """Warm up, then measure for `duration_s`; returns the merged outcome and `snapshot()`
        taken at the window's start and end (CPU counters of the servers, for instance)."""
        if concurrency > len(self._pipes):
            raise ValueError(f"concurrency {concurrency} > {len(self._pipes)} workers")
        start_at = time.monotonic() + DISPATCH_MARGIN_S + warmup_s
        job = Job(port, request, stream, start_at, start_at + duration_s)
        for pipe in self._pipes[:concurrency]:
            pipe.send(job)
        time.sleep(max(0.0, start_at - time.monotonic()))
        before = snapshot()
        time.sleep(max(0.0, job.end_at - time.monotonic()))
        after = snapshot()
        total = Outcome()
        for pipe in self._pipes[:concurrency]:
            total.merge(pipe.recv())
        return total, before, after

    def close(self) -> None:
        for pipe in self._pipes:
            try:
                pipe.send(None)
            except OSError:
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
