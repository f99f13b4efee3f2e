"""The processes under test: started, probed (/proc) and stopped here.

Every server is our own child, stopped by its pid with SIGTERM (SIGKILL only if it ignores
it). CPU time and memory are read from /proc for the child *and its descendants* (nginx's
worker is its master's child), which covers every thread of each process.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# The children get a clean environment: no setting of the user's shell (DATABASE_URL, DEBUG,
# HTTPS_PROXY, ...) may change what is measured.
_KEPT_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def clean_env(**settings: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in _KEPT_ENV if k in os.environ}
    env.update(settings)
    return env


def _descendants(pid: int) -> list[int]:
    """pid and every live descendant of it (from /proc/PID/task/TID/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{current}/task/{tid}/children") as f:
                    todo += [int(child) for child in f.read().split()]
            except OSError:
                pass
    return found


def _cpu_s(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0  # gone in between
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


def _memory_kib(pid: int) -> dict[str, int]:
    out = {"VmRSS": 0, "VmHWM": 0}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in out:
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


class Service:
    """A child process serving HTTP on HOST:port, with its output in a log file."""

    def __init__(self, name: str, argv: list[str], port: int, cwd: Path, env: dict[str, str],
                 log_dir: Path):
        self.name, self.port = name, port
        self.log_path = log_dir / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, path: str | None, timeout_s: float = 30.0) -> None:
        """Until a TCP connect (or GET `path` -> 200) succeeds; exits the bench if it never does."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                conn = http.client.HTTPConnection(HOST, self.port, timeout=2)
                if path is None:
                    conn.connect()
                    conn.close()
                    return
                conn.request("GET", path)
                if conn.getresponse().status == 200:
                    conn.close()
                    return
                conn.close()
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        sys.exit(f"error: {self.name} did not become ready on port {self.port}; its output:\n"
                 + self.log_tail())

    def cpu_s(self) -> float:
        """User + system CPU seconds used so far by the process tree (10 ms resolution)."""
        return sum(_cpu_s(pid) for pid in _descendants(self.pid))

    def memory_kib(self) -> dict[str, int]:
        """VmRSS (resident now) and VmHWM (peak resident), in KiB, summed over the tree."""
        total = {"VmRSS": 0, "VmHWM": 0}
        for pid in _descendants(self.pid):
            for key, value in _memory_kib(pid).items():
                total[key] += value
        return total

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait, SIGKILL if it will not go; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_fake_upstream(log_dir: Path) -> Service:
    """The fake Anthropic API the tests use (it sends with TCP_NODELAY, like the real one)."""
    port = free_port()
    argv = [sys.executable, "-m", "tests.fakes.upstream", "--host", HOST, "--port", str(port)]
    fake = Service("fake_upstream", argv, port, ROOT, clean_env(PYTHONPATH=str(ROOT)), log_dir)
    fake.wait_ready(None)
    return fake


def launch_proxy(name: str, upstream_port: int, work_dir: Path, script: Path = ROOT / "wsgi.py",
                 **settings: str) -> Service:
    """`python wsgi.py` from an empty directory (so no stray .env is read); not waited for.
    Its default storage is SQLite under that directory; `settings` add to its environment
    (DATABASE_URL=... for PostgreSQL)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = clean_env(HOST=HOST, PORT=str(port), CLAUDE_API_BASE_URL=f"http://{HOST}:{upstream_port}",
                    LOG_LEVEL="warning", **settings)
    return Service(name, [sys.executable, str(script)], port, work_dir, env, work_dir)


def start_proxy(upstream_port: int, work_dir: Path, script: Path = ROOT / "wsgi.py") -> Service:
    """The proxy on SQLite, started and ready (kept for other bench modules)."""
    proxy = launch_proxy("proxy", upstream_port, work_dir, script)
    proxy.wait_ready("/health/live")
    return proxy
