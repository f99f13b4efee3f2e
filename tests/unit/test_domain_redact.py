import pytest

from app.domain import normalise_domain
from app.redact import mask_header_value, mask_text, redact_headers


@pytest.mark.parametrize("host, domain", [
    ("Team.Example.COM:3000", "team.example.com"),
    ("team.example.com", "team.example.com"),
    ("team.example.com.", "team.example.com"),
    ("localhost:3000", "localhost:3000"),
    ("LOCALHOST", "localhost"),
    ("127.0.0.1:8080", "127.0.0.1:8080"),
    ("[::1]:3000", "[::1]:3000"),
    ("[2001:db8::1]", "[2001:db8::1]"),
    ("", "unknown"),
    (None, "unknown"),
    ("Évil.Example:443".encode().decode("latin-1"), "évil.example"),  # UTF-8 as WSGI gives it
    ("café.example", "café.example"),   # already text: kept
    ("\xe9vil.example", "\xe9vil.example"),  # latin-1 that is no UTF-8: kept
])
def test_normalise_domain(host, domain):
    assert normalise_domain(host) == domain


def test_masks_keys_everywhere_in_text():
    text = 'key sk-ant-api03-AbCdEfGhIjKlMnOp1234 and {"t":"sk-ant-oat01-zzzzzzzzzzzzWXYZ"}'
    masked = mask_text(text)
    assert "AbCdEfGh" not in masked and "zzzz" not in masked
    assert "sk-ant-…1234" in masked and "sk-ant-…WXYZ" in masked


def test_header_redaction():
    headers = [("x-api-key", "sk-ant-api03-secretsecret9876"),
               ("Authorization", "Bearer sk-ant-oat01-tokentoken5555"),
               ("Cookie", "session=abc"), ("anthropic-version", "2023-06-01")]
    assert redact_headers(headers) == [
        ("x-api-key", "sk-ant-…9876"), ("Authorization", "Bearer sk-ant-…5555"),
        ("Cookie", "[redacted]"), ("anthropic-version", "2023-06-01")]
    assert mask_header_value("x-api-key", "short") == "[redacted]"
