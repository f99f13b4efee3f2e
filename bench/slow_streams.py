"""Workload 4: many concurrent slow streams through one proxy process.

    .venv/bin/python -m bench.slow_streams [--quick] [--slow-streams N]
                                           [--slow-stream-seconds S] [--direct] [--json PATH]

The fake upstream answers every streamed request with one SSE event every 200 ms for S seconds
(30; --quick 10). N streams (500; --quick 200) are opened through one proxy process (`python
wsgi.py`: gevent, recording on into its default SQLite database, stream chunks kept) and held
until they end. The client is one asyncio loop in this process: one socket per stream, no
thread or process per stream.

Measured: errors (a status other than 200, a reset, a stream that ends without message_stop or
runs past its deadline), the proxy's VmRSS idle before, sampled every second while the streams
are open, and after (once the writer has recorded them), its VmHWM, memory per open stream =
(VmRSS with every stream open - idle VmRSS) / N, and its CPU over the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.processes import HOST, ROOT, Service, clean_env, free_port

EVENT_GAP_MS = 200          # the fake's pause between two events of a stream
FIXED_EVENTS = 6            # message_start, block start, ping, block stop, delta, stop
RAMP_PER_S = 500            # streams opened per second (a burst, not one SYN flood)
TARGET_RSS_MIB = 200
TARGET_PER_STREAM_KIB = 64

SDK_HEADERS = (
    ("Accept", "application/json"),
    ("Content-Type", "application/json"),
    ("User-Agent", "nexus-bench/1"),
    ("anthropic-version", "2023-06-01"),
    ("x-api-key", "sk-ant-bench-0000"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """This workload's options (bench/run takes them too)."""
    parser.add_argument("--slow-streams", type=int, metavar="N",
                        help="workload 4: concurrent streams (500; --quick 200)")
    parser.add_argument("--slow-stream-seconds", type=float, metavar="S",
                        help="workload 4: length of each stream (30; --quick 10)")


def settings(args: argparse.Namespace) -> tuple[int, float]:
    """(streams, seconds per stream) for this run."""
    streams = getattr(args, "slow_streams", None) or (200 if args.quick else 500)
    seconds = getattr(args, "slow_stream_seconds", None) or (10.0 if args.quick else 30.0)
    return streams, seconds


def body(stream: bool = True) -> bytes:
    message = {"model": "claude-sonnet-4-5", "max_tokens": 1024,
               "system": "You are a concise assistant.",
               "messages": [{"role": "user", "content": "Tell me a long story, slowly."}]}
    if stream:
        message["stream"] = True
    return json.dumps(message, separators=(",", ":")).encode()


def raw_request(port: int, payload: bytes) -> bytes:
    lines = ["POST /v1/messages HTTP/1.1", f"Host: {HOST}:{port}",
             *(f"{name}: {value}" for name, value in SDK_HEADERS),
             f"Content-Length: {len(payload)}", "", ""]
    return "\r\n".join(lines).encode("latin-1") + payload


def _status(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "Threads"):
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


# ------------------------------------------------------------------------------ the client


class Stream:
    """One streamed request's life as the client saw it."""

    __slots__ = ("started", "headers_at", "ended", "status", "events", "stopped", "error")

    def __init__(self) -> None:
        self.started = self.headers_at = self.ended = 0.0
        self.status = 0
        self.events = 0
        self.stopped = False
        self.error: str | None = None


