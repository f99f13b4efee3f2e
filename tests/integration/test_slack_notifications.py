"""Slack notifications end to end: real proxy processes (gevent) and the app in-process, in
front of the fake upstream, posting to the fake Slack webhook (tests/fakes/slack.py)."""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from app.notify.notifier import Notifier
from app.notify.records import UpstreamProblem
from app.notify.targets import Defaults, Targets
from tests.fakes.oauth import TokenError
from tests.fakes.slack import ERROR, HANG, NORMAL, RATE_LIMITED, FakeSlack
from tests.fakes.upstream import ErrorReply, Reply, text_block
from tests.support import InProcessProxy

DOMAIN = "team.example.com"
BODY = {"model": "claude-sonnet-4-5", "max_tokens": 64,
        "messages": [{"role": "user", "content": "Hi"}]}
CLIENT_KEY = "sk-ant-api03-client-own-key-1111"
SECRET = "sk-ant-api03-LeakedKeyLeakedKeyLeakedKey-7Q9z"


@pytest.fixture
def slack():
    fake = FakeSlack().start()
    yield fake
    fake.stop()


def write_credentials(tmp_path: Path, files: dict[str, dict]) -> str:
    folder = tmp_path / "creds"
    folder.mkdir(exist_ok=True)
    for domain, data in files.items():
        (folder / f"{domain}.credentials.json").write_text(json.dumps(data))
    return str(folder)


def api_key_file(account: str, **extra) -> dict:
    return {"type": "api_key", "accountId": account, "api_key": "sk-ant-api03-team-key-9999",
            **extra}


def post(proxy, domain: str = DOMAIN, body: dict = BODY, session=requests) -> requests.Response:
    return session.post(proxy.url + "/v1/messages", json=body, timeout=30,
                        headers={"Host": domain, "x-api-key": CLIENT_KEY,
                                 "anthropic-version": "2023-06-01"})


def fields_of(delivery) -> dict[str, str]:
    """The `*Label*\\nvalue` fields of a message's first fields section."""
    for block in delivery.payload["blocks"]:
        if "fields" in block:
            return dict(f["text"].split("\n", 1) for f in block["fields"])
    return {}


def quiet(slack: FakeSlack, seconds: float = 0.5) -> None:
    """Give a message that should not come the time to come anyway."""
    time.sleep(seconds)


# ------------------------------------------------------------------ upstream errors


def test_an_upstream_500_gives_exactly_one_message(start_proxy, upstream, slack, tmp_path):
    creds = write_credentials(tmp_path, {DOMAIN: api_key_file("acc_team")})
    proxy = start_proxy(UPSTREAM_MAX_RETRIES="0", SLACK_WEBHOOK_URL=slack.url,
                        CREDENTIALS_DIR=creds)
    upstream.script(ErrorReply(500, message="Internal server error"))
    answer = post(proxy)
    assert answer.status_code == 500
    request_id = answer.headers["x-nexus-request-id"]
    [message] = slack.wait_delivered(1)
    quiet(slack)
    assert len(slack.received) == 1
    assert fields_of(message) == {
        "*Domain*": DOMAIN, "*Account*": "acc_team", "*Model*": "claude-sonnet-4-5",
        "*Status*": "500", "*Error type*": "api_error", "*Request id*": f"`{request_id}`"}
    link = f"http://127.0.0.1:{proxy.port}/dashboard/requests/{request_id}"
    assert f"<{link}|Open in the dashboard>" in message.text
    assert message.payload["text"].startswith(f"Upstream error 500 on {DOMAIN} (acc_team, ")
    assert request_id in message.payload["text"]
    assert message.answer == "ok"


def test_a_hundred_identical_errors_give_one_message_then_a_count(start_proxy, upstream,
                                                                   slack):
    proxy = start_proxy(UPSTREAM_MAX_RETRIES="0", SLACK_WEBHOOK_URL=slack.url)
    started = time.monotonic()
    with requests.Session() as session:
        for _ in range(100):
            upstream.script(ErrorReply(529))
            assert post(proxy, session=session).status_code == 529
    assert time.monotonic() - started < 60
    slack.wait_delivered(1)
    quiet(slack, 1.0)
    assert len(slack.received) == 1
    # Shutting down reports the repeats the open window held back: "99 more like this".
    assert proxy.stop() == 0
    first, follow_up = slack.wait_delivered(2, timeout=1)
    assert "Upstream error 529" in first.payload["text"]
    assert "(99 more like this since" in follow_up.payload["text"]
    assert ":repeat: 99 more like this since" in follow_up.text


