"""mask_text masks every secret form wherever it appears, and nothing else (app/redact.py)."""

from __future__ import annotations

import base64
import json
import logging
import string
import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from app.logs import JsonFormatter, TextFormatter
from app.redact import (
    _ANTHROPIC_SECRET,
    _CLIENT_KEY,
    _mask_client_key,
    is_secret_name,
    mask_header_value,
    mask_secret,
    mask_text,
    mask_texts,
    redact_headers,
)

SECRET_KEYS = ["api_key", "apiKey", "client_api_key", "access_token", "accessToken",
               "refresh_token", "refreshToken", "id_token", "password", "secret",
               "client_secret", "token", "code_verifier", "authorization", "x-api-key",
               "cookie", "session", "Authorization", "X-Api-Key", "Cookie", "set-cookie",
               "x-auth-token", "X-Dashboard-Key", "ANTHROPIC_API_KEY", "clientSecret"]
HEADER_KEYS = ["authorization", "x-api-key", "cookie", "Authorization", "X-Api-Key", "Cookie",
               "set-cookie", "x-auth-token", "X-Dashboard-Key", "Proxy-Authorization"]


@pytest.mark.parametrize("text, masked", [
    # Anthropic keys and tokens keep `sk-ant-…` and their last four
    ("key sk-ant-api03-AbCdEfGhIjKlMnOp1234 here", "key sk-ant-…1234 here"),
    ('{"t":"sk-ant-oat01-zzzzzzzzzzzzWXYZ"}', '{"t":"sk-ant-…WXYZ"}'),
    ("sk-ant-ort01-short", "sk-ant-…hort"),
    ("sk-ant-abc", "sk-ant-…"),
    # our client keys
    ("client cnp_live_AbCdEfGhIjKlMnOpQrStUv.", "client cnp_live_…StUv."),
    ("cnp_live_abc", "cnp_live_…"),
    # Bearer / Basic anywhere
    ("sent Bearer plain-bearer-secret-token-1234 upstream", "sent Bearer [redacted] upstream"),
    ("jwt bearer eyJhbGciOi.eyJzdWIi.sig123.", "jwt bearer [redacted]."),
    ("Bearer sk-ant-oat01-tokentoken5555", "Bearer sk-ant-…5555"),
    ("Basic dXNlcjpodW50ZXIy", "Basic [redacted]"),
    # header-like text: a token (after a scheme), a cookie to the end of the line
    ("x-api-key: abcdef123456 and more\nnext", "x-api-key: [redacted] and more\nnext"),
    ("x-goog-api-key:abc,next", "x-goog-api-key:[redacted],next"),
    ("Authorization: Bearer abc", "Authorization: Bearer [redacted]"),
    ("authorization:Basic abc", "authorization:Basic [redacted]"),
    ("Proxy-Authorization: Negotiate abc", "Proxy-Authorization: [redacted]"),
    ("Cookie: session=cookie-secret; other=1", "Cookie: [redacted]"),
    ("set-cookie: sid=abc; Path=/; HttpOnly", "set-cookie: [redacted]"),
    ("X-Dashboard-Key: dash-secret", "X-Dashboard-Key: [redacted]"),
    # Python reprs of header lists and dicts
    ("[('x-api-key', 'abc-secret'), ('content-type', 'application/json')]",
     "[('x-api-key', '[redacted]'), ('content-type', 'application/json')]"),
    ("{'Cookie': 'a=b', 'Accept': '*/*'}", "{'Cookie': '[redacted]', 'Accept': '*/*'}"),
    ('[["Authorization", "Bearer xyz"]]', '[["Authorization", "Bearer [redacted]"]]'),
    ("('X-Auth-Token', \"it's-secret\")", "('X-Auth-Token', \"[redacted]\")"),
    # JSON, plain and escaped inside a JSON string
    ('{"api_key": "top-secret", "n": 1}', '{"api_key": "[redacted]", "n": 1}'),
    ('{"refreshToken":"rt-abc","accessToken" : "at-abc"}',
     '{"refreshToken":"[redacted]","accessToken" : "[redacted]"}'),
    ('{"oauth": {"refreshToken": "sk-ant-ort01-abcdefghijWXYZ"}}',
     '{"oauth": {"refreshToken": "sk-ant-…WXYZ"}}'),
    ('"msg": "body {\\"api_key\\": \\"esc-secret\\"}"',
     '"msg": "body {\\"api_key\\": \\"[redacted]\\"}"'),
    (r'{\\\"password\\\": \\\"double\\\"}', r'{\\\"password\\\": \\\"[redacted]\\\"}'),
    ('cut {"client_secret": "abcdefgh', 'cut {"client_secret": "[redacted]'),
    # query strings, form bodies, k=v
    ("/v1/messages?api_key=qs-1&token=qs-2&beta=true",
     "/v1/messages?api_key=[redacted]&token=[redacted]&beta=true"),
    ("grant_type=refresh_token&refresh_token=rt-secret&client_id=x",
     "grant_type=refresh_token&refresh_token=[redacted]&client_id=x"),
    ("code=abc&code_verifier=ver-secret", "code=abc&code_verifier=[redacted]"),
    ("DASHBOARD_API_KEY=dash-secret", "DASHBOARD_API_KEY=[redacted]"),
    ("password=hunter2 session=s3ss", "password=[redacted] session=[redacted]"),
])
def test_masks_every_form(text, masked):
    assert mask_text(text) == masked
    assert mask_text(masked) == masked


