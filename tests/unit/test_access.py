import json
from pathlib import Path

import pytest

from app.auth.access import (
    DOMAIN_CREDENTIAL,
    PASSTHROUGH,
    Access,
    account_from_body,
    key_account,
    presented_key,
)
from app.auth.credentials import CredentialStore
from app.errors import AuthenticationFailed

TRAFFIC = Path(__file__).resolve().parents[1] / "data" / "traffic"


class NoRefresh:
    def fresh(self, credential):
        return credential


def make_access(tmp_path, files, client_auth=False):
    store = CredentialStore(tmp_path)
    for domain, data in files.items():
        (tmp_path / f"{domain}.credentials.json").write_text(json.dumps(data))
    return Access(store, NoRefresh(), client_auth)


def test_presented_key_forms():
    assert presented_key([("x-api-key", " sk-ant-api03-a ")]) == "sk-ant-api03-a"
    assert presented_key([("Authorization", "Bearer sk-ant-oat01-b")]) == "sk-ant-oat01-b"
    assert presented_key([("authorization", "bearer tok")]) == "tok"
    assert presented_key([("Authorization", "Basic abc")]) is None
    assert presented_key([]) is None


def test_account_from_claude_code_metadata():
    body = json.loads((TRAFFIC / "print_main_request.json").read_text())["body"]
    assert account_from_body(body) is None  # API-key login: account_uuid is empty
    user_id = json.loads(body["metadata"]["user_id"])
    user_id["account_uuid"] = "8a7c5e2b-account"
    body["metadata"]["user_id"] = json.dumps(user_id)
    assert account_from_body(body) == "8a7c5e2b-account"
    for odd in (None, {}, {"metadata": "x"}, {"metadata": {"user_id": "user_abc"}},
                {"metadata": {"user_id": "{bad json"}}):
        assert account_from_body(odd) is None


def test_key_account_is_stable_and_reveals_nothing():
    assert key_account("sk-ant-api03-x") == key_account("sk-ant-api03-x")
    assert key_account("sk-ant-api03-x") != key_account("sk-ant-api03-y")
    assert key_account("sk-ant-api03-x").startswith("key_") and len(key_account("k")) == 12


def test_passthrough_needs_a_client_credential(tmp_path):
    access = make_access(tmp_path, {})
    with pytest.raises(AuthenticationFailed) as info:
        access.authorise("team.example.com", [], {}, access.admit("team.example.com", []))
    assert "team.example.com.credentials.json" in info.value.message
    decision = access.authorise("team.example.com", [("x-api-key", "sk-ant-api03-mine")], {},
                                None)
    assert decision.mode == PASSTHROUGH
    assert decision.account_id == key_account("sk-ant-api03-mine")
    assert not decision.drop_client_credentials and decision.credential_headers == []


def test_domain_api_key_replaces_the_client_key(tmp_path):
    access = make_access(tmp_path, {"team.example.com": {
        "type": "api_key", "accountId": "acc_team_1", "api_key": "sk-ant-api03-team"}})
    credential = access.admit("team.example.com", [])
    decision = access.authorise("team.example.com", [("x-api-key", "sk-ant-api03-mine")], {},
                                credential)
    assert decision.mode == DOMAIN_CREDENTIAL and decision.account_id == "acc_team_1"
    assert decision.drop_client_credentials
    assert decision.credential_headers == [("x-api-key", "sk-ant-api03-team")]


def test_domain_oauth_sends_bearer_and_beta(tmp_path):
    access = make_access(tmp_path, {"max.example.com": {
        "type": "oauth", "accountId": "acc_max", "oauth": {"accessToken": "sk-ant-oat01-t"}}})
    decision = access.authorise("max.example.com", [], {}, access.admit("max.example.com", []))
    assert decision.credential_headers == [("Authorization", "Bearer sk-ant-oat01-t")]
    assert decision.add_betas == ["oauth-2025-04-20"]


def test_client_auth(tmp_path):
    access = make_access(tmp_path, {"team.example.com": {
        "api_key": "sk-ant-api03-team", "client_api_key": "cnp_live_right"},
        "bare.example.com": {"api_key": "sk-ant-api03-bare"},
        "keyonly.example.com": {"client_api_key": "cnp_live_only"}}, client_auth=True)
    for headers in ([], [("x-api-key", "cnp_live_wrong")], [("x-api-key", "cnp_live_righ")]):
        with pytest.raises(AuthenticationFailed):
            access.admit("team.example.com", headers)
    for headers in ([("x-api-key", "cnp_live_right")],
                    [("Authorization", "Bearer cnp_live_right")]):
        assert access.admit("team.example.com", headers).client_api_key == "cnp_live_right"
    with pytest.raises(AuthenticationFailed, match="keys generate bare.example.com"):
        access.admit("bare.example.com", [("x-api-key", "anything")])
    with pytest.raises(AuthenticationFailed, match="no Claude credential"):
        credential = access.admit("keyonly.example.com", [("x-api-key", "cnp_live_only")])
        access.authorise("keyonly.example.com", [("x-api-key", "cnp_live_only")], {}, credential)
