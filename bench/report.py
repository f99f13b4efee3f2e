"""From raw samples to the Markdown tables.

Each round measures every workload once on every target, back to back, so a round's
target-minus-direct difference sees the same machine load on both sides. The tables show the
median over rounds of each per-round figure: on a shared, noisy 2-core machine one round can be
off by a lot, the median of several rarely is.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass

from bench.loadgen import Outcome

# The targets for the product (one gevent worker, fake upstream with no delay).
ADDED_P50_MAX_MS = 1.5  # concurrency 1, non-streaming, total latency
ADDED_P99_MAX_MS = 5.0  # concurrency 1, total latency (non-streaming) or TTFB (streams)
TTFB_ADDED_P50_MAX_MS = 2.0  # concurrency 1, streams
VS_LITELLM_MIN = 10.0  # throughput ÷ LiteLLM's, workloads 1-3, recording on
W3_VS_DIRECT_MIN = 0.6  # workload 3 throughput ÷ direct


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linearly interpolated; NaN without samples."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class Side:
    """One workload on one target in one round; times in milliseconds."""

    latency_p50: float
    latency_p99: float
    ttfb_p50: float
    ttfb_p99: float
    rate: float  # completed requests per second of the measured window
    completed: int
    errors: int
    # CPU use in % of one core over the measured window: all client workers together, the
    # fake upstream, and the target's own process tree (for `direct`, the fake again). Which
    # one nears 100 % is the bottleneck (each server under test has one worker process).
    client_cpu_pct: float
    upstream_cpu_pct: float
    server_cpu_pct: float
    server_cpu_ms: float  # the target's CPU per completed request
    first_error: str | None

    @classmethod
    def of(cls, outcome: Outcome, duration_s: float, upstream_cpu_s: float,
           server_cpu_s: float) -> Side:
        n = outcome.completed
        return cls(
            latency_p50=percentile(outcome.latency, 50) * 1000,
            latency_p99=percentile(outcome.latency, 99) * 1000,
            ttfb_p50=percentile(outcome.ttfb, 50) * 1000,
            ttfb_p99=percentile(outcome.ttfb, 99) * 1000,
            rate=n / duration_s,
            completed=n,
            errors=outcome.errors,
            client_cpu_pct=100 * outcome.cpu_s / duration_s,
            upstream_cpu_pct=100 * upstream_cpu_s / duration_s,
            server_cpu_pct=100 * server_cpu_s / duration_s,
            server_cpu_ms=1000 * server_cpu_s / n if n else float("nan"),
            first_error=outcome.first_error,
        )

    def get(self, measure: str, q: str) -> float:
        """measure: "latency" or "ttfb"; q: "p50" or "p99"."""
        return getattr(self, f"{measure}_{q}")


Round = dict[str, Side]  # target name -> its figures in that round
Results = list[tuple[object, list[Round]]]  # (workload, rounds)


def median_of(rounds: list[Round], figure: Callable[[Round], float]) -> float:
    """Median over rounds of figure(round), ignoring rounds where it is undefined (NaN)."""
    values = []
    for one in rounds:
        try:
            value = figure(one)
        except ZeroDivisionError:
            continue
        if not math.isnan(value):
            values.append(value)
    return statistics.median(values) if values else float("nan")


def _ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f}"


def _added(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:+.2f}"


def _ratio(value: float) -> str:
    if math.isnan(value):
        return "–"
    return f"{value:.3f}×" if value < 0.1 else f"{value:.2f}×"  # 0.005× must not read 0.00×


def _pct(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.0f}"


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def workload_table(entries: Results, names: list[str]) -> str:
    """One workload (its c=1 and c=10 entries), one column per target."""
    rows = [_row(["measure", *names]), "|" + "---|" * (len(names) + 1)]
    for workload, rounds in entries:
        c = f"c={workload.concurrency}"
        measures = [("TTFB", "ttfb"), ("total", "latency")] if workload.stream else [
            ("", "latency")]
        for label, measure in measures:
            for q in ("p50", "p99"):
                cells = [f"{c} {label + ' ' if label else ''}{q} ms (added)"]
                for name in names:
                    value = median_of(rounds, lambda r, n=name, m=measure, q=q: r[n].get(m, q))
                    if name == "direct":
                        cells.append(_ms(value))
                        continue
                    added = median_of(rounds, lambda r, n=name, m=measure, q=q:
                                      r[n].get(m, q) - r["direct"].get(m, q))
                    cells.append(f"{_ms(value)} (**{_added(added)}**)")
                rows.append(_row(cells))
        cells = [f"{c} req/s (÷ direct)"]
        for name in names:
            rate = median_of(rounds, lambda r, n=name: r[n].rate)
            if name == "direct":
                cells.append(f"{rate:.0f}")
            else:
                ratio = median_of(rounds, lambda r, n=name: r[n].rate / r["direct"].rate)
                cells.append(f"{rate:.0f} (**{_ratio(ratio)}**)")
        rows.append(_row(cells))
        rows.append(_row([f"{c} CPU ms/req", *(
            _ms(median_of(rounds, lambda r, n=name: r[n].server_cpu_ms)) for name in names)]))
        cells = [f"{c} CPU % self / fake / client"]
        for name in names:
            own = "–" if name == "direct" else _pct(
                median_of(rounds, lambda r, n=name: r[n].server_cpu_pct))
            fake = _pct(median_of(rounds, lambda r, n=name: r[n].upstream_cpu_pct))
            client = _pct(median_of(rounds, lambda r, n=name: r[n].client_cpu_pct))
            cells.append(f"{own} / {fake} / {client}")
        rows.append(_row(cells))
        errors = [sum(r[name].errors for r in rounds) for name in names]
        if any(errors):
            rows.append(_row([f"{c} errors", *(str(e) for e in errors)]))
    return "\n".join(rows)


def _verdict(value: float, limit: float, at_most: bool, text: str) -> str:
    if math.isnan(value):
        return "–"
    met = value <= limit if at_most else value >= limit
    return f"{text} met" if met else f"{text} **missed**"


def targets_table(results: Results, names: list[str]) -> str:
    """The issue's targets for the product, measured value against target, met or missed."""
    proxies = [n for n in names if n.startswith("proxy-")]
    if not proxies:
        return "(no proxy target was measured)"
    rows = [_row(["criterion", "workload", "target", *proxies]),
            "|" + "---|" * (3 + len(proxies))]
    by_key = {w.key: (w, rounds) for w, rounds in results}

    def added(key: str, measure: str, q: str, limit: float, label: str) -> None:
        if key not in by_key:
            return
        workload, rounds = by_key[key]
        cells = [label, f"{workload.title}, c={workload.concurrency}", f"≤ {limit:g} ms"]
        for name in proxies:
            value = median_of(rounds, lambda r, n=name: r[n].get(measure, q)
                              - r["direct"].get(measure, q))
            cells.append(_verdict(value, limit, True, _added(value)))
        rows.append(_row(cells))

    added("small_json_c1", "latency", "p50", ADDED_P50_MAX_MS, "added p50")
    added("small_json_c1", "latency", "p99", ADDED_P99_MAX_MS, "added p99")
    for key in ("small_stream_c1", "claude_code_c1"):
        added(key, "ttfb", "p50", TTFB_ADDED_P50_MAX_MS, "added TTFB p50")
        added(key, "ttfb", "p99", ADDED_P99_MAX_MS, "added TTFB p99")

    def rate_ratio(key: str, other: str, limit: float, label: str) -> None:
        if key not in by_key or other not in names:
            return
        workload, rounds = by_key[key]
        cells = [label, f"{workload.title}, c={workload.concurrency}", f"≥ {limit:g}×"]
        for name in proxies:
            value = median_of(rounds, lambda r, n=name: r[n].rate / r[other].rate)
            cells.append(_verdict(value, limit, False, _ratio(value)))
        rows.append(_row(cells))

    for workload, _ in results:
        rate_ratio(workload.key, "litellm", VS_LITELLM_MIN, "req/s ÷ LiteLLM's")
    for key in ("claude_code_c1", "claude_code_c10"):
        rate_ratio(key, "direct", W3_VS_DIRECT_MIN, "req/s ÷ direct")
    return "\n".join(rows)


