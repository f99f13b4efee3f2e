"""Fixtures of the JSON API tests: each module gets one database per engine, filled once."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.storage import close as close_storage
from app.storage import upgrade_on_start
from app.storage.models import bind
from tests.databases import engine_url
from tests.integration.api_support import KEY, Server, build_dataset, make_app


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def api_database_url(request, tmp_path_factory):
    """An empty database of each engine: a temp SQLite file, a fresh PostgreSQL database."""
    with engine_url(request.param, tmp_path_factory.mktemp("api"), request) as url:
        yield url


@pytest.fixture(scope="module")
def api_served(api_database_url, tmp_path_factory):
    """The app without a key over a database holding the dataset, and the dataset."""
    app = make_app(api_database_url, tmp_path_factory.mktemp("app"))
    upgrade_on_start(app)
    with app.extensions["nexus.db"].connection_context():
        dataset = build_dataset(datetime.now(UTC))
    server = Server(app)
    yield server, dataset
    server.stop()
    close_storage(app)


@pytest.fixture
def api_server(api_served):
    # Other apps (other tests, other modules) rebind the models: point them back at ours.
    bind(api_served[0].app.extensions["nexus.db"])
    return api_served[0]


@pytest.fixture
def api_data(api_served):
    return api_served[1]


@pytest.fixture
def api_keyed(api_served, api_database_url, tmp_path):
    """The same database behind an app with DASHBOARD_API_KEY set."""
    app = make_app(api_database_url, tmp_path, DASHBOARD_API_KEY=KEY)
    server = Server(app)
    yield server
    server.stop()
    close_storage(app)
    bind(api_served[0].app.extensions["nexus.db"])
