"""A pytest plugin (loaded by tests/conftest.py): after the whole suite, no secret the suite used
may sit in clear in anything the product wrote — a stored row of any table on either engine,
a log line, a test-sample file, a rendered dashboard or API page. A leak fails the run.

What counts as a secret:
- anything shaped like one, wherever it comes from: `sk-ant-…` keys and OAuth tokens and
  `cnp_live_…` client keys, spelled out (the masked forms `sk-ant-…WXYZ` never match);
- every literal the tests themselves hold as a secret (read from their source: string constants
  named like `*KEY*`, `*TOKEN*`, `*PASSWORD*`, `*SECRET*`, the values of dicts so named, and
  `DASHBOARD_API_KEY=` / `SECRET_KEY=` / `password=` arguments), plus any value a test passes
  to `register()`.

What is looked at (collected while the suite runs, checked at its end):
- every SQLite database and every other file under the session's base temp folder, minus the
  files that hold secrets by design (credential files, `.env` files, lock files);
- every PostgreSQL database the suite makes, just before it is dropped (`tests.databases`
  calls `scan_postgres`), and the suite's PostgreSQL server log;
- every log line of every `python wsgi.py` the tests start (`tests.support.ProxyProcess`),
  and each test's captured stdout, stderr and log records (the in-process apps' logs);
- every page an in-process app renders under /dashboard or /api (Flask's request_finished
  signal) and every such page a test fetches with `requests` from a proxy process;
- the committed test samples in tests/data/samples.

Findings are printed masked (location and the secret's last four characters), never in clear.
"""

from __future__ import annotations

import ast
import re
import sqlite3
import threading
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
SHAPED = re.compile(rb"sk-ant-[A-Za-z0-9][A-Za-z0-9_-]{7,}|cnp_live_[A-Za-z0-9][A-Za-z0-9_-]{7,}")
SECRET_NAME = re.compile(r"key|token|password|passwd|secret", re.I)
SECRET_ARGS = {"DASHBOARD_API_KEY", "SECRET_KEY", "password", "api_key", "client_api_key",
               "access_token", "refresh_token"}
MIN_LITERAL = 10            # shorter "secrets" (`"short"`, a header name) would match by chance
MAX_FILE_BYTES = 64 << 20   # larger files are test payloads, not what the product writes
# Files that hold secrets by design: the proxy's own credential store and settings.
EXEMPT_FILES = re.compile(r"\.credentials\.json($|\.)|(^|\.)env$|\.lock$|^secret_key$")


@dataclass(frozen=True)
class Finding:
    where: str
    secret: bytes

    def __str__(self) -> str:
        tail = self.secret[-4:].decode("utf-8", "replace")
        return f"{self.where}: a secret ending in …{tail} ({len(self.secret)} characters)"


