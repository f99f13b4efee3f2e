"""A request id on every line: the exchange id on the proxy route, a generated (or the client's)
id elsewhere, answered as X-Request-Id; none carries over to the next request of a keep-alive
connection, which gevent serves in the same greenlet."""

from __future__ import annotations

import io
import json
import logging
import threading

import gevent
import pytest
import requests
from flask import request
from gevent.pywsgi import WSGIServer

from app import create_app
from app.logs import request_id_var

log = logging.getLogger("nexus.test")


def _app(tmp_path, upstream_url: str = "http://127.0.0.1:9"):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/nexus.db",
                      "CREDENTIALS_DIR": str(tmp_path / "credentials"),
                      "SPOOL_DIR": str(tmp_path / "spool"), "CLAUDE_API_BASE_URL": upstream_url,
                      "LOG_FORMAT": "json", "LOG_LEVEL": "info"}, env_file=None)
    stream = io.StringIO()
    for handler in logging.getLogger().handlers:
        if getattr(handler, "_nexus", False):
            handler.setStream(stream)
    app.extensions["test.log"] = stream
    app.extensions["test.entries"] = entries = []

    @app.before_request
    def seen_at_entry():  # registered after init_request_ids: what each view starts with
        entries.append((request.endpoint, request_id_var.get()))

    @app.route("/_test/log")
    def log_line():
        log.warning("serving %s", request.path)
        return {"request_id": request_id_var.get(), "port": request.environ.get("REMOTE_PORT")}

    @app.route("/_test/exchange")
    def like_the_proxy_view():
        request_id_var.set("exchange-id-1")  # what app/proxy/views.py does
        log.warning("exchange line")
        return {"port": request.environ.get("REMOTE_PORT")}

    return app


def _lines(app) -> list[dict]:
    return [json.loads(line) for line in app.extensions["test.log"].getvalue().splitlines()
            if line.startswith("{")]


def test_every_non_proxy_answer_has_a_request_id(tmp_path):
    app = _app(tmp_path)
    client = app.test_client()
    first = client.get("/health/live").headers["X-Request-Id"]
    second = client.get("/health/live").headers["X-Request-Id"]
    assert len(first) == 12 and first != second
    assert client.get("/dashboard/", headers={"X-Request-Id": "abc"}).headers[
        "X-Request-Id"] == "abc"
    assert client.get("/no/such/page").headers["X-Request-Id"]
    answer = client.get("/_test/log", headers={"X-Request-Id": "trace-7.a_b-C"})
    assert answer.headers["X-Request-Id"] == "trace-7.a_b-C"
    assert answer.json["request_id"] == "trace-7.a_b-C"
    [line] = [e for e in _lines(app) if e["logger"] == "nexus.test"]
    assert line["request_id"] == "trace-7.a_b-C"


@pytest.mark.parametrize("incoming", ["x" * 65, "two words", "a/b", "ключ", "a\tb", ""])
def test_an_unusable_client_request_id_is_replaced(tmp_path, incoming):
    client = _app(tmp_path).test_client()
    answered = client.get("/health/live", headers={"X-Request-Id": incoming}).headers[
        "X-Request-Id"]
    assert answered != incoming and len(answered) == 12


def test_the_id_resets_on_each_request(tmp_path):
    app = _app(tmp_path)
    client = app.test_client()
    request_id_var.set("left-over")
    assert client.get("/_test/log").json["request_id"] not in ("left-over", None)
    request_id_var.set("left-over")
    client.post("/v1/messages", json={})  # refused (no upstream): the proxy view still ran
    assert ("proxy.forward", None) in app.extensions["test.entries"]


class GeventServer:
    """The app on gevent's WSGI server, in a thread with its own hub (nothing is patched)."""

    def __init__(self, app):
        self.app = app
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _run(self):
        self.server = WSGIServer(("127.0.0.1", 0), self.app, log=None, error_log=None)
        self.server.start()
        self.hub = gevent.get_hub()
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._ready.set()
        self.server.serve_forever()

    def stop(self):
        self.hub.loop.run_callback_threadsafe(self.server.stop)
        self._thread.join(10)


def test_no_request_id_leaks_into_the_next_request_of_a_connection(tmp_path, upstream):
    app = _app(tmp_path, upstream.base_url)
    served = GeventServer(app)
    try:
        with requests.Session() as session:
            exchange = session.get(served.url + "/_test/exchange")
            after_exchange = session.get(served.url + "/_test/log")
            proxied = session.post(served.url + "/v1/messages", timeout=10,
                                   headers={"x-api-key": "sk-ant-api03-passthrough-000000"},
                                   json={"model": "claude-opus-4-8", "max_tokens": 8,
                                         "messages": [{"role": "user", "content": "hi"}]})
            after_proxy = session.get(served.url + "/_test/log")
    finally:
        served.stop()
    assert proxied.status_code == 200, proxied.text
    ports = {exchange.json()["port"], after_exchange.json()["port"],
             after_proxy.json()["port"]}
    assert len(ports) == 1, "the requests did not share one keep-alive connection"
    exchange_id = proxied.headers["x-nexus-request-id"]
    for answer in (after_exchange, after_proxy):
        own = answer.json()["request_id"]
        assert own == answer.headers["X-Request-Id"]
        assert own not in ("exchange-id-1", exchange_id)
    assert "X-Request-Id" not in proxied.headers  # the proxy answers x-nexus-request-id
    assert ("proxy.forward", None) in app.extensions["test.entries"]
    lines = _lines(app)
    served_lines = [e for e in lines if e.get("msg") == "serving /_test/log"]
    assert [e["request_id"] for e in served_lines] == [
        after_exchange.headers["X-Request-Id"], after_proxy.headers["X-Request-Id"]]
    [exchange_line] = [e for e in lines if e["logger"] == "nexus.exchange"]
    assert exchange_line["request_id"] == exchange_id
