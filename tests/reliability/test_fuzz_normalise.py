"""Property tests of the conversation normaliser with hypothesis: `shape`, `response_hash`,
`spawned_prompts`, `text_hash` and `summary_key` take any JSON value — and bodies shaped like
Claude Code's with anything at their leaves — without raising.

Each public function wraps its work in `_never_raises`, which turns an exception into "no
information"; that guard would hide a crash from a test of the public function alone, so the
functions are also called unwrapped (`__wrapped__`): an exception there is a real bug (linking
silently loses the request). The wrapped results must be well-typed and depend only on the
JSON value, not on its object identity."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.conversations import normalise
from app.conversations.normalise import Shape

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = ["role", "content", "type", "text", "id", "name", "input", "tool_use_id", "source",
        "media_type", "data", "url", "file_id", "system", "messages", "thinking", "signature",
        "cache_control", "citations", "is_error", "metadata", "user_id", "tools", "model"]
WORDS = ["user", "assistant", "system", "text", "tool_use", "tool_result", "image", "document",
         "thinking", "redacted_thinking", "base64", "url", "file", "Task", "Agent", "",
         "<system-reminder>x</system-reminder>", "<system-reminder>", "</system-reminder>",
         "x-anthropic-billing-header: cc_is_subagent=true;", "<summary>s</summary>",
         "Analysis:\nSummary: s", "detailed summary of the conversation so far",
         "This session is being continued from a previous conversation", "\ud800", "\x00"]

leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                   st.text(max_size=20), st.sampled_from(WORDS))
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=5)
    | st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner,
                      max_size=6),
    max_leaves=40)
sources = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(WORDS), json_values)},
    optional={key: st.one_of(st.sampled_from(WORDS), json_values)
              for key in ("media_type", "data", "url", "file_id", "cache_control")})
blocks = st.fixed_dictionaries(
    {"type": st.one_of(st.sampled_from(WORDS), json_values)},
    optional={key: st.one_of(st.sampled_from(WORDS), json_values)
              for key in ("text", "id", "name", "input", "tool_use_id", "content", "source",
                          "thinking", "cache_control", "is_error")} | {"source": sources})
messages = st.fixed_dictionaries(
    {"role": st.one_of(st.sampled_from(["user", "assistant", "system"]), json_values)},
    optional={"content": st.one_of(st.sampled_from(WORDS), st.lists(
        st.one_of(blocks, json_values), max_size=4), json_values)})
bodies = st.fixed_dictionaries(
    {"messages": st.one_of(st.lists(st.one_of(messages, json_values), max_size=6),
                           json_values)},
    optional={"system": st.one_of(st.sampled_from(WORDS), st.lists(
        st.one_of(blocks, json_values), max_size=3), json_values),
        "model": json_values, "tools": json_values})
anything = st.one_of(json_values, bodies, messages, st.lists(blocks, max_size=4))


def unwrapped(name: str):
    return getattr(normalise, name).__wrapped__


@FUZZ
@given(value=anything)
def test_shape_reads_any_value_without_an_exception(value):
    result = unwrapped("shape")(value)
    assert isinstance(result, Shape)
    assert result.message_count >= 0
    assert len(result.ancestor_hashes) <= result.message_count
    assert normalise.shape(value) == result
    # Same JSON, other objects: the same shape (no identity or ordering accident).
    try:
        copy = json.loads(json.dumps(value))
    except (TypeError, ValueError, UnicodeError):
        return
    if json.dumps(copy, sort_keys=True) == json.dumps(value, sort_keys=True):
        assert normalise.shape(copy) == result


@FUZZ
@given(value=anything)
def test_the_answer_functions_read_any_value_without_an_exception(value):
    digest = unwrapped("response_hash")(value)
    assert digest is None or (isinstance(digest, str) and len(digest) == 64)
    prompts = unwrapped("spawned_prompts")(value)
    assert all(isinstance(i, str) and isinstance(p, str) for i, p in prompts)


@FUZZ
@given(value=st.one_of(json_values, st.sampled_from(WORDS), st.text()))
def test_the_text_functions_read_any_value_without_an_exception(value):
    assert len(unwrapped("text_hash")(value)) == 64
    key = unwrapped("summary_key")(value)
    assert isinstance(key, str) and len(key) <= normalise.SUMMARY_KEY_CHARS


def test_a_body_nested_past_the_recursion_limit_is_no_information():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    body = {"messages": [{"role": "user", "content": [{"type": "tool_result",
                                                       "tool_use_id": "t", "content": deep}]}]}
    assert isinstance(normalise.shape(body), Shape)
    assert isinstance(normalise.response_hash({"role": "assistant", "content": deep}),
                      (str, type(None)))