def test_the_count_follows_when_the_window_ends(upstream, slack):
    proxy = InProcessProxy(upstream.base_url, UPSTREAM_MAX_RETRIES="0",
                           SLACK_WEBHOOK_URL=slack.url)
    notifier = proxy.app.extensions["nexus.notifier"]
    notifier.start()
    try:
        for _ in range(5):
            upstream.script(ErrorReply(500))
            assert post(proxy).status_code == 500
        slack.wait_delivered(1)
        quiet(slack, 1.2)
        assert len(slack.received) == 1
        assert notifier.metrics()["deduplicated"] == 4
        later = datetime.now(UTC) + timedelta(minutes=10, seconds=1)
        proxy.app.extensions["nexus.clock"] = lambda: later
        follow_up = slack.wait_delivered(2, timeout=3)[1]
        assert "4 more like this since" in follow_up.payload["text"]
        assert fields_of(follow_up)["*Status*"] == "500"
        # The window reopened when the count went out: the next one is counted again.
        upstream.script(ErrorReply(500))
        assert post(proxy).status_code == 500
        quiet(slack, 1.2)
        assert len(slack.received) == 2
    finally:
        proxy.stop()
    assert "1 more like this" in slack.wait_delivered(3, timeout=1)[2].payload["text"]
    metrics = notifier.metrics()
    assert (metrics["sent"], metrics["deduplicated"], metrics["queued"]) == (3, 5, 0)


# ------------------------------------------------------------------ Slack misbehaving


def timed_errors(proxy, upstream, session, prefix: str, n: int = 30) -> list[float]:
    """Seconds each of `n` upstream 500s took through the proxy, each on its own domain (so
    each is a distinct alert)."""
    times = []
    for i in range(n):
        upstream.script(ErrorReply(500))
        started = time.perf_counter()
        answer = post(proxy, f"{prefix}{i}.example.com", session=session)
        times.append(time.perf_counter() - started)
        assert answer.status_code == 500
    return times


def test_a_hanging_or_failing_slack_changes_no_latency_and_loses_nothing(
        start_proxy, upstream, slack):
    proxy = start_proxy(UPSTREAM_MAX_RETRIES="0", SLACK_WEBHOOK_URL=slack.url)
    with requests.Session() as session:
        timed_errors(proxy, upstream, session, "warm", 5)
        slack.wait_delivered(5)
        healthy = timed_errors(proxy, upstream, session, "healthy")
        slack.wait_delivered(35)
        slack.set_mode(HANG)
        hanging = timed_errors(proxy, upstream, session, "hang")
        # The notifier posts on its own time: wait for the first post Slack now holds, then
        # check it is the only one (the rest wait behind it, none is dropped or sent twice).
        slack.wait_received(36)
        quiet(slack, 0.5)
        assert sum(d.status is None for d in slack.received) == 1  # the one being held
        slack.set_mode(ERROR)  # the held one gets a 500 too
        failing = timed_errors(proxy, upstream, session, "fail")
    slack.set_mode(NORMAL)
    delivered = slack.wait_delivered(95, timeout=90)
    quiet(slack)
    domains = Counter(fields_of(d)["*Domain*"] for d in slack.delivered())
    assert len(delivered) == len(slack.delivered()) == 95
    expected = {f"{p}{i}.example.com" for p, n in
                (("warm", 5), ("healthy", 30), ("hang", 30), ("fail", 30)) for i in range(n)}
    assert set(domains) == expected and set(domains.values()) == {1}  # none lost, no twice
    assert any(d.status == 500 for d in slack.received)
    medians = {name: statistics.median(times) * 1000 for name, times in
               (("healthy", healthy), ("hanging", hanging), ("failing", failing))}
    print("\nproxy answer medians (ms): " +
          ", ".join(f"{name} {value:.2f}" for name, value in medians.items()) +
          "; p90 (ms): " + ", ".join(
              f"{name} {statistics.quantiles(times, n=10)[-1] * 1000:.2f}"
              for name, times in (("healthy", healthy), ("hanging", hanging),
                                  ("failing", failing))))
    for name in ("hanging", "failing"):
        assert medians[name] <= medians["healthy"] * 1.5 + 20, medians


