import json
import os
import stat
import time

import pytest

from app.auth.credentials import CredentialError, CredentialStore, check_domain_name
from app.auth.status import credential_states

NOW = time.time()


def write(store, domain, data):
    store.directory.mkdir(parents=True, exist_ok=True)
    path = store.directory / f"{domain}.credentials.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.fixture
def store(tmp_path):
    return CredentialStore(tmp_path / "credentials")


def test_api_key_file(store):
    write(store, "team.example.com", {"type": "api_key", "accountId": "acc_team_1",
                                      "api_key": "sk-ant-api03-aaaa", "client_api_key": "cnp_1",
                                      "slack": {"webhook_url": "http://h", "enabled": True}})
    credential = store.get("team.example.com")
    assert credential.type == "api_key" and credential.api_key == "sk-ant-api03-aaaa"
    assert credential.account_id == "acc_team_1" and credential.client_api_key == "cnp_1"
    assert credential.slack == {"webhook_url": "http://h", "enabled": True}


def test_oauth_file_and_refresh_margin(store):
    write(store, "max.example.com", {"type": "oauth", "oauth": {
        "accessToken": "sk-ant-oat01-x", "refreshToken": "sk-ant-ort01-y",
        "expiresAt": int((NOW + 61) * 1000), "scopes": ["user:inference"], "isMax": True}})
    credential = store.get("max.example.com")
    assert credential.access_token == "sk-ant-oat01-x"
    assert not credential.needs_refresh(NOW)
    assert credential.needs_refresh(NOW + 2)


def test_missing_file_is_none_and_changes_are_seen(store):
    assert store.get("nobody.example.com") is None
    write(store, "team.example.com", {"api_key": "sk-ant-api03-first"})
    assert store.get("team.example.com").api_key == "sk-ant-api03-first"
    write(store, "team.example.com", {"api_key": "sk-ant-api03-second-key"})
    assert store.get("team.example.com").api_key == "sk-ant-api03-second-key"


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"type": "password"}', 'use "api_key" or "oauth"'),
    ('{"type": "api_key"}', 'has no "api_key"'),
    ('{"type": "oauth", "oauth": {"refreshToken": "r"}}', "credentials oauth-login"),
])
def test_unusable_files_say_what_to_do(store, content, fragment):
    path = write(store, "broken.example.com", content)
    with pytest.raises(CredentialError) as info:
        store.get("broken.example.com")
    assert str(path) in info.value.message
    assert fragment in info.value.message
    assert info.value.status == 401


@pytest.mark.parametrize("domain", ["", "../etc", "a/b", "a\\b", ".hidden", "x\x00y",
                                    "a..b", "x" * 300])
def test_names_that_could_escape_are_refused(domain):
    with pytest.raises(CredentialError):
        check_domain_name(domain)


def test_ipv6_and_port_domains_are_fine(store):
    write(store, "[::1]:3000", {"api_key": "sk-ant-api03-v6"})
    assert store.get("[::1]:3000").api_key == "sk-ant-api03-v6"


def test_update_is_atomic_private_and_keeps_other_fields(store):
    write(store, "team.example.com", {"api_key": "sk-ant-api03-k", "custom": {"keep": 1}})
    updated = store.update("team.example.com", lambda d: {**d, "client_api_key": "cnp_new"})
    assert updated.client_api_key == "cnp_new"
    data = json.loads(updated.path.read_text())
    assert data == {"api_key": "sk-ant-api03-k", "custom": {"keep": 1},
                    "client_api_key": "cnp_new"}
    assert stat.S_IMODE(os.stat(updated.path).st_mode) == 0o600
    leftovers = [p.name for p in store.directory.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_status_lines(store):
    write(store, "a.example.com", {"type": "api_key", "api_key": "sk-ant-api03-abcdefgh1234"})
    write(store, "b.example.com", {"type": "oauth", "oauth": {
        "accessToken": "t", "refreshToken": "r", "expiresAt": int((NOW - 10) * 1000)}})
    write(store, "c.example.com", {"type": "oauth", "oauth": {
        "accessToken": "t", "refreshToken": "r", "expiresAt": int((NOW + 600) * 1000)}})
    write(store, "d.example.com", {"type": "oauth", "oauth": {
        "accessToken": "t", "expiresAt": int((NOW + 86400) * 1000)}})
    write(store, "e.example.com", "{oops")
    write(store, "f.example.com", {"type": "oauth", "oauth": {
        "accessToken": "t", "refreshToken": "r", "expiresAt": int((NOW + 86400) * 1000)}})
    states = {s.domain: s for s in credential_states(store, now=NOW)}
    assert {d: s.state for d, s in states.items()} == {
        "a.example.com": "valid", "b.example.com": "expired", "c.example.com": "expiring",
        "d.example.com": "missing refresh token", "e.example.com": "invalid",
        "f.example.com": "valid"}
    assert "sk-ant-…1234" in states["a.example.com"].detail
    assert "abcdefgh" not in states["a.example.com"].line()
