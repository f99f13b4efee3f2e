"""The benchmark: the proxy's added latency and its throughput cost, against the fake upstream.

    bench/run [--quick] [--rounds N] [--duration S] [--only KEY ...] [--json PATH]

Starts the fake Anthropic upstream and the proxy (`python wsgi.py`) as child processes, then
for each round runs every workload twice, direct to the fake and through the proxy (the order
alternates between rounds, so slow drift of the machine does not favour one side), and
prints Markdown tables of medians over rounds to stdout. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import report
from bench.loadgen import LoadGenerator
from bench.processes import ROOT, Service, start_fake_upstream, start_proxy
from bench.workloads import Workload, all_workloads

MODES = {
    "quick": {"rounds": 3, "duration": 1.0, "warmup": 0.3},
    "full": {"rounds": 7, "duration": 2.0, "warmup": 0.5},
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds (~1 min)")
    parser.add_argument("--rounds", type=int, help="rounds (each runs every workload twice)")
    parser.add_argument("--duration", type=float, help="measured seconds per workload and side")
    parser.add_argument("--warmup", type=float, help="warm-up seconds before each measurement")
    parser.add_argument("--only", nargs="+", metavar="KEY",
                        help="run only these workloads: " +
                        ", ".join(w.key for w in all_workloads()))
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every round here")
    parser.add_argument("--quickack", action="store_true",
                        help="client ACKs at once (TCP_QUICKACK): hides servers' Nagle stalls")
    args = parser.parse_args(argv)
    for name, value in MODES["quick" if args.quick else "full"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def environment() -> dict[str, str]:
    def git(*cmd: str) -> str:
        # Read-only: --no-optional-locks keeps `status` from rewriting the index.
        done = subprocess.run(["git", "--no-optional-locks", *cmd], cwd=ROOT,
                              capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else "?"

    commit = git("rev-parse", "--short", "HEAD")
    if git("status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit,
        "nproc": str(os.cpu_count()),
        "python": platform.python_version(),
    }


def measure(gen: LoadGenerator, workload: Workload, target: Service, fake: Service,
            proxy: Service, args: argparse.Namespace) -> report.Side:
    def cpu() -> tuple[float, float]:
        return fake.cpu_s(), proxy.cpu_s()

    outcome, before, after = gen.run(target.port, workload.request(target.port),
                                     workload.stream, workload.concurrency, args.warmup,
                                     args.duration, snapshot=cpu)
    if outcome.completed == 0:
        sys.exit(f"error: no request succeeded in {workload.key} via {target.name}: "
                 f"{outcome.first_error}")
    via_proxy = target is proxy
    return report.Side.of(outcome, args.duration, after[0] - before[0],
                          after[1] - before[1] if via_proxy else None)


def run_rounds(workloads: list[Workload], fake: Service, proxy: Service,
               args: argparse.Namespace) -> list[tuple[Workload, list]]:
    results: list[tuple[Workload, list]] = [(w, []) for w in workloads]
    gen = LoadGenerator(max(w.concurrency for w in workloads), quickack=args.quickack)
    try:
        for number in range(args.rounds):
            started = time.monotonic()
            for workload, rounds in results:
                targets = [fake, proxy] if number % 2 == 0 else [proxy, fake]
                sides = {t.name: measure(gen, workload, t, fake, proxy, args) for t in targets}
                rounds.append((sides[fake.name], sides[proxy.name]))
            print(f"round {number + 1}/{args.rounds} done in {time.monotonic() - started:.0f}s",
                  file=sys.stderr, flush=True)
    finally:
        gen.close()
    return results


def render(results, env: dict[str, str], args: argparse.Namespace, memory: dict,
           proxy_notes: list[str]) -> str:
    mib = {k: v / 1024 for k, v in memory.items()}
    lines = [
        f"{env['date']} · commit {env['commit']} · nproc {env['nproc']} · "
        f"Python {env['python']} · {'--quick' if args.quick else 'full'}: {args.rounds} rounds "
        f"× {args.duration:g}s measured per workload and side, {args.warmup:g}s warm-up"
        + (" · --quickack" if args.quickack else ""),
        "",
        "Latency in ms, median over rounds of each round's percentile; *added* = proxy − "
        "direct in the same round.",
        "",
        report.latency_table(results),
        "",
        "Closed-loop throughput (each connection sends its next request when the previous "
        "answer ended); CPU per request from /proc.",
        "",
        report.throughput_table(results),
        "",
        f"Proxy memory: VmRSS {mib['start']:.1f} MiB after start-up, {mib['end']:.1f} MiB after "
        f"the run (peak VmHWM {mib['peak']:.1f} MiB).",
        "",
        report.spread_line(results) + ".",
    ]
    lines += ["", *proxy_notes] if proxy_notes else []
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workloads = all_workloads()
    if args.only:
        unknown = set(args.only) - {w.key for w in workloads}
        if unknown:
            sys.exit(f"error: unknown workload(s) {', '.join(sorted(unknown))}")
        workloads = [w for w in workloads if w.key in args.only]
    env = environment()
    with tempfile.TemporaryDirectory(prefix="nexus-bench-") as tmp:
        work_dir = Path(tmp)
        fake = start_fake_upstream(work_dir)
        proxy = None
        try:
            proxy = start_proxy(fake.port, work_dir)
            print(f"fake upstream pid {fake.pid} port {fake.port}; proxy pid {proxy.pid} "
                  f"port {proxy.port}", file=sys.stderr, flush=True)
            memory = {"start": proxy.memory_kib()["VmRSS"]}
            results = run_rounds(workloads, fake, proxy, args)
            after = proxy.memory_kib()
            memory.update(end=after["VmRSS"], peak=after["VmHWM"])
        except BaseException:
            # The logs live in the temporary directory: show them before it goes.
            for service in (fake, proxy):
                if service is not None:
                    print(f"--- last lines of {service.name}'s output:\n{service.log_tail()}",
                          file=sys.stderr)
            raise
        finally:
            code = proxy.stop() if proxy is not None else 0
            fake.stop()
        # The proxy logs at warning level: any line but its start-up banner is worth seeing.
        logged = [line for line in proxy.log_tail(10_000).splitlines()
                  if line.strip() and not line.startswith(" ") and "is running on" not in line]
        notes = [f"Proxy exit code after SIGTERM: {code}."] if code != 0 else []
        if logged:
            notes.append(f"The proxy logged {len(logged)} line(s), the first: `{logged[0]}`")
    print(render(results, env, args, memory, notes))
    if args.json:
        raw = {"environment": env, "args": {k: str(v) for k, v in vars(args).items()},
               "memory_kib": memory,
               "workloads": {w.key: [{"direct": dataclasses.asdict(d),
                                      "proxy": dataclasses.asdict(p)} for d, p in rounds]
                             for w, rounds in results}}
        args.json.write_text(json.dumps(raw, indent=1) + "\n")
    errors = sum(d.errors + p.errors for _, rounds in results for d, p in rounds)
    if errors:
        print(f"error: {errors} request(s) failed; see the errors column", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
