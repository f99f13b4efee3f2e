"""A stream's events masked as one stream (app/redact_events.py): each event as mask_text masks
it, and the deltas of each content block as one text, however the events are framed or cut."""

from __future__ import annotations

import json
import string

from hypothesis import given, settings
from hypothesis import strategies as st

from app.redact import mask_text
from app.redact_events import mask_events

KEY = "sk-ant-oat01-abcdefghijklmnopqrstuvwxyz012345WXYZ"


def compact(index: int, value: str, kind: str = "text_delta", field: str = "text") -> str:
    """A delta framed exactly as the Messages API sends it (read without a JSON parse)."""
    data = {"type": "content_block_delta", "index": index, "delta": {"type": kind, field: value}}
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"event: content_block_delta\ndata: {text}\n\n"


def spaced(index: int, value: str, kind: str = "text_delta", field: str = "text") -> str:
    """The same delta framed otherwise (read by the generic SSE and JSON parse)."""
    data = {"type": "content_block_delta", "index": index, "delta": {"type": kind, field: value}}
    return f"data: {json.dumps(data)}\r\n\r\n"


def values(events: list[str]) -> list[str]:
    out = []
    for event in events:
        data = json.loads(event.split("data: ", 1)[1])
        delta = data["delta"]
        out.append(delta.get("text", delta.get("partial_json")))
    return out


def cut(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(max(c, 0), len(text)) for c in cuts} | {0, len(text)})
    return [text[a:b] for a, b in zip(points, points[1:], strict=False)]


def test_events_without_secrets_are_kept_byte_for_byte():
    events = [compact(0, 'He said "hi" \\ \n\t é 🤖 \u2028'), compact(0, "token count: 12"),
              spaced(1, '{"path": "/tmp'), spaced(1, '"}', "input_json_delta", "partial_json"),
              ": ping\n\n", 'event: message_stop\ndata: {"type":"message_stop"}\n\n']
    assert mask_events(events) == events


@settings(max_examples=200, deadline=None)
@given(before=st.text(alphabet=string.ascii_letters + " é🤖\"\\\n", max_size=30),
       cuts=st.lists(st.integers(0, 90), max_size=6), framing=st.sampled_from([compact, spaced]))
def test_a_key_cut_anywhere_is_masked_in_every_event(before, cuts, framing):
    text = f"{before} {KEY} after"
    events = mask_events([framing(0, piece) for piece in cut(text, cuts)])
    assert "".join(values(events)) == mask_text(text)
    assert not any(part in event for event in events for part in (KEY[:20], KEY[16:-4]))


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(0, 60), max_size=5))
def test_either_framing_masks_a_value_cut_anywhere(cuts):
    text = json.dumps({"command": "deploy", "api_key": "v3ry-s3cret-value"})
    pieces = cut(text, cuts)
    secret = "v3ry-s3cret-value"
    for framing in (compact, spaced):
        events = mask_events([framing(1, p, "input_json_delta", "partial_json")
                              for p in pieces])
        for start in range(len(secret) - 5):
            assert not any(secret[start:start + 6] in event for event in events), framing
        if all(event.endswith("}}\n\n") or event.endswith("}}\r\n\r\n") for event in events):
            # (A piece ending in `"api_key":` is masked to its line's end when its event is
            # masked alone, as every stored string is: then it is no JSON any more.)
            assert json.loads("".join(values(events)))["api_key"] == "[redacted]"


def test_blocks_are_joined_apart_even_interleaved():
    # Two blocks' pieces alternate: each block's deltas are one text, never mixed with the
    # other's (joined across blocks, "sk-ant-" + "oat01…" would not even be a key here).
    events = [compact(0, "key: " + KEY[:10]), compact(1, "nothing "), compact(0, KEY[10:]),
              compact(1, "to see")]
    out = values(mask_events(events))
    assert "".join(out[0::2]) == mask_text("key: " + KEY) and out[1::2] == ["nothing ", "to see"]
    assert not any(KEY[10:-4] in value for value in out)


def test_events_that_are_no_deltas_are_masked_alone():
    events = [f"event: error\ndata: {json.dumps({'message': 'key ' + KEY})}\n\n",
              compact(0, "lone piece " + KEY), "data: not json, x-api-key: abc123def\n\n"]
    assert mask_events(events) == [mask_text(event) for event in events]