def memory_table(targets) -> str:
    """VmRSS of every target's process tree after start-up and after the run, and peak."""
    names = [t.name for t in targets]
    rows = [_row(["MiB", *names]), "|" + "---|" * (len(names) + 1)]
    for key, label in (("start", "VmRSS after start-up"), ("end", "VmRSS after the run"),
                       ("peak", "peak (VmHWM)")):
        rows.append(_row([label, *(f"{t.memory.get(key, float('nan')) / 1024:.1f}"
                                   for t in targets)]))
    return "\n".join(rows)


def noise_table(results: Results, names: list[str]) -> str:
    """How much each per-round added p50 moved: the noise to read the tables against."""
    others = [n for n in names if n != "direct"]
    rows = [_row(["added p50 min…max, ms", *others]), "|" + "---|" * (len(others) + 1)]
    for workload, rounds in results:
        measure = "ttfb" if workload.stream else "latency"
        cells = [f"{workload.key}{' (TTFB)' if workload.stream else ''}"]
        for name in others:
            added = [r[name].get(measure, "p50") - r["direct"].get(measure, "p50")
                     for r in rounds]
            added = [a for a in added if not math.isnan(a)]
            cells.append(f"{min(added):+.2f}…{max(added):+.2f}" if added else "–")
        rows.append(_row(cells))
    return "\n".join(rows)
