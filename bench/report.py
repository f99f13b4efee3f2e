"""From raw samples to the Markdown tables.

Each round measures every workload once direct and once through the proxy, back to back, so a
round's proxy-minus-direct difference sees the same machine load on both sides. The tables
show the median over rounds of each per-round figure: on a shared, noisy 2-core machine one
round can be off by a lot, the median of several rarely is.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bench.loadgen import Outcome


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
    """One workload on one target (direct or proxy) in one round; times in milliseconds."""

    latency_p50: float
    latency_p99: float
    ttfb_p50: float
    ttfb_p99: float
    rate: float  # completed requests per second of the measured window
    completed: int
    errors: int
    # CPU use in % of one core over the measured window: all client workers together, the
    # fake upstream, the proxy (None on the direct side). Which one nears 100 % is the
    # bottleneck (the fake and the proxy are one process each, essentially one core).
    client_cpu_pct: float
    upstream_cpu_pct: float
    proxy_cpu_pct: float | None
    proxy_cpu_ms: float | None  # proxy CPU per completed request
    first_error: str | None

    @classmethod
    def of(cls, outcome: Outcome, duration_s: float, upstream_cpu_s: float,
           proxy_cpu_s: float | None) -> Side:
        n = max(outcome.completed, 1)
        return cls(
            latency_p50=percentile(outcome.latency, 50) * 1000,
            latency_p99=percentile(outcome.latency, 99) * 1000,
            ttfb_p50=percentile(outcome.ttfb, 50) * 1000,
            ttfb_p99=percentile(outcome.ttfb, 99) * 1000,
            rate=outcome.completed / duration_s,
            completed=outcome.completed,
            errors=outcome.errors,
            client_cpu_pct=100 * outcome.cpu_s / duration_s,
            upstream_cpu_pct=100 * upstream_cpu_s / duration_s,
            proxy_cpu_pct=None if proxy_cpu_s is None else 100 * proxy_cpu_s / duration_s,
            proxy_cpu_ms=None if proxy_cpu_s is None else 1000 * proxy_cpu_s / n,
            first_error=outcome.first_error,
        )


def median_of(rounds: list[tuple[Side, Side]], figure) -> float:
    """Median over rounds of figure(direct, proxy)."""
    return statistics.median(figure(direct, proxy) for direct, proxy in rounds)


def _ms(value: float) -> str:
    return f"{value:.2f}"


def _added(value: float) -> str:
    return f"{value:+.2f}"


def _ratio(value: float) -> str:
    return f"{value:.3f}×" if value < 0.1 else f"{value:.2f}×"  # 0.005× must not read 0.00×


def latency_table(results: list[tuple[object, list[tuple[Side, Side]]]]) -> str:
    """Rows: total latency for every workload, and TTFB for the streaming ones."""
    head = ("| workload | conc | measure | direct p50 | proxy p50 | **added p50** | "
            "direct p99 | proxy p99 | **added p99** | proxy/direct p50 |")
    rows = [head, "|" + "---|" * 10]
    for workload, rounds in results:
        measures = [("total", "latency")]
        if workload.stream:
            measures = [("TTFB", "ttfb"), ("total", "latency")]
        for label, name in measures:
            def get(side: Side, q: str, name: str = name) -> float:
                return getattr(side, f"{name}_{q}")
            cells = [
                workload.title, str(workload.concurrency), label,
                _ms(median_of(rounds, lambda d, p: get(d, "p50"))),
                _ms(median_of(rounds, lambda d, p: get(p, "p50"))),
                "**" + _added(median_of(rounds, lambda d, p: get(p, "p50") - get(d, "p50")))
                + "**",
                _ms(median_of(rounds, lambda d, p: get(d, "p99"))),
                _ms(median_of(rounds, lambda d, p: get(p, "p99"))),
                "**" + _added(median_of(rounds, lambda d, p: get(p, "p99") - get(d, "p99")))
                + "**",
                _ratio(median_of(rounds, lambda d, p: get(p, "p50") / get(d, "p50"))),
            ]
            rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def throughput_table(results: list[tuple[object, list[tuple[Side, Side]]]]) -> str:
    head = ("| workload | conc | direct req/s | proxy req/s | **proxy/direct** | "
            "proxy CPU ms/req | proxy CPU % | fake CPU % (direct / via proxy) | "
            "client CPU % (direct / via proxy) | errors |")
    rows = [head, "|" + "---|" * 10]
    for workload, rounds in results:
        errors = sum(d.errors + p.errors for d, p in rounds)
        cells = [
            workload.title, str(workload.concurrency),
            f"{median_of(rounds, lambda d, p: d.rate):.0f}",
            f"{median_of(rounds, lambda d, p: p.rate):.0f}",
            "**" + _ratio(median_of(rounds, lambda d, p: p.rate / d.rate)) + "**",
            _ms(median_of(rounds, lambda d, p: p.proxy_cpu_ms)),
            f"{median_of(rounds, lambda d, p: p.proxy_cpu_pct):.0f}",
            f"{median_of(rounds, lambda d, p: d.upstream_cpu_pct):.0f} / "
            f"{median_of(rounds, lambda d, p: p.upstream_cpu_pct):.0f}",
            f"{median_of(rounds, lambda d, p: d.client_cpu_pct):.0f} / "
            f"{median_of(rounds, lambda d, p: p.client_cpu_pct):.0f}",
            str(errors),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def spread_line(results: list[tuple[object, list[tuple[Side, Side]]]]) -> str:
    """How much the per-round added p50 moved: the noise to read the table against."""
    parts = []
    for workload, rounds in results:
        name = "ttfb" if workload.stream else "latency"
        added = [getattr(p, f"{name}_p50") - getattr(d, f"{name}_p50") for d, p in rounds]
        parts.append(f"{workload.key} {min(added):+.2f}…{max(added):+.2f}")
    label = "added p50 range over rounds, ms (TTFB for streams)"
    return f"{label}: " + "; ".join(parts)
