"""The benchmark: the proxy side by side with going direct, nginx and LiteLLM.

    bench/run [--quick] [--targets direct,proxy-sqlite,...] [--only KEY ...] [--json PATH]

Starts the fake Anthropic upstream and every target in front of it (the proxy on SQLite and on
PostgreSQL, nginx, LiteLLM) as child processes, then for each round runs every workload on
every target back to back (the order reverses every other round, so slow drift of the machine
favours no target), and prints Markdown tables of medians over rounds to stdout. Then come the
extra sections (workloads 4 and 5), each in its own module. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from bench import report
from bench.httpclient import Connection, ProtocolError, check_answer
from bench.loadgen import LoadGenerator
from bench.processes import HOST, ROOT
from bench.targets import ALL_TARGETS, Target, parse_targets, started
from bench.workloads import Workload, all_workloads

MODES = {
    "quick": {"rounds": 3, "duration": 0.8, "warmup": 0.25},
    "full": {"rounds": 5, "duration": 2.0, "warmup": 0.5},
}

# Sections run after the latency/throughput part, once its targets are stopped, each from its
# own module, imported only then (a missing one is reported "not available yet"). A module
# provides `run(args, log) -> dict` (args: this run's options, `args.quick` among them; log:
# one progress line to stderr) and `render(results) -> str` (Markdown, from a "### " heading);
# optionally `add_arguments(parser)` for options of its own. A truthy `errors` in the dict
# makes bench/run exit 1. Each is skipped with its --skip-... flag.
SECTIONS = [
    # (key: flag --skip-KEY and key in --json, module, title)
    ("slow-streams", "bench.slow_streams", "4. Slow streams"),
    ("storage", "bench.storage", "5. Storage"),
]


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _section_module(module: str):
    """The section's module, or None when it does not exist (yet)."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name == module:
            return None
        raise


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer, shorter rounds (this part ~2 min; whole run < 5 min)")
    parser.add_argument("--rounds", type=int, help="rounds (each runs every workload on "
                        "every target)")
    parser.add_argument("--duration", type=float, help="measured seconds per workload and "
                        "target")
    parser.add_argument("--warmup", type=float, help="warm-up seconds before each measurement")
    parser.add_argument("--only", nargs="+", metavar="KEY",
                        help="run only these workloads: " +
                        ", ".join(w.key for w in all_workloads()))
    parser.add_argument("--targets", "--only-targets", default=",".join(ALL_TARGETS),
                        metavar="A,B,...", help="measure only these targets (direct is "
                        "always in): " + ", ".join(ALL_TARGETS))
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every round here")
    parser.add_argument("--quickack", action="store_true",
                        help="client ACKs at once (TCP_QUICKACK): hides servers' Nagle stalls")
    parser.add_argument("--skip-latency", action="store_true",
                        help="skip workloads 1-3 (run only the sections below)")
    for key, module, what in SECTIONS:
        parser.add_argument(f"--skip-{key}", action="store_true",
                            help=f"skip workload {what} ({module})")
        loaded = _section_module(module)
        if loaded is not None and hasattr(loaded, "add_arguments"):
            loaded.add_arguments(parser)
    args = parser.parse_args(argv)
    for name, value in MODES["quick" if args.quick else "full"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.targets = parse_targets(args.targets)
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


# ----------------------------------------------------------------------------- workloads 1-3


def measure(gen: LoadGenerator, workload: Workload, target: Target, fake: Target,
            args: argparse.Namespace) -> report.Side:
    def cpu() -> tuple[float, float]:
        return fake.service.cpu_s(), target.service.cpu_s()

    request = workload.request(target.port, target.path_prefix)
    outcome, before, after = gen.run(target.port, request, workload.stream,
                                     workload.concurrency, args.warmup, args.duration,
                                     snapshot=cpu)
    if outcome.errors:
        log(f"warning: {outcome.errors} failed request(s) in {workload.key} on {target.name} "
            f"({outcome.completed} succeeded), the first: {(outcome.first_error or '')[:300]}")
    return report.Side.of(outcome, args.duration, after[0] - before[0], after[1] - before[1])


def verify(workloads: list[Workload], targets: list[Target]) -> None:
    """One request of each workload on each target, before measuring: every target must relay
    the fake's answer (a message, or an event stream to message_stop), or the run stops."""
    for target in targets:
        conn = Connection(HOST, target.port)
        try:
            for workload in {w.title: w for w in reversed(workloads)}.values():
                try:
                    result = conn.request(workload.request(target.port, target.path_prefix))
                    problem = check_answer(result, workload.stream)
                except (OSError, ProtocolError) as err:
                    problem = f"{type(err).__name__}: {err}"
                if problem:
                    sys.exit(f"error: {target.name} did not relay the fake's answer to "
                             f"{workload.key}: {problem}")
        finally:
            conn.close()


def run_rounds(workloads: list[Workload], targets: list[Target],
               args: argparse.Namespace) -> report.Results:
    results: report.Results = [(w, []) for w in workloads]
    fake = targets[0]
    gen = LoadGenerator(max(w.concurrency for w in workloads), quickack=args.quickack)
    try:
        for number in range(args.rounds):
            started_at = time.monotonic()
            order = targets if number % 2 == 0 else targets[::-1]
            for workload, rounds in results:
                rounds.append({t.name: measure(gen, workload, t, fake, args) for t in order})
            log(f"round {number + 1}/{args.rounds} done in {time.monotonic() - started_at:.0f}s")
    finally:
        gen.close()
    return results


def proxy_notes(targets: list[Target]) -> list[str]:
    """The proxies log at warning level: any line but the start-up banner is worth seeing."""
    notes = []
    for target in targets:
        if not target.name.startswith("proxy-"):
            continue
        code = target.service.proc.returncode
        if code not in (0, None):
            notes.append(f"{target.name} exit code after SIGTERM: {code}.")
        logged = [line for line in target.service.log_tail(10_000).splitlines()
                  if line.strip() and not line.startswith(" ") and "is running on" not in line]
        if logged:
            notes.append(f"{target.name} logged {len(logged)} line(s), the first: "
                         f"`{logged[0][:300]}`")
    return notes


def render(results: report.Results, targets: list[Target], env: dict[str, str],
           args: argparse.Namespace, notes: list[str]) -> str:
    names = [t.name for t in targets]
    versions = "; ".join(f"{t.name}: {t.version}" for t in targets if t.version)
    lines = [
        f"{env['date']} · commit {env['commit']} · nproc {env['nproc']} · "
        f"Python {env['python']} · {'--quick' if args.quick else 'full'}: {args.rounds} rounds "
        f"× {args.duration:g}s measured per workload and target, {args.warmup:g}s warm-up"
        + (" · --quickack" if args.quickack else ""),
        "",
        f"Targets: {versions}.",
        "",
        "Latency in ms, median over rounds of each round's percentile; (**added**) = target − "
        "direct in the same round, median over rounds. Streams: TTFB = first event. req/s: "
        "closed loop (each connection sends its next request when the previous answer "
        "ended), (**÷ direct**) in the same round. CPU: the target's own processes per "
        "request; % of one core for it / the fake upstream / the client workers.",
    ]
    by_title: dict[str, report.Results] = {}
    for workload, rounds in results:
        by_title.setdefault(workload.title, []).append((workload, rounds))
    for title, entries in by_title.items():
        lines += ["", f"### {title}", "", report.workload_table(entries, names)]
    lines += ["", "### Targets", "",
              "The issue's targets for the product, one gevent worker recording every "
              "exchange; medians over rounds.", "",
              report.targets_table(results, names),
              "", "### Memory and noise", "", report.memory_table(targets)]
    if len(names) > 1:
        lines += ["", report.noise_table(results, names)]
    lines += ["", *notes] if notes else []
    return "\n".join(lines)


def latency_part(args: argparse.Namespace, env: dict[str, str]) -> tuple[str, dict, int]:
    workloads = all_workloads()
    if args.only:
        unknown = set(args.only) - {w.key for w in workloads}
        if unknown:
            sys.exit(f"error: unknown workload(s) {', '.join(sorted(unknown))}")
        workloads = [w for w in workloads if w.key in args.only]
    per_round = len(workloads) * len(args.targets) * (args.warmup + args.duration + 0.1)
    log(f"workloads 1-3: {len(workloads)} workloads × {len(args.targets)} targets × "
        f"{args.rounds} rounds, about {per_round * args.rounds / 60:.1f} min after start-up")
    with tempfile.TemporaryDirectory(prefix="nexus-bench-") as tmp:
        with started(args.targets, Path(tmp), log) as targets:
            verify(workloads, targets)
            results = run_rounds(workloads, targets, args)
        notes = proxy_notes(targets)  # the logs are in the temporary directory
    raw = {"targets": {t.name: {"version": t.version, "memory_kib": t.memory}
                       for t in targets},
           "workloads": {w.key: [{name: dataclasses.asdict(side) for name, side in r.items()}
                                 for r in rounds] for w, rounds in results}}
    errors = sum(side.errors for _, rounds in results for r in rounds for side in r.values())
    return render(results, targets, env, args, notes), raw, errors


# ----------------------------------------------------------------------------- sections


def run_section(key: str, module_name: str, what: str, args: argparse.Namespace
                ) -> tuple[str, object, bool]:
    """(markdown, results, failed) of one extra section."""
    module = None
    try:
        module = _section_module(module_name)
    except Exception:
        log(traceback.format_exc())
        return f"### {what}\n\nfailed to import `{module_name}` (see stderr).", None, True
    if module is None:
        log(f"workload {what}: not available yet ({module_name} is missing)")
        return f"### {what}\n\nnot available yet (`{module_name}` is missing).", None, False
    log(f"workload {what}: starting")
    started_at = time.monotonic()
    try:
        results = module.run(args, log)
        text = module.render(results)
    except Exception:
        log(traceback.format_exc())
        return f"### {what}\n\nfailed (the traceback is on stderr).", None, True
    log(f"workload {what}: done in {time.monotonic() - started_at:.0f}s")
    failed = isinstance(results, dict) and bool(results.get("errors"))
    return text.rstrip("\n"), results, failed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env = environment()
    raw: dict = {"environment": env, "args": {k: str(v) for k, v in vars(args).items()}}
    failed = False
    if not args.skip_latency:
        text, raw["latency"], errors = latency_part(args, env)
        print(text, flush=True)
        if errors:
            log(f"error: {errors} request(s) failed; see the errors rows")
            failed = True
    for key, module_name, what in SECTIONS:
        if getattr(args, f"skip_{key.replace('-', '_')}"):
            continue
        text, results, section_failed = run_section(key, module_name, what, args)
        print("\n" + text, flush=True)
        raw.setdefault("sections", {})[key] = results
        failed = failed or section_failed
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1, default=str) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