class Scanner:
    """The secrets to look for, and what was found where."""

    def __init__(self, literals: set[str] = frozenset()):
        self._lock = threading.Lock()
        self.literals: set[bytes] = {v.encode() for v in literals if len(v) >= MIN_LITERAL}
        self._pattern: re.Pattern | None = None
        self.findings: list[Finding] = []
        self.sources = 0  # how many things were scanned: a scan that sees nothing says so
        self.seconds = 0.0  # the time the suite spends on the scan, reported at the end

    @contextmanager
    def timed(self):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - started

    def register(self, value: str) -> None:
        if len(value) >= MIN_LITERAL:
            with self._lock:
                self.literals.add(value.encode())
                self._pattern = None

    def _matcher(self) -> re.Pattern:
        if self._pattern is None:
            words = sorted(self.literals, key=len, reverse=True)
            self._pattern = re.compile(b"|".join([SHAPED.pattern, *map(re.escape, words)]))
        return self._pattern

    def scan(self, data: bytes | str, where: str) -> None:
        """Look for secrets in one text; record each distinct one found."""
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogatepass")
        with self._lock:
            self.sources += 1
            found = {m.group() for m in self._matcher().finditer(data)}
            self.findings.extend(Finding(where, secret) for secret in sorted(found))

    def scan_sqlite(self, path: Path) -> None:
        """Every row of every table of a SQLite file."""
        try:
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        except sqlite3.Error:
            return
        try:
            tables = [row[0] for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")]
            for table in tables:
                cells = []
                for row in db.execute(f'SELECT * FROM "{table}"'):
                    cells.extend(c if isinstance(c, bytes) else str(c).encode(
                        "utf-8", "surrogatepass") for c in row if c is not None)
                self.scan(b"\n".join(cells), f"sqlite {path} table {table}")
        except sqlite3.Error:
            self.scan(path.read_bytes(), f"file {path}")  # not a database after all
        finally:
            db.close()

    def scan_postgres(self, url: str) -> None:
        """Every row of every table of a PostgreSQL database (as row text)."""
        import psycopg2

        try:
            conn = psycopg2.connect(url)
        except psycopg2.Error:
            return
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute("SELECT c.relname FROM pg_class c JOIN pg_namespace n ON "
                               "n.oid = c.relnamespace WHERE n.nspname = 'public' AND "
                               "c.relkind = 'r'")  # partitions hold the rows, not parents
                tables = [row[0] for row in cursor.fetchall()]
                for table in tables:
                    cursor.execute(f'SELECT t::text FROM "{table}" t')
                    text = "\n".join(row[0] for row in cursor.fetchall())
                    self.scan(text, f"postgresql {url.rsplit('/', 1)[-1]} table {table}")
        finally:
            conn.close()

    def scan_tree(self, root: Path) -> None:
        """Every file under `root`: SQLite databases row by row, other files as bytes."""
        for path in sorted(root.rglob("*")):
            if not path.is_file() or path.is_symlink() or EXEMPT_FILES.search(path.name):
                continue
            if path.suffix in (".db-wal", ".db-shm") or path.name.endswith(("-wal", "-shm")):
                continue  # read through their database
            try:
                if path.stat().st_size > MAX_FILE_BYTES:
                    continue
                with path.open("rb") as handle:
                    head = handle.read(16)
            except OSError:
                continue
            if head.startswith(b"SQLite format 3"):
                self.scan_sqlite(path)
            else:
                self.scan(path.read_bytes(), f"file {path}")


def literal_secrets(root: Path = TESTS) -> set[str]:
    """The secrets the tests' source holds (see the module docstring)."""
    found: set[str] = set()
    for path in root.rglob("*.py"):
        try:
            tree = ast.parse(path.read_text())
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
                if any(SECRET_NAME.search(name) for name in names):
                    found.update(_strings(node.value))
            elif isinstance(node, ast.keyword) and node.arg in SECRET_ARGS:
                found.update(_strings(node.value))
    vocabulary = _product_text()
    return {value for value in found if len(value) >= MIN_LITERAL and "…" not in value
            and "[redacted]" not in value and not _placeholder(value)
            and value not in vocabulary}


def _product_text() -> str:
    # Header and field names (`access_token`, `x-api-key`, `input_tokens`) sit in the tests
    # beside real secrets; the product's source, its README and the fake Anthropic API (the
    # protocol's vocabulary) name them, never a secret.
    parts = [path.read_text(errors="replace") for folder in ("app", "templates", "tests/fakes")
             for path in (TESTS.parent / folder).rglob("*") if path.suffix in (".py", ".html")]
    return "\n".join([*parts, (TESTS.parent / "README.md").read_text()])


def _strings(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mult)
            and isinstance(node.left, ast.Constant) and isinstance(node.left.value, str)
            and isinstance(node.right, ast.Constant) and isinstance(node.right.value, int)):
        return {node.left.value * node.right.value}
    if isinstance(node, ast.Dict):
        return set().union(*(_strings(v) for v in node.values if v is not None))
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return set().union(*(_strings(v) for v in node.elts))
    return set()


