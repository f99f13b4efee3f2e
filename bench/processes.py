"""The processes under test: the fake Anthropic upstream and the proxy, started and stopped here.

Both are our own children, stopped by their pid with SIGTERM (SIGKILL only if they ignore it).
CPU time and memory are read from /proc, which covers every thread of the process.
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
        """User + system CPU seconds used so far (10 ms resolution)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime

    def memory_kib(self) -> dict[str, int]:
        """VmRSS (resident now) and VmHWM (peak resident), in KiB."""
        out = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(value.split()[0])
        return out

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


def _env(**settings: str) -> dict[str, str]:
    env = {k: os.environ[k] for k in _KEPT_ENV if k in os.environ}
    env.update(settings)
    return env


def start_fake_upstream(log_dir: Path) -> Service:
    """The fake Anthropic API the tests use (it sends with TCP_NODELAY, like the real one)."""
    port = free_port()
    argv = [sys.executable, "-m", "tests.fakes.upstream", "--host", HOST, "--port", str(port)]
    fake = Service("fake_upstream", argv, port, ROOT, _env(PYTHONPATH=str(ROOT)), log_dir)
    fake.wait_ready(None)
    return fake


def start_proxy(upstream_port: int, work_dir: Path, script: Path = ROOT / "wsgi.py") -> Service:
    """`python wsgi.py` from an empty directory (so no stray .env is read)."""
    port = free_port()
    env = _env(HOST=HOST, PORT=str(port), CLAUDE_API_BASE_URL=f"http://{HOST}:{upstream_port}",
               LOG_LEVEL="warning")
    proxy = Service("proxy", [sys.executable, str(script)], port, work_dir, env,
                    work_dir)
    proxy.wait_ready("/health/live")
    return proxy