def test_retry_after_and_back_off(start_proxy, upstream, slack):
    proxy = start_proxy(UPSTREAM_MAX_RETRIES="0", SLACK_WEBHOOK_URL=slack.url)
    slack.script(RATE_LIMITED, ERROR)
    upstream.script(ErrorReply(503))
    assert post(proxy).status_code == 503
    [message] = slack.wait_delivered(1, timeout=10)
    limited, failed, ok = slack.received
    assert (limited.status, limited.answer, failed.status, ok.status) == \
        (429, "rate_limited", 500, 200)
    assert failed.received_at - limited.received_at >= 1.0   # Retry-After: 1
    assert ok.received_at - failed.received_at >= 1.0        # first back-off step
    assert limited.payload == failed.payload == ok.payload == message.payload
    assert any("slack: delivery to http://127.0.0.1" in line and "HTTP 429" in line
               for line in proxy.log_text().splitlines())
    assert "/services/" not in proxy.log_text()  # the webhook's secret path is never logged


def test_the_queue_is_bounded_and_kept_while_slack_is_down(slack, caplog):
    notifier = Notifier(Targets(None, Defaults(slack.url)), "http://proxy.test", queue_max=20)
    notifier.start()

    def problem(i: int) -> UpstreamProblem:
        return UpstreamProblem(f"r{i}", f"d{i}.example.com", None, "m", 500, "api_error",
                               None, "POST", "/v1/messages", datetime.now(UTC), 1.0, 1)

    slack.set_mode(HANG)
    notifier.enqueue(problem(0))
    slack.wait_received(1)  # the worker is stuck in that post from now on
    for i in range(1, 30):
        notifier.enqueue(problem(i))
    assert notifier.metrics()["queued"] == 21 and notifier.metrics()["dropped"] == 9
    slack.set_mode(NORMAL)
    delivered = slack.wait_delivered(21)
    assert [fields_of(d)["*Domain*"] for d in delivered] == \
        [f"d{i}.example.com" for i in (0, *range(10, 30))]  # the oldest were dropped
    # Stopping while Slack hangs gives up after STOP_FLUSH_S and says what was lost.
    slack.set_mode(HANG)
    notifier.enqueue(problem(30))
    notifier.enqueue(problem(31))
    slack.wait_received(22)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="app.notify.notifier"):
        notifier.stop()
    assert time.monotonic() - started < 4
    assert "slack: 2 notification(s) not sent at shutdown" in caplog.text
    assert notifier.metrics()["sent"] == 21
    notifier.enqueue(problem(32))  # after stop: counted, never queued
    assert notifier.metrics()["dropped"] == 10
    slack.set_mode(NORMAL)


# ------------------------------------------------------------------ targets and masking


def test_targets_per_domain_and_masked_secrets(start_proxy, upstream, slack, tmp_path):
    creds = write_credentials(tmp_path, {
        "silent.example.com": api_key_file("acc_silent", slack={"enabled": False}),
        "own.example.com": api_key_file("acc_own", slack={
            "webhook_url": slack.url_for("own"), "channel": "#own", "enabled": True}),
    })
    proxy = start_proxy(UPSTREAM_MAX_RETRIES="0", SLACK_WEBHOOK_URL=slack.url,
                        SLACK_CHANNEL="#alerts", SLACK_USERNAME="Nexus",
                        SLACK_ICON_EMOJI=":robot_face:", CREDENTIALS_DIR=creds,
                        PUBLIC_URL="https://nexus.example.com/")
    leak = f"invalid x-api-key: {SECRET}"
    for domain in ("silent.example.com", "plain.example.com", "own.example.com"):
        upstream.script(ErrorReply(500, message=leak))
        assert post(proxy, domain).status_code == 500
    slack.wait_delivered(2)
    quiet(slack)
    assert len(slack.received) == 2
    [plain] = slack.delivered("global")
    [own] = slack.delivered("own")
    assert fields_of(plain)["*Domain*"] == "plain.example.com"
    assert (plain.payload["channel"], plain.payload["username"], plain.payload["icon_emoji"]) \
        == ("#alerts", "Nexus", ":robot_face:")
    assert fields_of(own)["*Domain*"] == "own.example.com" and own.payload["channel"] == "#own"
    for message in (plain, own):
        assert SECRET not in message.raw.decode() and "LeakedKey" not in message.raw.decode()
        assert "sk-ant-…7Q9z" in message.text
        assert "https://nexus.example.com/dashboard/requests/" in message.text


