"""The targets the workloads are measured on, all in front of the same fake upstream.

| name | what |
|---|---|
| direct | the fake upstream itself: the baseline every *added* figure is measured against |
| proxy-sqlite | `python wsgi.py` (one gevent process), recording into SQLite in its directory |
| proxy-pg | the same, recording into a throwaway PostgreSQL server started for the run |
| nginx | Debian's nginx as a plain reverse proxy (one worker, proxy_buffering off) |
| litellm | the LiteLLM proxy (PyPI, its own venv), its Anthropic pass-through route |
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench import competitors
from bench.postgres import PostgresServer
from bench.processes import Service, launch_proxy, start_fake_upstream

ALL_TARGETS = ("direct", "proxy-sqlite", "proxy-pg", "nginx", "litellm")
PROXIES = ("proxy-sqlite", "proxy-pg")  # the product, whose figures the targets apply to

Log = Callable[[str], None]


@dataclass
class Target:
    name: str
    service: Service  # whose port is hit, and whose process tree's CPU and memory are read
    path_prefix: str = ""  # before /v1/messages (LiteLLM serves it under /anthropic)
    version: str = ""
    ready_path: str | None = None  # GET it until 200 (None: until a TCP connect succeeds)
    ready_timeout_s: float = 30.0
    memory: dict[str, int] = field(default_factory=dict)  # KiB: start, end, peak

    @property
    def port(self) -> int:
        return self.service.port


def parse_targets(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL_TARGETS]
    if unknown:
        sys.exit(f"error: unknown target(s) {', '.join(unknown)}; choose among "
                 + ", ".join(ALL_TARGETS))
    if "direct" not in names:
        names.insert(0, "direct")  # every added figure is measured against it
    return [n for n in ALL_TARGETS if n in names]  # a fixed order, whatever was typed


@contextlib.contextmanager
def started(names: list[str], work_dir: Path, log: Log) -> Iterator[list[Target]]:
    """Start the named targets (and the PostgreSQL server proxy-pg needs), wait until each
    answers, yield them in ALL_TARGETS order; stop everything on the way out, even on error.
    Provisioning (nginx's package, LiteLLM's venv) happens before anything starts."""
    if "nginx" in names:
        competitors.nginx_binary(log)
    if "litellm" in names:
        competitors.litellm_python(log)
    with contextlib.ExitStack() as stack:
        fake = start_fake_upstream(work_dir)
        stack.callback(fake.stop)
        targets = [Target("direct", fake, version="the fake upstream")]
        services = {}
        try:
            if "proxy-sqlite" in names:
                services["proxy-sqlite"] = Target(
                    "proxy-sqlite", launch_proxy("proxy-sqlite", fake.port,
                                                 work_dir / "proxy-sqlite"),
                    version="recording into SQLite", ready_path="/health/live")
            if "proxy-pg" in names:
                pg = PostgresServer()
                stack.callback(pg.stop)
                started_at = time.monotonic()
                pg.start()
                log(f"PostgreSQL {pg.version()} on port {pg.port} "
                    f"(ready in {time.monotonic() - started_at:.1f}s)")
                services["proxy-pg"] = Target(
                    "proxy-pg", launch_proxy("proxy-pg", fake.port, work_dir / "proxy-pg",
                                             DATABASE_URL=pg.dsn),
                    version=f"recording into PostgreSQL {pg.version()}", ready_path="/health/live")
            if "nginx" in names:
                services["nginx"] = Target(
                    "nginx", competitors.launch_nginx(fake.port, work_dir, log),
                    version=f"nginx {competitors.nginx_version(log)}")
            if "litellm" in names:
                services["litellm"] = Target(
                    "litellm", competitors.launch_litellm(fake.port, work_dir, log),
                    path_prefix=competitors.LITELLM_PREFIX,
                    version=f"LiteLLM {competitors.LITELLM_VERSION} (/anthropic pass-through)",
                    ready_path="/health/liveliness", ready_timeout_s=120.0)
        finally:
            for target in services.values():  # registered even if a later one failed
                stack.callback(_stop_logged, target.service, log)
        for name in ALL_TARGETS[1:]:
            if name in services:
                target = services[name]
                started_at = time.monotonic()
                target.service.wait_ready(target.ready_path, target.ready_timeout_s)
                log(f"{name}: pid {target.service.pid}, port {target.port}, ready in "
                    f"{time.monotonic() - started_at:.1f}s")
                targets.append(target)
        for target in targets:
            target.memory["start"] = target.service.memory_kib()["VmRSS"]
        try:
            yield targets
        except BaseException:
            # The logs live in the temporary directory: show them before it goes.
            for target in targets:
                log(f"--- last lines of {target.name}'s output:\n{target.service.log_tail()}")
            raise
        for target in targets:
            after = target.service.memory_kib()
            target.memory.update(end=after["VmRSS"], peak=after["VmHWM"])


def _stop_logged(service: Service, log: Log) -> None:
    code = service.stop()
    if code not in (0, None, -15):
        log(f"{service.name} exited with code {code} after SIGTERM")
