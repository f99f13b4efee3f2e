"""Fixtures of the reliability suite: real `python wsgi.py` processes, real sockets, real
databases; only the Anthropic API, the OAuth endpoint and Slack are fakes (on 127.0.0.1).

Generic fixtures, for every test file in this folder:
- `ledger(fault)` — a `tally.Ledger` for one fault: tag requests with it (`clients.post`,
  `clients.request_bytes`, or `User-Agent: Ledger.agent(entry)`), then `ledger.audit(url)`
  checks that each exchange is in the `requests` table exactly once and adds the figures to
  the session's tally;
- `tally` — the session's `tally.Tally`, for figures a test counts itself (`tally.add`);
- `engine_url` — module-scoped, parametrised: an empty database of each engine (a SQLite file,
  a fresh PostgreSQL database on the suite's server);
- `module_proxy(**settings)` — start a proxy process that lives for the test module, in front
  of the session's fake upstream (or `upstream_url=`); settings are environment variables.
Function-scoped proxies: the root conftest's `start_proxy`. The fake upstream: `upstream`.
Helpers: `clients.py` (tagged requests, raw-socket clients, `Crowd` for hundreds of streams
from one thread, `Load` for steady traffic, the proxy's RSS), `outages.py` (one PostgreSQL
database taken away), `tally.py` (the ledger and the tally).

At the end of the session the tally is printed in the terminal summary and written to
`tests/reliability/figures.json` (git-ignored: it is a run's result, of the faults that run
exercised; the README quotes a full run's).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.databases import engine_url as _engine_url
from tests.reliability.tally import Ledger, Tally
from tests.support import ProxyProcess

FIGURES_FILE = Path(__file__).with_name("figures.json")
_TALLY = Tally()


@pytest.fixture(scope="session")
def tally() -> Tally:
    return _TALLY


@pytest.fixture
def ledger(tally):
    """`ledger("upstream: reset mid-stream")` → a Ledger counted in the session's tally."""
    return lambda fault: Ledger(fault, tally)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def engine_url(request, tmp_path_factory):
    with _engine_url(request.param, tmp_path_factory.mktemp("db"), request) as url:
        yield url


@pytest.fixture(scope="module")
def module_proxy(fake_upstream_server, tmp_path_factory):
    started: list[ProxyProcess] = []

    def start(upstream_url: str | None = None, **settings: str) -> ProxyProcess:
        proc = ProxyProcess(upstream_url or fake_upstream_server.base_url,
                            tmp_path_factory.mktemp("proxy"), settings)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _TALLY.faults:
        return
    report = _TALLY.report()
    FIGURES_FILE.write_text(json.dumps(report, indent=2) + "\n")
    write = terminalreporter.write_line
    terminalreporter.section("reliability tally")
    write(f"{'fault':<48} {'sent':>6} {'answered':>8} {'recorded':>8} {'lost':>5} "
          f"{'declared':>8} {'dupes':>5}")
    for name, row in report["faults"].items():
        write(f"{name:<48} {row['sent']:>6} {row['answered']:>8} {row['recorded']:>8} "
              f"{row['lost']:>5} {row['declared_lost']:>8} {row['duplicates']:>5}")
    t = report["totals"]
    write(f"{'total':<48} {t['sent']:>6} {t['answered']:>8} {t['recorded']:>8} {t['lost']:>5} "
          f"{t['declared_lost']:>8} {t['duplicates']:>5}")
    write(f"(written to {FIGURES_FILE})")