@pytest.mark.parametrize("text", [
    "POST /v1/messages -> 200 in 12 ms model=claude-opus-4-8 tokens=12/30",
    '{"max_tokens": 16, "usage": {"input_tokens": 5, "output_tokens": 7, '
    '"cache_read_input_tokens": 0}}',
    '{"input_tokens": "12"}',
    "12 output tokens in 5 h reached 80% of 1000",
    "session_id=abc123 conversation_id=def",
    "[('x-claude-code-session-id', 'c0ffee-1234'), ('anthropic-version', '2023-06-01')]",
    '{"metadata": {"user_id": "user_abc_account_def_session_0123"}}',
    "Bearer tokens are fine, the bearer of news, Bearer authentication.",
    "Basic information, basic usage",
    "monkey=1 keys=3 token_count=5 tokenizer=bpe cache_key=abc",
    "def f(token: str, password: str): session = requests.Session()",
    "headers = {'Authorization': bearer_for(token)} if token else {}",
    '{"input_schema": {"required": ["token", "channel"], "properties": {"token": {}}}}',
    "Cookie: [redacted]",
    "the token endpoint answered 400: Refresh token not found or invalid",
    "send your key as x-api-key (or an OAuth token as Authorization: Bearer), or create one",
    "credentials: team.example.com: valid (api_key sk-ant-…6789, account acc_1)",
    "[redacted] …abcd sk-ant-…WXYZ cnp_live_…WXYZ",
])
def test_does_not_over_mask(text):
    assert mask_text(text) == text


def test_already_masked_values_are_kept():
    stored = "[('x-api-key', 'sk-ant-…9876'), ('Authorization', 'Bearer …1234'), " \
             "('Cookie', '[redacted]'), ('x-api-key', '…abcd')]"
    assert mask_text(stored) == stored


def test_json_log_lines_stay_json():
    line = json.dumps({"msg": 'request headers [("cookie", "a=b")] body {"token": "t", "n": 1}',
                       "api_key": "plain", "nested": {"password": "p", "session": None},
                       "path": "/v1/messages?api_key=q&x=1", "note": "x-api-key: abc"})
    masked = json.loads(mask_text(line))
    assert masked["api_key"] == "[redacted]" and masked["nested"]["password"] == "[redacted]"
    assert masked["nested"]["session"] is None
    assert masked["path"] == "/v1/messages?api_key=[redacted]&x=1"
    assert masked["note"] == "x-api-key: [redacted]"
    assert '"token": "[redacted]"' in masked["msg"] and '"cookie", "[redacted]"' in masked["msg"]


def test_secret_names_are_whole_names():
    for name in SECRET_KEYS:
        assert is_secret_name(name), name
    for name in ["tokens", "input_tokens", "max_tokens", "session_id", "key", "keys", "monkey",
                 "x-claude-code-session-id", "token_count", "secretary", "passwords_count"]:
        assert not is_secret_name(name), name


def test_header_redaction():
    headers = [("x-api-key", "sk-ant-api03-secretsecret9876"),
               ("Authorization", "Bearer sk-ant-oat01-tokentoken5555"),
               ("Cookie", "session=abc"), ("anthropic-version", "2023-06-01"),
               ("X-Auth-Token", "custom-secret-token-4321"),
               ("x-claude-code-session-id", "a-session-id-kept"),
               ("x-note", "my key is cnp_live_AbCdEfGhIjKlMnOp")]
    assert redact_headers(headers) == [
        ("x-api-key", "sk-ant-…9876"), ("Authorization", "Bearer sk-ant-…5555"),
        ("Cookie", "[redacted]"), ("anthropic-version", "2023-06-01"),
        ("X-Auth-Token", "…4321"), ("x-claude-code-session-id", "a-session-id-kept"),
        ("x-note", "my key is cnp_live_…MnOp")]
    assert mask_header_value("x-api-key", "short") == "[redacted]"


