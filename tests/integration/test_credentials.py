"""Credentials through real proxy processes: domain keys and OAuth, refresh under load (one
refresh for 50 requests, also across two processes), failures as 401s, client auth."""

from __future__ import annotations

import json
import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.fakes.oauth import TokenError
from tests.fakes.upstream import ErrorReply

DOMAIN = "team.example.com"
STREAM = {"model": "claude-opus-4-8", "max_tokens": 64, "stream": True,
          "messages": [{"role": "user", "content": "Hi"}]}
CLIENT_BETA = "claude-code-20250219,interleaved-thinking-2025-05-14"


def write_credential(directory: Path, data: dict, domain: str = DOMAIN) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{domain}.credentials.json"
    path.write_text(json.dumps(data))
    return path


def oauth_file(oauth_endpoint, expires_in_s: float) -> dict:
    return {
        "type": "oauth", "accountId": "acc_max_1",
        "oauth": {"accessToken": "sk-ant-oat01-old-token-0000", "expiresAt":
                  int((time.time() + expires_in_s) * 1000),
                  "refreshToken": oauth_endpoint.issue_refresh_token(),
                  "scopes": ["user:inference"], "isMax": True},
        "client_api_key": "cnp_live_keepme", "slack": {"channel": "#claude", "enabled": False},
        "notes": "operator field the proxy must keep",
    }


def post(proxy, body=STREAM, domain=DOMAIN, **headers):
    return requests.post(proxy.url + "/v1/messages?beta=true", json=body, timeout=30,
                         headers={"Host": domain, "anthropic-beta": CLIENT_BETA, **headers})


def test_domain_api_key_replaces_the_clients(start_proxy, upstream, tmp_path):
    creds = tmp_path / "creds"
    write_credential(creds, {"type": "api_key", "accountId": "acc_team_1",
                             "api_key": "sk-ant-api03-team-key-9999"})
    proxy = start_proxy(CREDENTIALS_DIR=str(creds))
    response = post(proxy, **{"x-api-key": "sk-ant-api03-client-own-1111"})
    assert response.status_code == 200
    received = upstream.received[0]
    assert received.header("x-api-key") == "sk-ant-api03-team-key-9999"
    assert received.header("authorization") is None
    assert received.header("anthropic-beta") == CLIENT_BETA
    record = proxy.exchange(response.headers["x-nexus-request-id"])
    assert record["account_id"] == "acc_team_1"
    assert record["auth_mode"] == "domain_credential"
    assert record["domain"] == DOMAIN


def test_oauth_credential_sends_bearer_and_adds_the_beta(start_proxy, upstream, tmp_path,
                                                          oauth_endpoint):
    creds = tmp_path / "creds"
    write_credential(creds, oauth_file(oauth_endpoint, expires_in_s=3600))
    proxy = start_proxy(CREDENTIALS_DIR=str(creds), CLAUDE_OAUTH_TOKEN_URL=oauth_endpoint.token_url)
    response = post(proxy, **{"x-api-key": "sk-ant-api03-client-own-1111"})
    assert response.status_code == 200
    received = upstream.received[0]
    assert received.header("authorization") == "Bearer sk-ant-oat01-old-token-0000"
    assert received.header("x-api-key") is None
    assert received.header("anthropic-beta") == CLIENT_BETA + ",oauth-2025-04-20"
    assert oauth_endpoint.calls == []  # still valid for an hour: no refresh


def _burst(proxies, count: int) -> list[requests.Response]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(post, proxies[i % len(proxies)]) for i in range(count)]
        return [f.result() for f in futures]


def _check_refreshed_once(path: Path, oauth_endpoint, upstream, responses, before: dict):
    assert [r.status_code for r in responses] == [200] * len(responses)
    assert len(oauth_endpoint.refresh_calls()) == 1
    answer = oauth_endpoint.refresh_calls()[0].answer
    data = json.loads(path.read_text())
    assert data["oauth"]["accessToken"] == answer["access_token"]
    assert data["oauth"]["refreshToken"] == answer["refresh_token"]
    assert data["oauth"]["expiresAt"] > time.time() * 1000 + 3600_000
    assert data["oauth"]["isMax"] is True and data["oauth"]["scopes"] == ["user:inference",
                                                                           "user:profile"]
    for key in ("type", "accountId", "client_api_key", "slack", "notes"):
        assert data[key] == before[key]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    tokens = {r.header("authorization") for r in upstream.received}
    assert tokens == {f"Bearer {answer['access_token']}"}
    assert all(b"event: message_stop" in r.content for r in responses)


def test_expired_token_50_concurrent_streams_one_refresh(start_proxy, upstream, tmp_path,
                                                         oauth_endpoint):
    oauth_endpoint.delay_s = 0.3  # a slow refresh: every request arrives while it runs
    creds = tmp_path / "creds"
    before = oauth_file(oauth_endpoint, expires_in_s=-30)
    path = write_credential(creds, before)
    proxy = start_proxy(CREDENTIALS_DIR=str(creds), CLAUDE_OAUTH_TOKEN_URL=oauth_endpoint.token_url)
    responses = _burst([proxy], 50)
    _check_refreshed_once(path, oauth_endpoint, upstream, responses, before)


