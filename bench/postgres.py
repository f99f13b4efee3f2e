"""A throwaway PostgreSQL server for the benchmark: `initdb` + `pg_ctl` on a free port in a
temporary folder, as the `postgres` user when running as root (PostgreSQL refuses root).

The same approach as tests/pg.py, kept separate so that bench/ does not import the tests. The
server runs with PostgreSQL's own defaults (fsync, synchronous_commit and all): it stands in
for a real deployment's database, not a test double.

    with PostgresServer() as pg:
        ... DATABASE_URL=pg.dsn ...
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.processes import HOST, free_port


def pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None)
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is not installed: run 'apt-get install "
                           "postgresql' as root (or leave the proxy-pg target out)")
    return found


class PostgresServer:
    """`start()` (or `with`), connect with `dsn`, `stop()` removes the server and its files."""

    def __init__(self, options: str = "") -> None:
        self.options = options  # more `-c name=value` for the server, if any
        self.root = Path(tempfile.mkdtemp(prefix="nexus-bench-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.dsn = f"postgresql://postgres@{HOST}:{self.port}/postgres"
        self._user = "postgres" if os.geteuid() == 0 else None
        self.pid: int | None = None  # the postmaster's, once started

    def _run(self, *args: str) -> str:
        command = list(args)
        if self._user:
            command = ["runuser", "-u", self._user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({done.returncode}): "
                               f"{(done.stderr or done.stdout).strip()[-800:]}")
        return done.stdout

    def version(self) -> str:
        found = re.search(r"\d+(\.\d+)+", self._run(pg_bin("postgres"), "--version"))
        return found.group(0) if found else "?"

    def start(self) -> PostgresServer:
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync")
        options = f"-p {self.port} -c listen_addresses={HOST} -k {self.root} {self.options}"
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l",
                  str(self.root / "log"), "-w", "-t", "60", "start")
        self._wait()
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])
        return self

    def _wait(self) -> None:
        import psycopg2  # the project's venv has it (the proxy's own driver)

        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg2.connect(self.dsn, connect_timeout=2).close()
                return
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = (self.root / "log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
