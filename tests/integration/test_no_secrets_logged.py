"""No secret reaches the logs at any level: DEBUG logs headers and bodies, masked."""

from __future__ import annotations

import json
import time

import requests

from tests.fakes.upstream import Reply, text_block

SECRETS = {
    "team_key": "sk-ant-api03-team-secret-abcdefghij-WXYZ",
    "client_key": "cnp_live_client-secret-klmnopqrstu",
    "passthrough_key": "sk-ant-api03-passthrough-secret-0987",
    "body_key": "sk-ant-api03-pasted-into-a-prompt-5555",
    "cookie": "session=cookie-secret-value-77",
    "bearer": "plain-bearer-secret-token-1234",
}


def test_debug_logs_hold_no_secret(start_proxy, upstream, tmp_path, oauth_endpoint):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "team.example.com.credentials.json").write_text(json.dumps({
        "type": "api_key", "api_key": SECRETS["team_key"], "client_api_key": "unused"}))
    refresh = oauth_endpoint.issue_refresh_token()
    (creds / "max.example.com.credentials.json").write_text(json.dumps({
        "type": "oauth", "oauth": {"accessToken": "sk-ant-oat01-old-access-secret-3333",
                                   "refreshToken": refresh,
                                   "expiresAt": int((time.time() - 5) * 1000)}}))
    proxy = start_proxy(CREDENTIALS_DIR=str(creds), DEBUG="true", LOG_LEVEL="debug",
                        LOG_FORMAT="text", CLAUDE_OAUTH_TOKEN_URL=oauth_endpoint.token_url)
    prompt = {"model": "claude-opus-4-8", "max_tokens": 16, "stream": True, "messages": [
        {"role": "user", "content": f"my key is {SECRETS['body_key']}"}]}
    upstream.script(Reply(content=[text_block(f"echo {SECRETS['body_key']}")]))
    calls = [
        ("team.example.com", {"x-api-key": SECRETS["passthrough_key"],
                              "Cookie": SECRETS["cookie"]}),
        ("max.example.com", {"Authorization": f"Bearer {SECRETS['bearer']}"}),
        ("laptop.example.com", {"x-api-key": SECRETS["passthrough_key"]}),
        ("laptop.example.com", {"Authorization": f"Bearer {SECRETS['bearer']}"}),
        ("laptop.example.com", {"x-api-key": SECRETS["client_key"]}),
    ]
    for host, headers in calls:
        response = requests.post(proxy.url + "/v1/messages", json=prompt, timeout=30,
                                 headers={"Host": host, **headers})
        assert response.status_code == 200, response.text
    proxy.stop()
    log = proxy.log_text()
    assert "request headers" in log and "response headers" in log  # DEBUG did log them
    issued = [c.answer["access_token"] for c in oauth_endpoint.refresh_calls()] + [
        c.answer["refresh_token"] for c in oauth_endpoint.refresh_calls()]
    assert len(issued) == 2
    for secret in [*SECRETS.values(), refresh, "sk-ant-oat01-old-access-secret-3333", *issued]:
        assert secret not in log, f"secret leaked into the log: {secret[:12]}…"
    assert "sk-ant-…5555" in log  # the prompt's key, masked, proves bodies were logged