def test_two_processes_share_one_refresh(start_proxy, upstream, tmp_path, oauth_endpoint,
                                         postgres_dsn):
    oauth_endpoint.delay_s = 0.3
    creds = tmp_path / "creds"
    before = oauth_file(oauth_endpoint, expires_in_s=10)  # inside the 60 s refresh margin
    path = write_credential(creds, before)
    settings = dict(CREDENTIALS_DIR=str(creds), CLAUDE_OAUTH_TOKEN_URL=oauth_endpoint.token_url,
                    DATABASE_URL=postgres_dsn)  # file lock and PostgreSQL advisory lock
    proxies = [start_proxy(**settings), start_proxy(**settings)]
    responses = _burst(proxies, 50)
    _check_refreshed_once(path, oauth_endpoint, upstream, responses, before)
    assert {r.headers["x-nexus-request-id"] for r in responses}  # both served
    served = {p.url: sum(1 for r in p.records() if r.get("outcome")) for p in proxies}
    assert all(count > 0 for count in served.values()), served


def assert_401(response, *fragments):
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert error["type"] == "authentication_error"
    for fragment in fragments:
        assert fragment in error["message"], error["message"]


def test_refresh_rejected_is_401_with_backoff(start_proxy, upstream, tmp_path, oauth_endpoint):
    creds = tmp_path / "creds"
    write_credential(creds, oauth_file(oauth_endpoint, expires_in_s=-1))
    oauth_endpoint.errors.append(TokenError())
    proxy = start_proxy(CREDENTIALS_DIR=str(creds), CLAUDE_OAUTH_TOKEN_URL=oauth_endpoint.token_url)
    first = post(proxy)
    assert_401(first, "OAuth refresh for team.example.com failed",
               "Refresh token not found or invalid", "credentials oauth-login team.example.com")
    again = post(proxy)  # inside the 5 s back-off: same answer, no new call
    assert_401(again, "Refresh token not found or invalid")
    assert len(oauth_endpoint.refresh_calls()) == 1
    assert upstream.received == []
    time.sleep(5.1)
    assert post(proxy).status_code == 200  # the endpoint accepts the token this time
    assert len(oauth_endpoint.refresh_calls()) == 2


def test_broken_or_missing_credentials_are_401s_that_say_what_to_do(start_proxy, upstream,
                                                                    tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "broken.example.com.credentials.json").write_text("{ not json")
    proxy = start_proxy(CREDENTIALS_DIR=str(creds))
    assert_401(post(proxy, domain="broken.example.com", **{"x-api-key": "sk-ant-api03-c"}),
               "broken.example.com.credentials.json is not valid JSON", "fix or remove it")
    assert_401(post(proxy, domain="nobody.example.com"),
               "nobody.example.com.credentials.json", "x-api-key")
    assert upstream.received == []


def test_client_auth(start_proxy, upstream, tmp_path):
    creds = tmp_path / "creds"
    write_credential(creds, {"type": "api_key", "api_key": "sk-ant-api03-team-key-9999",
                             "client_api_key": "cnp_live_the-right-key"})
    proxy = start_proxy(CREDENTIALS_DIR=str(creds), ENABLE_CLIENT_AUTH="true")
    assert_401(post(proxy), "client key")
    assert_401(post(proxy, **{"x-api-key": "cnp_live_the-wrong-key"}), "Invalid client key")
    assert_401(post(proxy, Authorization="Bearer cnp_live_the-right-kez"), "Invalid client key")
    assert upstream.received == []
    for headers in ({"x-api-key": "cnp_live_the-right-key"},
                    {"Authorization": "Bearer cnp_live_the-right-key"}):
        assert post(proxy, **headers).status_code == 200
    for received in upstream.received:
        assert not any("cnp_live" in value for _, value in received.headers)
        assert received.header("x-api-key") == "sk-ant-api03-team-key-9999"


def test_passthrough_forwards_keys_and_bearers_unchanged(proxy, upstream):
    api = post(proxy, domain="laptop.example.com", **{"x-api-key": "sk-ant-api03-mine-4321"})
    bearer = post(proxy, domain="laptop.example.com",
                  Authorization="Bearer sk-ant-oat01-my-login-8765")
    assert api.status_code == bearer.status_code == 200
    first, second = upstream.received
    assert first.header("x-api-key") == "sk-ant-api03-mine-4321"
    assert second.header("authorization") == "Bearer sk-ant-oat01-my-login-8765"
    assert second.header("anthropic-beta") == CLIENT_BETA  # nothing added in passthrough
    accounts = {proxy.exchange(r.headers["x-nexus-request-id"])["account_id"]
                for r in (api, bearer)}
    assert all(a.startswith("key_") for a in accounts) and len(accounts) == 2


def test_upstream_401_passes_through_in_passthrough(proxy, upstream):
    upstream.script(ErrorReply(401, message="invalid x-api-key"))
    response = post(proxy, domain="laptop.example.com", **{"x-api-key": "sk-ant-api03-bad"})
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "invalid x-api-key"


def test_refresh_failure_is_published_for_alerts(upstream, tmp_path, oauth_endpoint):
    from app.events import OAuthRefreshFailed
    from tests.support import InProcessProxy

    creds = tmp_path / "creds"
    write_credential(creds, oauth_file(oauth_endpoint, expires_in_s=-1))
    oauth_endpoint.errors.append(TokenError(status=401, error="invalid_client",
                                            description="Client revoked"))
    server = InProcessProxy(upstream.base_url, CREDENTIALS_DIR=str(creds),
                            CLAUDE_OAUTH_TOKEN_URL=oauth_endpoint.token_url)
    events = []
    server.app.extensions["nexus.events"].subscribe(OAuthRefreshFailed, events.append)
    try:
        assert_401(post(server), "Client revoked")
    finally:
        server.stop()
    assert events == [OAuthRefreshFailed(domain=DOMAIN, account_id="acc_max_1",
                                         reason="the token endpoint answered 401: Client revoked")]
