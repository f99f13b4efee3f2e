"""Running the proxy for tests: as a real `python wsgi.py` process, or in this process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
from werkzeug.serving import make_server

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ProxyProcess:
    """`python wsgi.py` on a free port with JSON logs, started in its own empty directory."""

    def __init__(self, upstream_url: str, workdir: Path, settings: dict | None = None):
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items()
               if k not in ("DEBUG", "LOG_LEVEL", "LOG_FORMAT", "HTTP_PROXY", "HTTPS_PROXY")}
        env.update({"HOST": "127.0.0.1", "PORT": str(self.port),
                    "CLAUDE_API_BASE_URL": upstream_url, "LOG_FORMAT": "json",
                    "SHUTDOWN_GRACE_S": "5"})
        env.update({k: str(v) for k, v in (settings or {}).items()})
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "wsgi.py")], cwd=workdir, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read_log, daemon=True)
        self._reader.start()
        self._wait_ready()

    def _read_log(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def _wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("proxy exited at start:\n" + self.log_text())
            try:
                if requests.get(self.url + "/health/live", timeout=1).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("proxy did not start:\n" + self.log_text())

    def assert_alive(self) -> None:
        assert self.proc.poll() is None, "the shared proxy died:\n" + self.log_text()

    def log_text(self) -> str:
        time.sleep(0.05)  # let the reader thread catch up
        return "\n".join(self.lines)

    def records(self) -> list[dict]:
        out = []
        for line in list(self.lines):
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def wait_record(self, since: int, timeout: float = 5.0, **match) -> dict:
        """The first exchange log line after line number `since` with these field values."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[since:]:
                if not line.startswith("{"):
                    continue
                record = json.loads(line)
                if record.get("logger") == "nexus.exchange" and "outcome" in record and all(
                        record.get(k) == v for k, v in match.items()):
                    return record
            time.sleep(0.02)
        raise AssertionError(f"no exchange log line with {match}:\n{self.log_text()}")

    def exchange(self, request_id: str, timeout: float = 5.0) -> dict:
        """The exchange log line of one request, waiting for it to be written."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in self.records():
                if record.get("logger") == "nexus.exchange" and \
                        record.get("request_id") == request_id and "outcome" in record:
                    return record
            time.sleep(0.02)
        raise AssertionError(f"no exchange log line for {request_id}:\n{self.log_text()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(timeout=2)
        return self.proc.returncode


class InProcessProxy:
    """The Flask app in this process on a threaded werkzeug server; records its events.

    With `record=True` it also builds the schema of DATABASE_URL and starts the batch writer
    (a plain thread here, as nothing runs gevent); otherwise exchanges are not stored.
    """

    def __init__(self, upstream_url: str, record: bool = False, **settings):
        from app import create_app, shutdown
        from app.events import ExchangeEnded, ExchangeStarted
        from app.storage import upgrade_on_start

        self._shutdown = shutdown
        self.app = create_app({"CLAUDE_API_BASE_URL": upstream_url, **settings}, env_file=None)
        if record:
            upgrade_on_start(self.app)
            self.app.extensions["nexus.writer"].start()
        self.started: list = []
        self.ended: list = []
        bus = self.app.extensions["nexus.events"]
        bus.subscribe(ExchangeStarted, self.started.append)
        bus.subscribe(ExchangeEnded, self.ended.append)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def ended_for(self, request_id: str, timeout: float = 5.0):
        """The terminal event of one exchange, waiting for the relay to finish."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [e for e in self.ended if e.exchange.id == request_id]
            if found:
                return found[0]
            time.sleep(0.01)
        raise AssertionError(f"exchange {request_id} never ended")

    def stop(self) -> None:
        self.server.shutdown()
        self._shutdown(self.app)
