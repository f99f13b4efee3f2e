"""A server command (gunicorn, the Docker entrypoint) run as a real process for the tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from tests.support import REPO, free_port

GUNICORN_CONF = REPO / "packaging" / "gunicorn.conf.py"


class Served:
    """`command` in `workdir` with the proxy's settings in its environment, on a free port;
    returns once `/health/live` answers. Its stderr (JSON log lines) is kept in `lines`."""

    def __init__(self, command: list[str], workdir: Path, settings: dict[str, str],
                 ready_timeout: float = 60.0):
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items()
               if k not in ("DEBUG", "LOG_LEVEL", "LOG_FORMAT", "DATABASE_URL",
                            "PROMETHEUS_MULTIPROC_DIR", "HTTP_PROXY", "HTTPS_PROXY")}
        env.update({"HOST": "127.0.0.1", "PORT": str(self.port), "LOG_FORMAT": "json",
                    "SHUTDOWN_GRACE_S": "5", **settings})
        self.lines: list[str] = []
        self.proc = subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("exited at start:\n" + self.log_text())
            try:
                if requests.get(self.url + "/health/live", timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise RuntimeError("not ready in time:\n" + self.log_text())
            time.sleep(0.1)

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def log_text(self) -> str:
        return "\n".join(self.lines)

    def records(self) -> list[dict]:
        out = []
        for line in self.lines:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise RuntimeError("did not stop in time:\n" + self.log_text()) from None


def gunicorn(workdir: Path, settings: dict[str, str]) -> Served:
    """`gunicorn -c packaging/gunicorn.conf.py wsgi:app`, as the README shows it."""
    return Served([sys.executable, "-m", "gunicorn", "-c", str(GUNICORN_CONF), "wsgi:app"],
                  workdir, settings)