@pytest.mark.parametrize("unit", [
    '"' + "A" * 40 + 'Token"x ', "A" * 40 + "Token= ", "aB" * 30 + "Token=", "x-" * 50 + "token:",
    "token= ", "'token': '", "x-api-key: ", "Authorization: Bearer ", "Bearer a.b ", "Basic QUJD ",
    "sessionAuthorizationapiKey=a1&,", "\\" * 20 + '"api_key\\": ', "( 'cookie', ",
])
def test_adversarial_text_masks_in_linear_time(unit):
    text = (unit * (65536 // len(unit) + 1))[:65536]
    started = time.perf_counter()
    masked = mask_text(text)
    assert time.perf_counter() - started < 1.0  # backtracking patterns take hours here
    assert mask_text(masked) == masked


# ---------------------------------------------------------------- property: nothing leaks

def _basic(secret: str) -> str:
    return "Basic " + base64.b64encode(f"user:{secret}".encode()).decode()


FORMS = {
    "anthropic key": lambda s, k: f"sk-ant-api03-{s}",
    "refresh token": lambda s, k: f"sk-ant-ort01-{s}",
    "client key": lambda s, k: f"cnp_live_{s}",
    "bearer": lambda s, k: f"Bearer {s}",
    "authorization header": lambda s, k: f"Authorization: Bearer {s}",
    "api key header": lambda s, k: f"x-api-key: {s}",
    "cookie header": lambda s, k: f"Cookie: theme=dark; session={s}",
    "set-cookie header": lambda s, k: f"set-cookie: sid={s}; Path=/",
    "header tuple": lambda s, k: f"('{k}', '{s}')",
    "header pair list": lambda s, k: f'["{k if k in HEADER_KEYS else "x-api-key"}", "{s}"]',
    "python dict": lambda s, k: f"{{'{k}': 'a={s}'}}",
    "json": lambda s, k: json.dumps({"model": "m", k: s}),
    "escaped json": lambda s, k: json.dumps(json.dumps({k: s})),
    "twice escaped json": lambda s, k: json.dumps(json.dumps(json.dumps({"x": {k: s}}))),
    "query string": lambda s, k: f"/v1/messages?beta=true&{k}={s}&x=1",
    "basic": lambda s, k: _basic(s),
}
# Text made of the pieces the patterns look for, to meet their corner cases more often.
tricky = st.lists(st.sampled_from([
    "Bearer", "basic", "Authorization", "x-api-key", "Cookie", "token", "api_key", "session",
    "sk-ant-", "cnp_live_", "…", "[redacted]", " ", "\t", "\n", "'", '"', "\\", ":", "=", ",",
    ";", "&", "(", "[", "{", "}", "a", "Z", "1", "-", "_", ".", "/", "+",
]), max_size=12).map("".join)
surroundings = st.one_of(st.text(), tricky)

secrets_ = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=12,
                   max_size=40).map(lambda body: "Zq9" + body)


@settings(max_examples=400, deadline=None)
@given(before=surroundings, after=surroundings, secret=secrets_,
       form=st.sampled_from(sorted(FORMS)), key=st.sampled_from(SECRET_KEYS))
def test_no_secret_survives_in_any_surroundings(before, after, secret, form, key):
    assume("Zq9" not in before + after)
    text = f"{before} {FORMS[form](secret, key)} {after}"
    masked = mask_text(text)
    exposed = base64.b64encode(f"user:{secret}".encode()).decode() if form == "basic" \
        else secret
    assert exposed[:-4] not in masked
    assert mask_text(masked) == masked


@settings(max_examples=300, deadline=None)
@given(surroundings)
def test_masking_is_idempotent_on_any_text(text):
    once = mask_text(text)
    assert mask_text(once) == once


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=string.ascii_letters + string.digits + " _-=:&?'\"\\{}()[],;\n",
               max_size=80))
def test_masking_is_idempotent_on_secret_like_text(text):
    # Text made of the very characters the patterns look for, plus names they know.
    for probe in (text, f"token={text}", f'"api_key": "{text}', f"Cookie: {text}",
                  f"Bearer {text}", f"('x-api-key', {text}"):
        once = mask_text(probe)
        assert mask_text(once) == once, probe


# ---------------------------------------------------------------- the log formatters

def _record(msg: str, *args, **extra) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "nexus.exchange", "levelno": logging.DEBUG,
                                    "levelname": "DEBUG", "msg": msg, "args": args, **extra})
    record.request_id = "abc123"
    return record


