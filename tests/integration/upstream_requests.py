"""What the fake-upstream tests send: SDK arguments and raw HTTP/1.1 exchanges.

The SDK talks straight to the fake (no proxy in between); ``raw_request`` does the
same below the SDK, for what it would hide (404s, content-coding, many connections).
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator

import anthropic
import pytest

from tests.fakes.upstream import FakeUpstream

MODEL = "claude-sonnet-4-6"  # not on SDK 2.14's deprecation list (4.5 models warn)
PROMPT = [{"role": "user", "content": "Hello there"}]
ARGS = {"model": MODEL, "max_tokens": 256, "messages": PROMPT}


def raw_request(
    fake: FakeUpstream, method: str, path: str, body: bytes = b"", headers: dict | None = None
) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", fake.port, timeout=10)
    try:
        conn.request(method, path, body, headers or {})
        resp = conn.getresponse()
        return resp, resp.read()
    finally:
        conn.close()


# Fixtures of the fake's own tests (a plugin of tests/conftest.py): each module that asks gets
# a private fake — a session-wide one could be handed a late request of an earlier proxy test —
# emptied before every test by `fresh_fake`.
@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    upstream = FakeUpstream().start()
    yield upstream
    upstream.stop()


@pytest.fixture
def fresh_fake(fake: FakeUpstream) -> None:
    fake.reset()


@pytest.fixture(scope="module")
def client(fake: FakeUpstream) -> Iterator[anthropic.Anthropic]:
    sdk = anthropic.Anthropic(base_url=fake.base_url, api_key="sk-ant-api03-test", max_retries=0)
    yield sdk
    sdk.close()
