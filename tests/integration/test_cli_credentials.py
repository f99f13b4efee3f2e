"""`flask --app wsgi credentials …` and `keys generate`, run as a user would."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from urllib.parse import parse_qs, urlsplit

from tests.fakes.oauth import TokenError
from tests.support import REPO

DOMAIN = "team.example.com"


def flask_command(tmp_path, *args, oauth=None, stdin=None):
    env = {**os.environ, "CREDENTIALS_DIR": str(tmp_path / "creds")}
    if oauth is not None:
        env["CLAUDE_OAUTH_TOKEN_URL"] = oauth.token_url
    return subprocess.run([sys.executable, "-m", "flask", "--app", str(REPO / "wsgi.py"), *args],
                          cwd=tmp_path, env=env, input=stdin, capture_output=True, text=True,
                          timeout=60)


def credential(tmp_path, domain=DOMAIN):
    path = tmp_path / "creds" / f"{domain}.credentials.json"
    return path, json.loads(path.read_text())


def test_keys_generate(tmp_path):
    result = flask_command(tmp_path, "keys", "generate", "Team.Example.com:443")
    assert result.returncode == 0, result.stderr
    key = result.stdout.strip().splitlines()[-1]
    assert key.startswith("cnp_live_") and len(key) > 40
    path, data = credential(tmp_path)
    assert data == {"client_api_key": key}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = flask_command(tmp_path, "keys", "generate", DOMAIN)
    assert again.returncode == 1
    assert again.stderr.strip().splitlines()[-1].startswith("Error: ") and "--force" in \
        again.stderr
    forced = flask_command(tmp_path, "keys", "generate", DOMAIN, "--force")
    assert forced.returncode == 0 and credential(tmp_path)[1]["client_api_key"] != key


def test_bad_arguments_are_one_clear_line(tmp_path):
    for args in (["keys", "generate", "../../etc/passwd"], ["credentials", "oauth-refresh",
                                                             "a/b"]):
        result = flask_command(tmp_path, *args)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("Error: Invalid domain")
    missing = flask_command(tmp_path, "keys", "generate")
    assert missing.returncode == 2 and "Missing argument 'DOMAIN'" in missing.stderr


def test_status(tmp_path):
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / f"{DOMAIN}.credentials.json").write_text(json.dumps(
        {"type": "api_key", "accountId": "acc_1", "api_key": "sk-ant-api03-abcdefgh6789"}))
    result = flask_command(tmp_path, "credentials", "status")
    assert result.returncode == 0, result.stderr
    assert f"{DOMAIN}: valid (api_key sk-ant-…6789, account acc_1)" in result.stdout
    assert "abcdefgh" not in result.stdout + result.stderr
    (tmp_path / "creds" / "bad.example.com.credentials.json").write_text("{")
    result = flask_command(tmp_path, "credentials", "status")
    assert result.returncode == 1
    assert "bad.example.com: invalid" in result.stdout


def test_oauth_login_then_refresh(tmp_path, oauth_endpoint):
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / f"{DOMAIN}.credentials.json").write_text(json.dumps(
        {"client_api_key": "cnp_live_kept", "slack": {"channel": "#c"}}))
    env = {**os.environ, "CREDENTIALS_DIR": str(tmp_path / "creds"),
           "CLAUDE_OAUTH_TOKEN_URL": oauth_endpoint.token_url}
    login = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", str(REPO / "wsgi.py"), "credentials",
         "oauth-login", DOMAIN], cwd=tmp_path, env=env, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = next(line for line in login.stdout if line.startswith("https://"))
    query = parse_qs(urlsplit(url.strip()).query)
    assert urlsplit(url).netloc == "claude.ai"
    assert query["code_challenge_method"] == ["S256"]
    assert "user:inference" in query["scope"][0]
    oauth_endpoint.expect_code("the-pasted-code", query["code_challenge"][0])
    out, err = login.communicate(f"the-pasted-code#{query['state'][0]}\n", timeout=30)
    assert login.returncode == 0, err
    assert "Saved OAuth credentials" in out
    _, data = credential(tmp_path)
    issued = oauth_endpoint.calls[-1].answer
    assert data["type"] == "oauth" and data["accountId"] == "5b8e1c6a-acct"
    assert data["oauth"]["accessToken"] == issued["access_token"]
    assert data["client_api_key"] == "cnp_live_kept" and data["slack"] == {"channel": "#c"}
    assert issued["access_token"] not in out + err

    refreshed = flask_command(tmp_path, "credentials", "oauth-refresh", DOMAIN,
                              oauth=oauth_endpoint)
    assert refreshed.returncode == 0, refreshed.stderr
    _, after = credential(tmp_path)
    assert after["oauth"]["accessToken"] == oauth_endpoint.calls[-1].answer["access_token"]
    assert after["oauth"]["accessToken"] != data["oauth"]["accessToken"]
    assert after["oauth"]["expiresAt"] > time.time() * 1000

    oauth_endpoint.errors.append(TokenError())
    failed = flask_command(tmp_path, "credentials", "oauth-refresh", DOMAIN, oauth=oauth_endpoint)
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "Refresh token not found or invalid" in failed.stderr.strip().splitlines()[-1]