def test_both_formatters_mask_messages_and_extra_fields():
    body = json.dumps({"api_key": "body-secret-1", "messages": [
        {"role": "user", "content": "Authorization: Bearer prompt-secret-2"}]})
    record = _record("request headers %s body %s", [("x-api-key", "…abcd"),
                                                   ("X-Auth-Token", "header-secret-3")], body,
                     path="/v1/messages?token=query-secret-4", extra_body={"password": "p-5"})
    text = TextFormatter().format(record)
    line = JsonFormatter().format(record)
    entry = json.loads(line)  # masking kept the line JSON
    for out in (text, line):
        for secret in ("body-secret-1", "prompt-secret-2", "header-secret-3", "query-secret-4",
                       "p-5"):
            assert secret not in out
    assert entry["path"] == "/v1/messages?token=[redacted]"
    assert entry["extra_body"] == {"password": "[redacted]"}
    assert '"api_key": "[redacted]"' in entry["msg"] and entry["request_id"] == "abc123"


# ---------------------------------------------------------------- what the fast paths skip
# mask_text finds the names' endings in the UTF-8 bytes of the text and maps the hits back to
# characters; text with no quote, `=`, `:`, backslash, space or tab only has its keys masked.

NOT_ASCII = "é…—🤖İ\u212a\u00df"  # 2-, 3- and 4-byte UTF-8; letters lowering to ASCII


@pytest.mark.parametrize("text, masked", [
    ("🤖 … {\"api_key\": \"v-1\"} é password=hunter2 ü",
     "🤖 … {\"api_key\": \"[redacted]\"} é password=[redacted] ü"),
    ("—" * 50 + "x-api-key: abc " + "🤖" * 3 + " token=t0k",
     "—" * 50 + "x-api-key: [redacted] " + "🤖" * 3 + " token=[redacted]"),
    ("\ud800 lone surrogate, then secret=s3cr3t", "\ud800 lone surrogate, then secret=[redacted]"),
    ('passwd=abc PASSWORD=xyz "Passwd": "q"',
     'passwd=[redacted] PASSWORD=[redacted] "Passwd": "[redacted]"'),
    ("\u212aey=not-a-name passwords=3 passw=x", "\u212aey=not-a-name passwords=3 passw=x"),
    ("sk-ant-api03-abcdefghijklmnop", "sk-ant-…mnop"),
    ("cnp_live_abcdefghijklmnop", "cnp_live_…mnop"),
    ("bearer-token-abc_123", "bearer-token-abc_123"),
    ("4f6c9a2e-8b1d-4c7e-9f3a-2d5b8e1c6a90", "4f6c9a2e-8b1d-4c7e-9f3a-2d5b8e1c6a90"),
])
def test_fast_paths_mask_what_they_must(text, masked):
    assert mask_text(text) == masked


@settings(max_examples=300, deadline=None)
@given(prefix=st.text(alphabet=NOT_ASCII + " \n", max_size=40), body=surroundings,
       secret=secrets_, form=st.sampled_from(sorted(FORMS)), key=st.sampled_from(SECRET_KEYS))
def test_text_before_a_line_changes_nothing_of_its_masking(prefix, body, secret, form, key):
    # Multi-byte characters before a line move every byte offset, not what is masked.
    line = f"{body} {FORMS[form](secret, key)}"
    assert mask_text(f"{prefix}\n{line}") == f"{prefix}\n{mask_text(line)}"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["a", "Z", "1", "-", "_", ".", "/", "+", "é", "🤖", "sk-ant-",
                                 "cnp_live_", "api03", "key", "token", "Bearer", "basic"]),
                max_size=16).map("".join))
def test_text_without_separators_keeps_all_but_its_keys(text):
    # No quote, `=`, `:`, backslash, space or tab: no name/value pair and no scheme to mask.
    keys_only = _CLIENT_KEY.sub(lambda m: _mask_client_key(m.group(0)),
                                _ANTHROPIC_SECRET.sub(lambda m: mask_secret(m.group(0)), text))
    assert mask_text(text) == keys_only


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(surroundings, st.text(alphabet=NOT_ASCII + "key=\"'\\: \n", max_size=20),
                          st.builds(lambda s, k, f: FORMS[f](s, k), secrets_,
                                    st.sampled_from(SECRET_KEYS), st.sampled_from(sorted(FORMS)))),
                max_size=8))
def test_masking_many_texts_at_once_masks_each_as_alone(texts):
    assert mask_texts(texts) == [mask_text(text) for text in texts]