async def _read_chunked(reader: asyncio.StreamReader, record: Stream) -> None:
    pending = b""
    while True:
        line = await reader.readline()
        if not line:
            raise ConnectionError("closed before the last chunk")
        size = int(line.split(b";", 1)[0], 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            return
        data = await reader.readexactly(size + 2)
        pending += data[:-2]
        *events, pending = pending.split(b"\n\n")
        record.events += len(events)
        if any(event.startswith(b"event: message_stop") for event in events):
            record.stopped = True


async def one_stream(port: int, request: bytes, deadline_s: float, record: Stream) -> None:
    record.started = time.monotonic()
    writer = None
    try:
        async with asyncio.timeout(deadline_s):
            reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
            writer.write(request)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            record.headers_at = time.monotonic()
            lines = head.decode("latin-1").split("\r\n")
            record.status = int(lines[0].split(" ", 2)[1])
            headers = {name.strip().lower(): value.strip() for name, _, value in
                       (line.partition(":") for line in lines[1:] if line)}
            if headers.get("transfer-encoding", "").lower() == "chunked":
                await _read_chunked(reader, record)
            else:
                length = headers.get("content-length")
                data = await (reader.readexactly(int(length)) if length else reader.read())
                record.events = data.count(b"\n\n")
                record.stopped = b"event: message_stop" in data
        if record.status != 200:
            record.error = f"status {record.status}"
        elif not record.stopped:
            record.error = "no message_stop"
    except TimeoutError:
        record.error = "timeout"
    except (ConnectionError, asyncio.IncompleteReadError) as err:
        record.error = f"reset: {type(err).__name__}"
    except (OSError, ValueError, IndexError) as err:
        record.error = f"{type(err).__name__}: {err}"
    finally:
        record.ended = time.monotonic()
        if writer is not None:
            writer.close()


async def drive(port: int, streams: int, seconds: float, sample: Any,
                interval_s: float = 1.0) -> tuple[list[Stream], list[dict]]:
    """Open `streams` streams (RAMP_PER_S a second), sample every `interval_s` until all end."""
    request = raw_request(port, body())
    records = [Stream() for _ in range(streams)]
    samples: list[dict] = []
    deadline = seconds + 60
    started = time.monotonic()

    async def sampler() -> None:
        while True:
            open_now = sum(1 for r in records if r.headers_at and not r.ended)
            samples.append({"t": round(time.monotonic() - started, 2), "open": open_now,
                            **sample()})
            await asyncio.sleep(interval_s)

    sampling = asyncio.create_task(sampler())
    tasks = []
    for index, record in enumerate(records):
        tasks.append(asyncio.create_task(one_stream(port, request, deadline, record)))
        if index % 25 == 24:
            await asyncio.sleep(25 / RAMP_PER_S)
    await asyncio.gather(*tasks)
    sampling.cancel()
    samples.append({"t": round(time.monotonic() - started, 2), "open": 0, **sample()})
    return records, samples


# ------------------------------------------------------------------------------ the run


def _get_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=10) as answer:
        return json.loads(answer.read())


