"""Side services hanging: the Slack webhook and the OAuth token endpoint take requests and never
answer. Requests keep flowing: every client is answered while the hung call is still held.

"Normal speed" is shown by order, not by a clock: all answers arrive while the fake still
holds the first call (tests/integration/test_slack_notifications.py measures the latencies).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from tests.fakes.oauth import FakeOAuth
from tests.fakes.slack import HANG, NORMAL, FakeSlack
from tests.fakes.upstream import ErrorReply
from tests.reliability.clients import message, post


def test_a_hanging_slack_webhook(start_proxy, upstream, ledger, tmp_path):
    book = ledger("side: Slack webhook hanging")
    slack = FakeSlack(mode=HANG).start()
    database = f"sqlite:///{tmp_path}/slack.db"
    try:
        proxy = start_proxy(UPSTREAM_MAX_RETRIES="0", SLACK_WEBHOOK_URL=slack.url,
                            DATABASE_URL=database, STORAGE_BATCH_INTERVAL_MS="50")
        upstream.script(*[ErrorReply(500) for _ in range(20)])  # each one an alert for Slack
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda n: post(
                proxy, book, message(stream=False),
                headers={"Host": f"team{n}.example.com"}), range(20)))
        upstream.reset()
        answers += [post(proxy, book, message(stream=n % 2 == 0)) for n in range(20)]
        slack.wait_received(1)
        assert [a.status_code for a in answers] == [500] * 20 + [200] * 20
        assert [d.status for d in slack.received] == [None], "still holding the first post"
        book.audit(database)
        report = requests.get(proxy.url + "/health", timeout=5).json()
        assert report["notifications"]["queued"] >= 1  # the alerts wait their turn
    finally:
        slack.set_mode(NORMAL)  # answer the held post: the proxy can stop
        slack.stop()


def test_a_hanging_oauth_token_endpoint(start_proxy, upstream, ledger, tmp_path):
    """A token inside the 60 s refresh margin but still valid: the refresh hangs, requests go
    on with the current token. Another domain (an API key) never notices."""
    book = ledger("side: OAuth token endpoint hanging")
    oauth = FakeOAuth().start()
    creds = tmp_path / "creds"
    creds.mkdir()
    old_token = "sk-ant-oat01-still-valid-for-30-seconds"
    (creds / "max.example.com.credentials.json").write_text(json.dumps({
        "type": "oauth", "accountId": "acc_max", "oauth": {
            "accessToken": old_token, "refreshToken": oauth.issue_refresh_token(),
            "expiresAt": int((time.time() + 30) * 1000), "scopes": ["user:inference"]}}))
    (creds / "keyed.example.com.credentials.json").write_text(json.dumps({
        "type": "api_key", "accountId": "acc_key", "api_key": "sk-ant-api03-domain-key-0000"}))
    database = f"sqlite:///{tmp_path}/oauth.db"
    oauth.hold()
    try:
        proxy = start_proxy(CREDENTIALS_DIR=str(creds), CLAUDE_OAUTH_TOKEN_URL=oauth.token_url,
                            DATABASE_URL=database, STORAGE_BATCH_INTERVAL_MS="50")
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda n: post(
                proxy, book, message(stream=n % 2 == 0), timeout=15, headers={
                    "Host": "max.example.com" if n % 2 else "keyed.example.com"}), range(24)))
        assert [a.status_code if a is not None else None for a in answers] == [200] * 24
        assert len(oauth.held()) == 1, "one refresh, still hanging"
        tokens = {r.header("authorization") for r in upstream.received
                  if r.header("authorization")}
        assert tokens == {f"Bearer {old_token}"}
        book.audit(database)
        oauth.release()
        deadline = time.monotonic() + 10
        while not [c for c in oauth.calls if c.status == 200]:
            assert time.monotonic() < deadline, "the held refresh never finished"
            time.sleep(0.05)
        upstream.reset()
        assert post(proxy, book, message(stream=False),
                    headers={"Host": "max.example.com"}).status_code == 200
        assert upstream.received[0].header("authorization") != f"Bearer {old_token}"
        book.audit(database)
    finally:
        oauth.release()
        oauth.stop()
