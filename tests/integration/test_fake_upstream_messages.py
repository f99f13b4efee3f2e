"""The fake upstream behaves like the real Messages API, as seen by the official SDK:
messages created, streamed and counted, and models listed.

The SDK talks straight to the fake (no proxy in between): if the SDK parses what
the fake sends, the proxy's tests can trust the fake as a stand-in for the API.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.fakes.messages import compact_json
from tests.fakes.models import MODELS
from tests.fakes.sse import PING_EVENT, split_text
from tests.fakes.upstream import (
    DEFAULT_TEXT,
    Reply,
    build_message,
    build_sse,
    count_input_tokens,
    fold_sse,
    redacted_thinking_block,
    server_tool_blocks,
    text_block,
    thinking_block,
    tool_use_block,
)
from tests.integration.upstream_requests import (
    ARGS,
    MODEL,
    PROMPT,
    raw_request,
)

# ----------------------------------------------------------------------------- create

# `fake` and `client` are the fixtures of tests/integration/upstream_requests.py.
pytestmark = pytest.mark.usefixtures("fresh_fake")


def test_create_returns_default_text_with_realistic_envelope(fake, client):
    raw = client.messages.with_raw_response.create(**ARGS)
    message = raw.parse()
    rec = fake.wait_for(1)[0]

    assert message.content[0].text == DEFAULT_TEXT
    assert message.stop_reason == "end_turn"
    assert message.model == MODEL
    assert re.fullmatch(r"msg_01[0-9A-Za-z]{22}", message.id)
    assert message.usage.input_tokens == count_input_tokens(rec.json)
    assert message.usage.output_tokens == len(DEFAULT_TEXT) // 4
    assert message.usage.cache_creation.ephemeral_5m_input_tokens == 0
    assert message.usage.service_tier == "standard"
    assert message.to_dict() == build_message(rec.json)
    assert rec.usage == message.usage.to_dict()
    assert rec.status == 200 and rec.completed and rec.closed_at is None

    headers = raw.headers
    assert re.fullmatch(r"req_011C[0-9A-Za-z]{20}", headers["request-id"])
    assert raw.request_id == headers["request-id"]
    assert headers["content-type"] == "application/json"
    assert headers["set-cookie"].startswith("_cfuvid=")
    for family in ("requests", "input-tokens", "output-tokens", "tokens"):
        for part in ("limit", "remaining", "reset"):
            assert f"anthropic-ratelimit-{family}-{part}" in headers
    for name in ("anthropic-organization-id", "server", "via", "cf-ray", "date"):
        assert headers[name]
    assert headers["x-robots-tag"] == "none"


def test_create_with_thinking_returns_thinking_then_text(fake, client):
    message = client.messages.create(
        **{**ARGS, "max_tokens": 2048}, thinking={"type": "enabled", "budget_tokens": 1024}
    )
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking and message.content[0].signature
    assert message.content[1].text == DEFAULT_TEXT


def test_create_with_adaptive_thinking_also_thinks(fake, client):
    message = client.messages.create(**ARGS, thinking={"type": "adaptive"})
    assert [block.type for block in message.content] == ["thinking", "text"]


def test_create_tool_use_parses_input(fake, client):
    tool = tool_use_block("get_weather", {"city": "Paris", "units": ["c", "f"], "days": 3})
    fake.script(Reply(content=[text_block("Let me check."), tool], stop_reason="tool_use"))

    message = client.messages.create(**ARGS)

    assert message.stop_reason == "tool_use"
    block = message.content[1]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input == {"city": "Paris", "units": ["c", "f"], "days": 3}
    assert re.fullmatch(r"toolu_01[0-9A-Za-z]{22}", block.id)


def test_usage_override_merges_and_keeps_cache_breakdown(fake, client):
    fake.script(Reply(usage={"cache_read_input_tokens": 900, "cache_creation_input_tokens": 40}))
    usage = client.messages.create(**ARGS).usage
    assert usage.cache_read_input_tokens == 900
    assert usage.cache_creation_input_tokens == 40
    assert usage.cache_creation.ephemeral_5m_input_tokens == 40
    assert usage.input_tokens == count_input_tokens(fake.received[0].json)


# ----------------------------------------------------------------------------- stream

CONTENTS = {
    "text": [text_block("Streaming is fun, and this sentence is split into several deltas.")],
    "thinking": [thinking_block("First I consider the question carefully."), text_block("Yes.")],
    "redacted": [redacted_thinking_block(), text_block("Done.")],
    "tool_use": [
        text_block("Checking."),
        tool_use_block("lookup", {"q": 'naïve "quote"', "n": [1, 2.5, None], "nested": {"a": {}}}),
        tool_use_block("no_args", {}),
    ],
    "server_tool": [*server_tool_blocks("current python version"), text_block("It is 3.14.")],
}


@pytest.mark.parametrize("kind", CONTENTS)
def test_stream_final_message_and_wire_bytes_match_builders(fake, client, kind):
    stop_reason = "tool_use" if kind == "tool_use" else "end_turn"
    reply = Reply(content=CONTENTS[kind], stop_reason=stop_reason)
    fake.script(reply)

    with client.messages.stream(**ARGS) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    rec = fake.received[0]
    assert rec.wait_finished()

    expected = build_message(rec.json, reply)
    assert final.to_dict() == expected
    assert rec.response_body == b"".join(build_sse(rec.json, reply))
    assert fold_sse(rec.response_body) == expected
    assert rec.usage == expected["usage"] and rec.completed
    assert events[0] == "message_start" and events[-1] == "message_stop"
    if kind == "server_tool":
        assert final.usage.server_tool_use.web_search_requests == 1


def test_stream_text_arrives_in_several_deltas(fake, client):
    text = "One two three four five six seven eight nine ten eleven twelve."
    fake.script(Reply(content=[text_block(text)]))
    with client.messages.stream(**ARGS) as stream:
        pieces = list(stream.text_stream)
    assert pieces == split_text(text) and len(pieces) > 3
    assert "".join(pieces) == text


def test_stream_tool_input_arrives_as_partial_json_pieces(fake, client):
    tool = tool_use_block("search", {"query": "weather in Paris tomorrow", "limit": 5})
    fake.script(Reply(content=[tool], stop_reason="tool_use"))
    with client.messages.stream(**ARGS) as stream:
        pieces = [
            event.delta.partial_json
            for event in stream
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta"
        ]
        final = stream.get_final_message()
    assert pieces[0] == ""  # the real API opens every tool input with an empty fragment
    assert len(pieces) > 3
    assert json.loads("".join(pieces)) == tool["input"] == final.content[0].input


def test_sse_wire_format_is_the_real_apis(fake, client):
    with client.messages.stream(**ARGS) as stream:
        stream.until_done()
        headers = stream.response.headers
    body = fake.received[0].response_body

    assert headers["content-type"] == "text/event-stream; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    assert headers["transfer-encoding"] == "chunked"
    assert "set-cookie" not in headers

    raw_events = body.split(b"\n\n")[:-1]
    assert body.endswith(b"\n\n")
    names = []
    for raw in raw_events:
        match = re.fullmatch(rb"event: (\w+)\ndata: (.+)", raw)
        assert match, raw
        name, data = match.group(1).decode(), match.group(2).decode()
        names.append(name)
        if name != "ping":  # ping alone is sent as `{"type": "ping"}`, with a space
            assert data == compact_json(json.loads(data))
    assert raw_events[2] + b"\n\n" == PING_EVENT
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * len(split_text(DEFAULT_TEXT)),
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]

    start = json.loads(raw_events[0].split(b"data: ", 1)[1])["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert list(start["usage"]) == [
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "cache_creation",
        "output_tokens",
        "service_tier",
        "inference_geo",
    ]
    assert start["usage"]["output_tokens"] == 1
    delta = json.loads(raw_events[-2].split(b"data: ", 1)[1])
    assert delta["delta"] == {
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "stop_details": None,
    }
    assert set(delta["usage"]) == {
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "output_tokens",
    }


# ----------------------------------------------------------------------------- other routes


def test_count_tokens_matches_messages_input_tokens(fake, client):
    counted = client.messages.count_tokens(model=MODEL, messages=PROMPT)
    created = client.messages.create(**ARGS)
    assert counted.input_tokens == created.usage.input_tokens
    assert counted.input_tokens == count_input_tokens({"messages": PROMPT})
    assert fake.received[0].path == "/v1/messages/count_tokens"


def test_models_list_paginates_like_the_api(fake, client):
    ids = [row[0] for row in MODELS]
    page = client.models.list(limit=2)
    assert [m.id for m in page.data] == ids[:2]
    assert page.has_more and page.first_id == ids[0] and page.last_id == ids[1]
    assert [m.id for m in client.models.list(limit=2)] == ids  # follows after_id
    assert [m.id for m in client.models.list(before_id=ids[3], limit=2).data] == ids[1:3]
    assert client.models.retrieve(MODEL).display_name == "Claude Sonnet 4.6"
    assert "after_id=" in fake.received[2].query


def test_unknown_path_is_a_real_shaped_404(fake):
    resp, body = raw_request(fake, "GET", "/v1/nothing-here")
    payload = json.loads(body)
    assert resp.status == 404
    assert payload["type"] == "error" and payload["error"]["type"] == "not_found_error"
    assert payload["request_id"] == resp.getheader("request-id")


# ----------------------------------------------------------------------------- headers


def test_unified_headers_carry_the_subscription_family(fake, client):
    fake.script(Reply(unified=True))
    headers = client.messages.with_raw_response.create(**ARGS).headers
    prefix = "anthropic-ratelimit-unified-"
    assert headers[prefix + "status"] == "allowed"
    assert headers[prefix + "representative-claim"] == "five_hour"
    for window in ("5h", "7d"):
        assert 0 <= float(headers[f"{prefix}{window}-utilization"]) <= 1
        assert int(headers[f"{prefix}{window}-reset"]) > time.time()
    assert int(headers[prefix + "reset"]) > time.time()
    assert float(headers[prefix + "fallback-percentage"]) == 0.5
    assert headers[prefix + "overage-status"]