def _find(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        if key in value:
            return value[key]
        for item in value.values():
            if (found := _find(item, key)) is not None:
                return found
    return None


def _warm_up(port: int) -> None:
    """One plain (not streamed) request: the request path's modules loaded, a pool opened."""
    request = urllib.request.Request(f"http://{HOST}:{port}/v1/messages", data=body(False),
                                     headers=dict(SDK_HEADERS), method="POST")
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()


def _wait_recorded(port: int, rows: int, timeout_s: float) -> int | None:
    """Until the proxy's writer reports `rows` written (its /health), or the timeout."""
    deadline = time.monotonic() + timeout_s
    written = None
    while time.monotonic() < deadline:
        try:
            written = _find(_get_json(port, "/health"), "rows_written")
        except OSError:
            written = None
        if written is not None and written >= rows:
            return written
        time.sleep(0.25)
    return written


def run(args: argparse.Namespace, log) -> dict:
    streams, seconds = settings(args)
    gaps = max(1, round(seconds * 1000 / EVENT_GAP_MS))
    deltas = max(1, gaps - FIXED_EVENTS + 1)
    direct = bool(getattr(args, "direct", False))
    work = Path(tempfile.mkdtemp(prefix="nexus-bench-w4-"))
    fake_port = free_port()
    fake = Service("fake_slow", [sys.executable, "-m", "tests.fakes.upstream", "--host", HOST,
                                 "--port", str(fake_port), "--event-delay-ms",
                                 str(EVENT_GAP_MS), "--events", str(deltas)],
                   fake_port, ROOT, clean_env(PYTHONPATH=str(ROOT)), work)
    proxy = None
    try:
        fake.wait_ready(None)
        target = fake
        if not direct:
            port = free_port()
            env = clean_env(HOST=HOST, PORT=str(port), LOG_LEVEL="warning",
                       CLAUDE_API_BASE_URL=f"http://{HOST}:{fake_port}")
            proxy = Service("proxy_w4", [sys.executable, str(ROOT / "wsgi.py")], port, work,
                            env, work)
            proxy.wait_ready("/health/live")
            target = proxy
        started_kib = _status(target.pid).get("VmRSS", 0)
        _warm_up(target.port)
        if proxy is not None:
            _wait_recorded(proxy.port, 1, 10)
        time.sleep(1.0)
        idle = _status(target.pid)
        log(f"workload 4: {streams} streams × {seconds:g}s ({deltas + FIXED_EVENTS} events "
            f"{EVENT_GAP_MS} ms apart) {'direct to the fake' if direct else 'through the proxy'}"
            f"; idle VmRSS {idle.get('VmRSS', 0) / 1024:.1f} MiB")
        cpu_before, fake_cpu_before, t0 = target.cpu_s(), fake.cpu_s(), time.monotonic()

        def sample() -> dict:
            status = _status(target.pid)
            return {"rss_kib": status.get("VmRSS", 0), "threads": status.get("Threads", 0),
                    "fake_rss_kib": _status(fake.pid).get("VmRSS", 0)}

        records, samples = asyncio.run(drive(target.port, streams, seconds, sample))
        elapsed = time.monotonic() - t0
        cpu_s, fake_cpu_s = target.cpu_s() - cpu_before, fake.cpu_s() - fake_cpu_before
        recorded = None
        if proxy is not None:
            recorded = _wait_recorded(proxy.port, streams + 1, 60)
            time.sleep(1.0)
        after = _status(target.pid)
        result = summarise(streams, seconds, deltas + FIXED_EVENTS, records, samples, idle,
                           after, started_kib, cpu_s, fake_cpu_s, elapsed, direct)
        result["recorded_rows"] = None if recorded is None else recorded - 1
        return result
    finally:
        for service in (proxy, fake):
            if service is not None:
                service.stop()
        shutil.rmtree(work, ignore_errors=True)


def summarise(streams: int, seconds: float, events: int, records: list[Stream],
              samples: list[dict], idle: dict, after: dict, started_kib: int, cpu_s: float,
              fake_cpu_s: float, elapsed: float, direct: bool) -> dict:
    errors: dict[str, int] = {}
    for record in records:
        if record.error:
            errors[record.error] = errors.get(record.error, 0) + 1
    all_open = [s["rss_kib"] for s in samples if s["open"] == streams]
    peak_open = max((s["open"] for s in samples), default=0)
    idle_kib = idle.get("VmRSS", 0)
    open_kib = statistics.median(all_open) if all_open else None
    durations = [r.ended - r.started for r in records if not r.error]
    return {
        "mode": "direct" if direct else "proxy",
        "streams": streams, "seconds": seconds, "events_per_stream": events,
        "errors": sum(errors.values()), "error_kinds": errors,
        "events_received": sum(r.events for r in records),
        "max_open": peak_open, "all_open_samples": len(all_open),
        "startup_rss_mib": started_kib / 1024, "idle_rss_mib": idle_kib / 1024,
        "open_rss_mib": None if open_kib is None else open_kib / 1024,
        "peak_sampled_rss_mib": max((s["rss_kib"] for s in samples), default=0) / 1024,
        "hwm_mib": after.get("VmHWM", 0) / 1024, "after_rss_mib": after.get("VmRSS", 0) / 1024,
        "per_stream_kib": None if open_kib is None else (open_kib - idle_kib) / streams,
        # The first and last samples with every stream open: what a stream costs once opened,
        # and what it adds per event relayed (the events kept for recording).
        "first_open_per_stream_kib": (all_open[0] - idle_kib) / streams if all_open else None,
        "growth_b_per_event": (1024 * (all_open[-1] - all_open[0]) / (streams * (
            len(all_open) - 1) * 1000 / EVENT_GAP_MS)) if len(all_open) > 1 else None,
        "cpu_s": cpu_s, "cpu_pct": 100 * cpu_s / elapsed if elapsed else 0.0,
        "cpu_ms_per_event": 1000 * cpu_s / max(1, sum(r.events for r in records)),
        "fake_cpu_pct": 100 * fake_cpu_s / elapsed if elapsed else 0.0,
        "fake_peak_rss_mib": max((s["fake_rss_kib"] for s in samples), default=0) / 1024,
        "elapsed_s": elapsed,
        "stream_s_p50": statistics.median(durations) if durations else None,
        "stream_s_max": max(durations) if durations else None,
        "samples": samples,
    }


# ------------------------------------------------------------------------------ the table


def _mib(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def render(results: dict) -> str:
    r = results
    peak = max(r["hwm_mib"], r["peak_sampled_rss_mib"])
    per = r["per_stream_kib"]
    side = "the fake alone (--direct)" if r["mode"] == "direct" else "one proxy process"
    lines = [
        f"### 4. Slow streams: {r['streams']} concurrent × {r['seconds']:g} s "
        f"({r['events_per_stream']} events {EVENT_GAP_MS} ms apart), through {side}",
        "",
        "| streams | errors | events received | idle MiB | all open MiB | peak MiB (VmHWM) "
        "| after MiB | **KiB per open stream** | CPU % | CPU ms/event | stream s p50 / max |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {r['streams']} | {r['errors']} | {r['events_received']} "
        f"| {_mib(r['idle_rss_mib'])} | {_mib(r['open_rss_mib'])} | {_mib(peak)} "
        f"| {_mib(r['after_rss_mib'])} | **{'–' if per is None else f'{per:.1f}'}** "
        f"| {r['cpu_pct']:.0f} | {r['cpu_ms_per_event']:.3f} "
        f"| {_opt(r['stream_s_p50'])} / {_opt(r['stream_s_max'])} |",
        "",
    ]
    misses = []
    if r["errors"]:
        misses.append(f"{r['errors']} errors ({r['error_kinds']})")
    if peak > TARGET_RSS_MIB:
        misses.append(f"peak RSS {peak:.0f} MiB > {TARGET_RSS_MIB} MiB "
                      f"(+{peak - TARGET_RSS_MIB:.0f})")
    if per is not None and per > TARGET_PER_STREAM_KIB:
        misses.append(f"{per:.0f} KiB per stream > {TARGET_PER_STREAM_KIB} KiB")
    if per is None:
        misses.append("the streams were never all open at once (see max open)")
    verdict = "all targets met" if not misses else "missed: " + "; ".join(misses)
    recorded = r.get("recorded_rows")
    lines.append(
        f"**Reading it.** Targets: zero errors, RSS ≤ {TARGET_RSS_MIB} MiB, "
        f"≤ {TARGET_PER_STREAM_KIB} KiB per open stream — {verdict}. "
        f"All {r['max_open']} streams were open in {r['all_open_samples']} one-second samples "
        f"(the median of those is *all open*): {_opt(r['first_open_per_stream_kib'])} KiB per "
        f"stream in the first, then about {_opt(r['growth_b_per_event'])} bytes more per "
        "event relayed (each event is kept until the exchange is recorded); "
        f"start-up RSS {_mib(r['startup_rss_mib'])} MiB; the fake used "
        f"{r['fake_cpu_pct']:.0f} % CPU and peaked at {_mib(r['fake_peak_rss_mib'])} MiB"
        + (f"; {recorded} exchanges recorded after the run" if recorded is not None else "")
        + ". Peak is the larger of the sampled VmRSS and VmHWM: it includes the moment the "
        "ended streams are turned into rows. The full run (500 × 30 s) takes about 40 s, "
        "--quick (200 × 10 s) about 15 s.")
    return "\n".join(lines) + "\n"


def _opt(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.slow_streams", description=__doc__
                                     .split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 streams × 10 s")
    add_arguments(parser)
    parser.add_argument("--direct", action="store_true",
                        help="drive the fake upstream alone (can it hold the streams?)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    results = run(args, lambda line: print(line, file=sys.stderr, flush=True))
    print(render(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
