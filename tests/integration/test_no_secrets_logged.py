"""No secret reaches the logs at any level: DEBUG logs headers and bodies, masked.

One proxy per log format (text, json) with DEBUG on gets secrets in every position — request
headers (x-api-key, Bearer and Basic authorization, Cookie, a custom `X-Auth-Token`, a header
quoting a client key), the query string, the JSON body (a key pasted in the prompt, a top-level
`api_key`, `metadata.user_id`, a `password=` in the text), the upstream's answer (`set-cookie`,
a header echoing a Bearer token, keys in the streamed text, an error body), OAuth refreshes
that work (the file's and the new tokens) and one that fails (the endpoint quoting the refused
token) — then the whole log is searched for every one of them.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
import requests

from tests.fakes.oauth import TokenError
from tests.fakes.upstream import ErrorReply, Reply, text_block

SECRETS = {
    "team_key": "sk-ant-api03-team-secret-abcdefghij-WXYZ",
    "client_key": "cnp_live_client-secret-klmnopqrstu",
    "passthrough_key": "sk-ant-api03-passthrough-secret-0987",
    "body_key": "sk-ant-api03-pasted-into-a-prompt-5555",
    "cookie": "session=cookie-secret-value-77",
    "bearer": "plain-bearer-secret-token-1234",
    "oauth_bearer": "sk-ant-oat01-client-bearer-secret-4321",
    "basic_password": "basic-auth-password-secret-99",
    "custom_header": "custom-auth-token-secret-1357",
    "header_client_key": "cnp_live_quoted-in-a-header-2468",
    "query_api_key": "query-api-key-secret-1122",
    "query_token": "query-token-secret-3344",
    "json_api_key": "json-field-api-key-secret-5566",
    "user_id_key": "sk-ant-api03-in-metadata-user-id-7788",
    "prompt_password": "prompt-password-secret-9900",
    "upstream_cookie": "upstream-set-cookie-secret-1212",
    "echoed_bearer": "echoed-bearer-secret-token-3434",
    "answer_key": "sk-ant-api03-in-the-answer-text-5656",
    "answer_json_key": "answer-json-api-key-secret-7878",
    "error_key": "sk-ant-api03-in-an-upstream-error-9090",
    "error_token": "upstream-error-token-secret-2323",
    "error_cookie": "upstream-error-cookie-secret-4545",
    "old_access": "sk-ant-oat01-old-access-secret-3333",
    "failing_refresh": "plain-refresh-token-secret-6767",
}
BASIC = base64.b64encode(f"user:{SECRETS['basic_password']}".encode()).decode()


def _credentials(tmp_path, oauth_endpoint) -> tuple:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "team.example.com.credentials.json").write_text(json.dumps({
        "type": "api_key", "api_key": SECRETS["team_key"], "client_api_key": "unused"}))
    refresh = oauth_endpoint.issue_refresh_token()
    expired = int((time.time() - 5) * 1000)
    (creds / "max.example.com.credentials.json").write_text(json.dumps({
        "type": "oauth", "oauth": {"accessToken": SECRETS["old_access"],
                                   "refreshToken": refresh, "expiresAt": expired}}))
    # A refresh token of another shape than sk-ant-ort01-…, which the endpoint refuses.
    (creds / "gone.example.com.credentials.json").write_text(json.dumps({
        "type": "oauth", "oauth": {"accessToken": "sk-ant-oat01-gone-access-secret-8080",
                                   "refreshToken": SECRETS["failing_refresh"],
                                   "expiresAt": expired}}))
    return creds, refresh


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_debug_logs_hold_no_secret(start_proxy, upstream, tmp_path, oauth_endpoint, log_format):
    creds, refresh = _credentials(tmp_path, oauth_endpoint)
    proxy = start_proxy(CREDENTIALS_DIR=str(creds), DEBUG="true", LOG_LEVEL="debug",
                        LOG_FORMAT=log_format, CLAUDE_OAUTH_TOKEN_URL=oauth_endpoint.token_url)
    prompt = {
        "model": "claude-opus-4-8", "max_tokens": 16, "stream": True,
        "api_key": SECRETS["json_api_key"],
        "metadata": {"user_id": SECRETS["user_id_key"]},
        "messages": [{"role": "user", "content": f"my key is {SECRETS['body_key']}, and "
                                                 f"password={SECRETS['prompt_password']}"}]}
    answer = Reply(
        content=[text_block(f"echo {SECRETS['answer_key']} and config "
                            f'{{"api_key": "{SECRETS["answer_json_key"]}"}}')],
        headers=[("set-cookie", f"sid={SECRETS['upstream_cookie']}; Path=/; HttpOnly"),
                 ("x-debug-echo", f"Bearer {SECRETS['echoed_bearer']}")])
    calls = [
        ("team.example.com", {"x-api-key": SECRETS["passthrough_key"],
                              "Cookie": SECRETS["cookie"]}),
        ("max.example.com", {"Authorization": f"Bearer {SECRETS['bearer']}"}),
        ("laptop.example.com", {"x-api-key": SECRETS["passthrough_key"],
                                "X-Auth-Token": SECRETS["custom_header"],
                                "X-Note": f"my key is {SECRETS['header_client_key']}"}),
        ("laptop.example.com", {"Authorization": f"Bearer {SECRETS['bearer']}"}),
        ("laptop.example.com", {"Authorization": f"Bearer {SECRETS['oauth_bearer']}"}),
        ("laptop.example.com", {"x-api-key": SECRETS["client_key"]}),
    ]
    query = f"?api_key={SECRETS['query_api_key']}&token={SECRETS['query_token']}&beta=true"
    for host, headers in calls:
        upstream.script(answer)
        response = requests.post(proxy.url + "/v1/messages" + query, json=prompt, timeout=30,
                                 headers={"Host": host, **headers})
        assert response.status_code == 200, response.text
    basic = requests.post(proxy.url + "/v1/messages" + query, json=prompt, timeout=30,
                          headers={"Host": "laptop.example.com",
                                   "Authorization": f"Basic {BASIC}"})
    assert basic.status_code == 401  # not a credential the proxy passes on: refused, logged
    upstream.script(ErrorReply(
        400, "invalid_request_error",
        f"key {SECRETS['error_key']} refused; token={SECRETS['error_token']}",
        headers=[("set-cookie", f"err={SECRETS['error_cookie']}")]))
    refused = requests.post(proxy.url + "/v1/messages", json=prompt, timeout=30,
                            headers={"Host": "laptop.example.com",
                                     "x-api-key": SECRETS["passthrough_key"]})
    assert refused.status_code == 400
    oauth_endpoint.errors.append(TokenError(
        400, "invalid_grant", f"Refresh token {SECRETS['failing_refresh']} not found"))
    failed = requests.post(proxy.url + "/v1/messages", json=prompt, timeout=30,
                           headers={"Host": "gone.example.com"})
    assert failed.status_code >= 400
    proxy.stop()

    log = proxy.log_text()
    assert "request headers" in log and "response headers" in log  # DEBUG did log them
    assert "OAuth refresh for gone.example.com failed" in log
    issued = [c.answer["access_token"] for c in oauth_endpoint.refresh_calls() if c.answer.get(
        "access_token")] + [c.answer["refresh_token"] for c in oauth_endpoint.refresh_calls()
                            if c.answer.get("refresh_token")]
    assert len(issued) == 2
    for secret in [*SECRETS.values(), BASIC, refresh, *issued]:
        # Masks keep at most the last four characters: nothing before them may show.
        assert secret[:-4] not in log, f"secret leaked into the log: {secret[:12]}…"
    # The masked forms prove that bodies, headers and the query were logged.
    for shown in ("sk-ant-…5555", "sk-ant-…7788", "sk-ant-…5656", "api_key=[redacted]",
                  "token=[redacted]", "password=[redacted]", "…1357", "cnp_live_…2468"):
        assert shown in log, shown
    if log_format == "json":
        records = [json.loads(line) for line in proxy.lines if line.startswith("{")]
        assert any(r.get("msg", "").startswith("request headers") for r in records)
        assert all(r.get("request_id") for r in records if r["logger"] == "nexus.exchange")
