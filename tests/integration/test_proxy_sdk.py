"""The official SDK through the proxy (gevent process) against the fake: JSON, streams,
count_tokens, other /v1 paths; SSE bytes identical end to end."""

from __future__ import annotations

import anthropic
import pytest

from tests.fakes.upstream import (
    Reply,
    build_message,
    count_input_tokens,
    server_tool_blocks,
    text_block,
    thinking_block,
    tool_use_block,
)

KEY = "sk-ant-api03-proxytest-0123456789abcdef"
WEATHER_TOOL = {"name": "get_weather", "description": "Weather for a city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def client_for(proxy) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=proxy.url, api_key=KEY, max_retries=0)


def test_messages_create(proxy, upstream):
    response = client_for(proxy).messages.with_raw_response.create(
        model="claude-opus-4-8", max_tokens=64,
        messages=[{"role": "user", "content": "Hello"}])
    message = response.parse()
    received = upstream.received[0]
    assert message.content[0].text == "Hello! I am the fake upstream."
    assert message.usage.input_tokens == received.usage["input_tokens"]
    # passthrough of the client's own credential, however this SDK version sends it
    assert KEY in (received.header("x-api-key") or received.header("authorization") or "")
    assert received.header("anthropic-version")
    request_id = response.headers["x-nexus-request-id"]
    record = proxy.exchange(request_id)
    assert record["status"] == 200
    assert record["outcome"] == "ExchangeCompleted"
    assert record["input_tokens"] == received.usage["input_tokens"]
    assert record["output_tokens"] == received.usage["output_tokens"]
    assert record["request_type"] == "query_evaluation"  # no tools, no system


def test_upstream_headers_reach_the_client(proxy, upstream):
    response = client_for(proxy).messages.with_raw_response.create(
        model="claude-opus-4-8", max_tokens=64,
        messages=[{"role": "user", "content": "Hello"}])
    received = upstream.received[0]
    sent = {k.lower(): v for k, v in received.response_headers}
    assert response.headers["request-id"] == sent["request-id"]
    for name, value in sent.items():
        if name.startswith("anthropic-ratelimit-"):
            assert response.headers[name] == value
    assert response.headers.get_list("set-cookie") == [
        v for k, v in received.response_headers if k.lower() == "set-cookie"]


@pytest.mark.parametrize("content, extra", [
    ([text_block("Streaming works, " * 20)], {}),
    ([thinking_block("Let me think about this carefully."), text_block("Answer.")],
     {"thinking": {"type": "enabled", "budget_tokens": 2048}}),
    ([text_block("Checking."), tool_use_block("get_weather", {"city": "Paris", "unit": "°C"})],
     {"tools": [WEATHER_TOOL]}),
    ([*server_tool_blocks("claude proxy"), text_block("Found it.")], {}),
], ids=["text", "thinking", "tool_use", "server_tool"])
def test_stream_final_message_and_bytes(proxy, upstream, content, extra):
    reply = Reply(content=content, stop_reason="tool_use" if extra.get("tools") else "end_turn")
    upstream.script(reply)
    kwargs = dict(model="claude-opus-4-8", max_tokens=4096,
                  messages=[{"role": "user", "content": "Go"}], **extra)
    with client_for(proxy).messages.stream(**kwargs) as stream:
        final = stream.get_final_message()
    received = upstream.received[0]
    assert final.model_dump(exclude_none=True) == anthropic.types.Message(
        **build_message(received.json, reply)).model_dump(exclude_none=True)

    # Same again at the byte level: the client's bytes are the upstream's bytes.
    upstream.script(reply)
    with client_for(proxy).messages.with_streaming_response.create(stream=True, **kwargs) as raw:
        client_bytes = b"".join(raw.iter_bytes())
        request_id = raw.headers["x-nexus-request-id"]
    received = upstream.received[1]
    assert received.completed
    assert client_bytes == received.response_body
    record = proxy.exchange(request_id)
    assert record["outcome"] == "ExchangeCompleted"
    assert record["output_tokens"] == received.usage["output_tokens"]
    assert record["first_token_ms"] is not None


def test_count_tokens(proxy, upstream):
    result = client_for(proxy).messages.count_tokens(
        model="claude-opus-4-8", messages=[{"role": "user", "content": "How many?"}])
    received = upstream.received[0]
    assert received.path == "/v1/messages/count_tokens"
    assert result.input_tokens == count_input_tokens(received.json)


def test_other_paths_are_forwarded_with_query(proxy, upstream):
    page = client_for(proxy).models.list(limit=2)
    received = upstream.received[0]
    assert received.method == "GET"
    assert received.raw_path == "/v1/models?limit=2"
    assert len(page.data) == 2
