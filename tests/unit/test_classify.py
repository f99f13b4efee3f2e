import json
from pathlib import Path

import pytest

from app.usage.classify import INFERENCE, QUERY_EVALUATION, QUOTA, classify_request

TRAFFIC = Path(__file__).resolve().parents[1] / "data" / "traffic"


def test_quota_probe():
    body = {"model": "claude-haiku-4-5", "max_tokens": 1, "tools": [{"name": "x"}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "  Quota \n"}]}]}
    assert classify_request(body) == QUOTA


def test_no_tools_and_one_system_block_is_query_evaluation():
    body = {"messages": [{"role": "user", "content": "hi"}],
            "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2"},
                       {"type": "text", "text": "Summarise."}]}
    assert classify_request(body) == QUERY_EVALUATION
    body["system"].append({"type": "text", "text": "Another"})
    assert classify_request(body) == INFERENCE
    assert classify_request({"messages": [], "system": "plain"}) == QUERY_EVALUATION


def test_tools_make_inference():
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": [{"name": "Bash"}]}
    assert classify_request(body) == INFERENCE


def test_structured_output_is_query_evaluation():
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": [{"name": "Bash"}],
            "output_config": {"format": {"type": "json_schema", "schema": {}}}}
    assert classify_request(body) == QUERY_EVALUATION


@pytest.mark.parametrize("name, expected", [
    ("print_main_request.json", INFERENCE),
    ("interactive_title_generation_request.json", QUERY_EVALUATION),
    ("agent_subagent_request.json", INFERENCE),
    ("compact_request.json", INFERENCE),
    ("model_haiku_request.json", INFERENCE),
])
def test_real_claude_code_requests(name, expected):
    body = json.loads((TRAFFIC / name).read_text())["body"]
    assert classify_request(body) == expected


@pytest.mark.parametrize("body", [None, [], "x", {"messages": "nope"}, {"messages": [1, None]}])
def test_odd_bodies_do_not_raise(body):
    assert classify_request(body) in (INFERENCE, QUERY_EVALUATION)