def test_a_refresh_failure_is_sent(upstream, slack, tmp_path, oauth_endpoint):
    creds = write_credentials(tmp_path, {DOMAIN: {
        "type": "oauth", "accountId": "acc_max_1",
        "oauth": {"accessToken": "sk-ant-oat01-old-token-0000", "expiresAt": 1000,
                  "refreshToken": oauth_endpoint.issue_refresh_token()}}})
    oauth_endpoint.errors.append(TokenError(status=401, error="invalid_client",
                                            description="Client revoked"))
    proxy = InProcessProxy(upstream.base_url, CREDENTIALS_DIR=creds,
                           CLAUDE_OAUTH_TOKEN_URL=oauth_endpoint.token_url,
                           SLACK_WEBHOOK_URL=slack.url)
    proxy.app.extensions["nexus.notifier"].start()
    try:
        assert post(proxy).status_code == 401
        [message] = slack.wait_delivered(1)
    finally:
        proxy.stop()
    assert message.payload["text"] == (f"OAuth refresh failed for {DOMAIN} (acc_max_1): the "
                                       "token endpoint answered 401: Client revoked")
    assert len(slack.received) == 1  # a 401 to the client is no upstream error


# ------------------------------------------------------------------ quota and digest


def test_quota_levels_alert_once_each(start_proxy, upstream, slack, tmp_path):
    creds = write_credentials(tmp_path, {DOMAIN: api_key_file("acc_team")})
    proxy = start_proxy(SLACK_WEBHOOK_URL=slack.url, CREDENTIALS_DIR=creds,
                        ALERT_WINDOW_TOKEN_LIMIT="1000", ALERT_THRESHOLDS="80,95",
                        STORAGE_BATCH_INTERVAL_MS="10")
    for output in (700, 150, 50, 60, 10, 5):  # 70, 85 (80 crossed), 90, 96 (95), 97, 97.5 %
        upstream.script(Reply(usage={"output_tokens": output}))
        assert post(proxy).status_code == 200
        time.sleep(0.2)  # written and checked before the next
    eighty, ninety_five = slack.wait_delivered(2)
    quiet(slack, 1.0)
    assert len(slack.received) == 2
    assert eighty.payload["blocks"][0]["text"]["text"] == \
        ":warning: Quota: 80 % of the 5-hour window"
    assert ninety_five.payload["blocks"][0]["text"]["text"] == \
        ":rotating_light: Quota: 95 % of the 5-hour window"
    assert "*acc_team* used 960 of 1,000 output tokens (96 %)" in ninety_five.text
    assert fields_of(ninety_five)["*Account*"] == "acc_team"
    assert fields_of(ninety_five)["*Domain*"] == DOMAIN
    assert "Resets" in " ".join(fields_of(ninety_five))


def test_conversation_digest(upstream, slack):
    proxy = InProcessProxy(upstream.base_url, SLACK_WEBHOOK_URL=slack.url,
                           SLACK_CONVERSATION_DIGEST="true")
    proxy.app.extensions["nexus.notifier"].start()
    body = {**BODY, "tools": [{"name": "Read", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": f"Why does {SECRET} fail?"}]}
    try:
        upstream.script(Reply(content=[text_block("Because it was revoked.")],
                              usage={"input_tokens": 1000, "output_tokens": 200}))
        answer = post(proxy, body=body)
        assert answer.status_code == 200
        upstream.script(Reply())
        assert post(proxy).status_code == 200  # a side request (no tools): no digest
        [message] = slack.wait_delivered(1)
        quiet(slack)
    finally:
        proxy.stop()
    assert len(slack.received) == 1
    request_id = answer.headers["x-nexus-request-id"]
    _, prompt, reply, footer = message.payload["blocks"]
    assert prompt["text"]["text"] == "*User*\n>Why does sk-ant-…7Q9z fail?"
    assert reply["text"]["text"] == "*Claude*\n>Because it was revoked."
    footer = footer["elements"][0]["text"]
    assert "tokens in 1,000 / out 200" in footer and "$0.006000" in footer
    assert f"/dashboard/requests/{request_id}|Open in the dashboard>" in footer
