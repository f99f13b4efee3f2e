"""Shared fixtures: the fake upstream, the proxy as a real process, the proxy in-process.

Also loads tests/secret_scan.py, which fails the run if a secret the suite used turns up in
clear in a stored row, a log line, a test sample or a rendered page (see its docstring).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.databases import engine_url
from tests.fakes.oauth import FakeOAuth
from tests.fakes.upstream import FakeUpstream
from tests.pg import PostgresCluster
from tests.support import InProcessProxy, ProxyProcess

pytest_plugins = ["tests.integration.upstream_requests",  # the fake-upstream tests' fixtures
                  "tests.secret_scan"]


@pytest.fixture(scope="session")
def fake_upstream_server():
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture
def upstream(fake_upstream_server):
    """The fake Anthropic API, with an empty script and log."""
    fake_upstream_server.reset()
    yield fake_upstream_server
    fake_upstream_server.reset()


@pytest.fixture(scope="session")
def shared_proxy(fake_upstream_server, tmp_path_factory):
    proc = ProxyProcess(fake_upstream_server.base_url, tmp_path_factory.mktemp("proxy"))
    yield proc
    proc.stop()


@pytest.fixture
def proxy(shared_proxy, upstream):
    """The proxy served by `python wsgi.py` (gevent), default settings, in front of the fake."""
    shared_proxy.assert_alive()
    return shared_proxy


@pytest.fixture
def start_proxy(fake_upstream_server, tmp_path):
    """Start a proxy process with particular settings: `start_proxy(UPSTREAM_MAX_RETRIES="0")`."""
    started: list[ProxyProcess] = []

    def start(upstream_url: str | None = None, **settings: str) -> ProxyProcess:
        proc = ProxyProcess(upstream_url or fake_upstream_server.base_url,
                            tmp_path / f"proxy{len(started)}", settings)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def inproc(upstream):
    """The app in this process (threaded werkzeug server): exposes the exchanges it ended."""
    server = InProcessProxy(upstream.base_url)
    yield server
    server.stop()


@pytest.fixture
def oauth_endpoint():
    """The fake Claude OAuth token endpoint (rotating, single-use refresh tokens)."""
    fake = FakeOAuth().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="session")
def postgres_dsn():
    """A PostgreSQL server of the suite's own, started once (or NEXUS_TEST_POSTGRES_DSN's, so
    that a pytest run inside a test reuses the outer run's server)."""
    if os.environ.get("NEXUS_TEST_POSTGRES_DSN"):
        yield os.environ["NEXUS_TEST_POSTGRES_DSN"]
        return
    cluster = PostgresCluster().start()
    yield cluster.dsn
    server_log = Path(cluster.root, "log")  # statements that failed are logged with values
    if server_log.exists():
        from tests import secret_scan  # (the plugin: imported once pytest has loaded it)

        secret_scan.SCANNER.scan(server_log.read_bytes(), "postgresql server log")
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """An empty database of each engine: a temp SQLite file, a fresh PostgreSQL database."""
    with engine_url(request.param, tmp_path, request) as url:
        yield url
