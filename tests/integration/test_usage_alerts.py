"""Quota alerts through the proxy on both engines: the 5-hour window crossing
ALERT_WINDOW_TOKEN_LIMIT levels, and the upstream's unified status and utilization, each
published once per window and level — also by a fresh process on the same database."""

from __future__ import annotations

import json
import time

import requests

from app.events import UsageAlert
from tests.fakes.upstream import Reply
from tests.support import InProcessProxy

DOMAIN = "team.example.com"
BODY = {"model": "claude-sonnet-4-5", "max_tokens": 64,
        "messages": [{"role": "user", "content": "Hi"}]}


def start(upstream, database_url, tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir(exist_ok=True)
    (creds / f"{DOMAIN}.credentials.json").write_text(json.dumps(
        {"type": "api_key", "accountId": "acc_a", "api_key": "sk-ant-api03-team-key-9999"}))
    proxy = InProcessProxy(upstream.base_url, record=True, DATABASE_URL=database_url,
                           CREDENTIALS_DIR=str(creds), SPOOL_DIR=str(tmp_path / "spool"),
                           STORAGE_BATCH_INTERVAL_MS="10", ALERT_WINDOW_TOKEN_LIMIT="1000",
                           ALERT_THRESHOLDS="80,95")
    alerts: list[UsageAlert] = []
    proxy.app.extensions["nexus.events"].subscribe(UsageAlert, alerts.append)
    return proxy, alerts


def send(proxy, upstream, reply: Reply) -> None:
    """One request, answered by `reply`, and written before the next is sent."""
    writer = proxy.app.extensions["nexus.writer"]
    before = writer.rows_written
    upstream.script(reply)
    answer = requests.post(f"{proxy.url}/v1/messages", json=BODY, timeout=10,
                           headers={"Host": DOMAIN, "anthropic-version": "2023-06-01"})
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 10
    while writer.rows_written <= before:
        assert time.monotonic() < deadline, writer.metrics()
        time.sleep(0.01)


def test_window_levels_alert_once_each(upstream, database_url, tmp_path, caplog):
    proxy, alerts = start(upstream, database_url, tmp_path)
    try:
        for output in (700, 150, 50):     # 70 %, 85 % (crosses 80), 90 %
            send(proxy, upstream, Reply(usage={"output_tokens": output}))
        assert [(a.kind, a.level, a.tokens) for a in alerts] == [("window_tokens", "80", 850)]
        first = alerts[0]
        assert (first.account_id, first.domain, first.limit) == ("acc_a", DOMAIN, 1000)
        assert first.used_percent == 85.0 and first.resets_at is not None and first.request_id
        assert "usage alert: acc_a: 850 output tokens in 5 h reached 80% of 1000 (resets " \
            in caplog.text
    finally:
        proxy.stop()
    # A fresh process reads the window from the database: 90 % + 60 crosses 95 only.
    proxy, alerts = start(upstream, database_url, tmp_path)
    try:
        send(proxy, upstream, Reply(usage={"output_tokens": 60}))
        assert [(a.level, a.tokens, a.used_percent) for a in alerts] == [("95", 960, 96.0)]
        send(proxy, upstream, Reply(usage={"output_tokens": 10}))
        assert len(alerts) == 1
    finally:
        proxy.stop()


def test_unified_status_and_utilization_alert_on_change(upstream, database_url, tmp_path):
    proxy, alerts = start(upstream, database_url, tmp_path)
    try:
        steps = [
            ({"status": "allowed", "5h-utilization": "0.50"}, []),
            ({"status": "allowed_warning", "5h-utilization": "0.85"},
             [("unified_utilization", "80"), ("unified_status", "allowed_warning")]),
            ({"status": "allowed_warning", "5h-utilization": "0.90"}, []),
            ({"status": "rejected", "5h-utilization": "1.0"},
             [("unified_utilization", "95"), ("unified_status", "rejected")]),
            ({"status": "rejected", "5h-utilization": "1.0"}, []),
        ]
        for unified, expected in steps:
            seen = len(alerts)
            send(proxy, upstream, Reply(unified=unified, usage={"output_tokens": 1}))
            assert [(a.kind, a.level) for a in alerts[seen:]] == expected, unified
        assert {a.window for a in alerts} == {"5h"}
        assert all(a.account_id == "acc_a" and a.request_id for a in alerts)
    finally:
        proxy.stop()