_HEADER_OR_FIELD = re.compile(r"[a-z]+(?:[A-Z][a-z]+)+|(?:[A-Z][a-z]+-)+[A-Z][a-z]+")


def _placeholder(value: str) -> bool:
    # Names and messages, not secrets: header and setting names, prose, format strings, and
    # the ids the Anthropic API hands out (request, message and tool ids are no secrets).
    prose = " " in value.strip() and len(value.split()) > 3
    return (value.startswith(("req_", "msg_", "toolu_", "anthropic-")) or prose
            or bool(_HEADER_OR_FIELD.fullmatch(value)) or "{" in value or value.isupper())


# --- the plugin -------------------------------------------------------------------------------

SCANNER = Scanner()
_LIVE_PROXIES: weakref.WeakSet = weakref.WeakSet()


def register(value: str) -> None:
    """Declare a value the suite treats as a secret though its source does not show it."""
    SCANNER.register(value)


def scan_postgres(url: str) -> None:
    """Called by tests.databases before a test database is dropped."""
    with SCANNER.timed():
        SCANNER.scan_postgres(url)


def scan_log(lines: list[str], where: str) -> None:
    with SCANNER.timed():
        SCANNER.scan("\n".join(lines), where)


def _watch_proxy_processes() -> None:
    from tests.support import ProxyProcess

    init, stop = ProxyProcess.__init__, ProxyProcess.stop

    def watched_init(self, *args, **kwargs):
        _LIVE_PROXIES.add(self)
        init(self, *args, **kwargs)

    def watched_stop(self, *args, **kwargs):
        try:
            return stop(self, *args, **kwargs)
        finally:
            if self in _LIVE_PROXIES:
                _LIVE_PROXIES.discard(self)
                scan_log(self.lines, f"log of the proxy on port {self.port}")

    ProxyProcess.__init__, ProxyProcess.stop = watched_init, watched_stop


def _page(where: str, path: str, body: bytes) -> None:
    if path.startswith(("/dashboard", "/api")):
        with SCANNER.timed():
            SCANNER.scan(body, f"page {path} ({where})")


def _watch_pages() -> None:
    import flask
    import requests

    def finished(sender, response, **_):
        if not response.is_streamed:
            _page("in-process app", flask.request.path, response.get_data())

    flask.request_finished.connect(finished, weak=False)
    send = requests.Session.send

    def watched_send(self, request, **kwargs):
        response = send(self, request, **kwargs)
        if not kwargs.get("stream"):
            _page("fetched", requests.utils.urlparse(request.url).path or "/", response.content)
        return response

    requests.Session.send = watched_send


def pytest_configure(config):
    if hasattr(config, "workerinput"):
        return
    SCANNER.literals |= {v.encode() for v in literal_secrets()}
    _watch_proxy_processes()
    _watch_pages()


def pytest_runtest_logreport(report):
    with SCANNER.timed():
        for title, content in report.sections:
            SCANNER.scan(content, f"{report.nodeid} {title.lower()}")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session):
    for proc in list(_LIVE_PROXIES):  # never stopped by their test
        scan_log(proc.lines, f"log of the proxy on port {proc.port}")
    basetemp = session.config._tmp_path_factory.getbasetemp() if hasattr(
        session.config, "_tmp_path_factory") else None
    with SCANNER.timed():
        if basetemp is not None and Path(basetemp).exists():
            SCANNER.scan_tree(Path(basetemp))
        SCANNER.scan_tree(TESTS / "data" / "samples")
    if SCANNER.findings:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    findings = sorted(set(SCANNER.findings), key=str)
    if not findings:
        terminalreporter.write_line(
            f"secret scan: nothing found in {SCANNER.sources} texts, tables and files "
            f"({SCANNER.seconds:.1f} s)")
        return
    terminalreporter.section("secret scan", sep="=", red=True, bold=True)
    for finding in findings[:200]:
        terminalreporter.write_line(str(finding), red=True)
    terminalreporter.write_line(f"secret scan: {len(findings)} leak(s); the run fails")
