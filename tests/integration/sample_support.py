"""Helpers of the test-sample tests: Claude Code traffic carrying secrets, the `samples` CLI as a
user runs it, and the replay of a fixture through a proxy with its expectations checked.

Regenerate the checked-in fixtures (after a change of the sample or fixture format):

    .venv/bin/python -m tests.integration.sample_support tests/data/samples
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from app.samples.fixture import request_bytes, response_bytes
from tests.fakes.upstream import RawReply, Reply, text_block, tool_use_block
from tests.support import REPO

TRAFFIC = REPO / "tests" / "data" / "traffic"
KEY = "sk-ant-api03-sample-secret-key-0123456789abcdefXYZW"
PROMPT_KEY = "sk-ant-oat01-pasted-in-a-prompt-987654321LMNO"
BEARER = "cnp_live_sample-bearer-secret-7h6g5f4e3d"
COOKIE = "session=sample-cookie-secret-1q2w3e4r"
# Each secret, and a middle part of it that no masking keeps.
SECRETS = (KEY, PROMPT_KEY, BEARER, COOKIE, "sample-secret-key", "pasted-in-a-prompt",
           "sample-bearer-secret", "sample-cookie-secret")
REPLAY_KEY = "sk-ant-api03-fixture-replay-key"
SLOW_STEP_S = 0.05


def _traffic(name: str) -> dict:
    return json.loads((TRAFFIC / name).read_text())


def _headers(captured: dict[str, str]) -> dict[str, str]:
    """A captured Claude Code request's headers, with secrets of our own for the credentials."""
    headers = {k: v for k, v in captured.items()
               if k.lower() not in ("host", "content-length", "connection", "x-api-key")}
    return {**headers, "x-api-key": KEY, "Authorization": f"Bearer {BEARER}", "Cookie": COOKIE}


def tool_use_stream() -> tuple[dict[str, str], dict, Reply]:
    """Claude Code's first turn (tools cut to Bash and Read), a key pasted in the prompt, and
    an answer streaming a text block and a Read tool call."""
    captured = _traffic("turn1_request.json")
    body = copy.deepcopy(captured["body"])
    body["tools"] = [t for t in body["tools"] if t["name"] in ("Bash", "Read")]
    body["messages"][0]["content"][-1]["text"] = (
        f"Read README.md and tell me if it leaks my key {PROMPT_KEY}")
    reply = Reply(content=[text_block("I'll read the README first."),
                           tool_use_block("Read", {"file_path": "/home/user/project/README.md"},
                                          id="toolu_01SampleReadCall0000000")],
                  stop_reason="tool_use", message_id="msg_01SampleStreamToolUse00000",
                  usage={"cache_creation_input_tokens": 812, "cache_read_input_tokens": 14021})
    return _headers(captured["headers"]), body, reply


def title_message() -> tuple[dict[str, str], dict, Reply]:
    """Claude Code's title generation, not streamed (a query evaluation), answered in JSON."""
    captured = _traffic("interactive_title_generation_request.json")
    body = {**captured["body"], "stream": False}
    reply = Reply(content=[text_block('{"title": "Explain TCP slow start"}')],
                  message_id="msg_01SampleTitleGeneration000")
    return _headers(captured["headers"]), body, reply


def send(proxy_url: str, headers: dict[str, str], body: dict,
         query: str = "beta=true") -> requests.Response:
    return requests.post(f"{proxy_url}/v1/messages?{query}", headers=headers,
                         data=json.dumps(body).encode(), timeout=30)


def wait_files(folder: Path, count: int, timeout: float = 10.0) -> list[Path]:
    """The sample files of the folder once there are `count` of them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if len(found) >= count:
            return found
        time.sleep(SLOW_STEP_S)
    raise AssertionError(f"{count} sample file(s) expected in {folder}, found "
                         f"{sorted(p.name for p in folder.glob('*'))if folder.is_dir() else []}")


def flask_samples(samples_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`flask --app wsgi samples ARGS` as a user runs it, reading TEST_SAMPLES_DIR."""
    env = {**os.environ, "TEST_SAMPLES_DIR": str(samples_dir)}
    env.pop("COLLECT_TEST_SAMPLES", None)
    return subprocess.run([sys.executable, "-m", "flask", "--app", str(REPO / "wsgi.py"),
                           "samples", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60)


def recorded(proxy_url: str, request_id: str, timeout: float = 15.0) -> dict:
    """The stored row of one exchange, from the JSON API, once the writer has written it."""
    deadline = time.monotonic() + timeout
    while True:
        answer = requests.get(f"{proxy_url}/api/requests/{request_id}", timeout=5)
        if answer.status_code == 200:
            return answer.json()
        if time.monotonic() > deadline:
            raise AssertionError(f"exchange {request_id} never recorded: {answer.text[:300]}")
        time.sleep(SLOW_STEP_S)


def replay(proxy, upstream, fixture: dict) -> None:
    """Send a fixture's request through the proxy with the fake upstream answering exactly the
    fixture's response; check what the client got and what the proxy recorded."""
    response = fixture["response"]
    headers = [(name, value) for name, value in response["headers"]]
    if response["stream"]:
        headers.append(("Transfer-Encoding", "chunked"))
    answer_bytes = response_bytes(fixture)
    upstream.script(RawReply(response["status"], headers, answer_bytes))

    request = fixture["request"]
    query = f"?{request['query']}" if request["query"] else ""
    sent_headers = {name: value for name, value in request["headers"]}
    sent_headers["x-api-key"] = REPLAY_KEY
    got = requests.request(request["method"], proxy.url + request["path"] + query,
                           headers=sent_headers, data=request_bytes(fixture), timeout=30)
    expected = fixture["expected"]
    assert got.status_code == expected["status"], got.text[:500]
    assert got.content == answer_bytes  # byte for byte, the SSE text or the body
    received = upstream.wait_for(1)[-1]
    assert received.body == request_bytes(fixture)
    assert received.raw_path == request["path"] + query

    request_id = got.headers["x-nexus-request-id"]
    line = proxy.exchange(request_id)
    assert (line["status"], line["outcome"]) == (expected["status"], "ExchangeCompleted")
    row = recorded(proxy.url, request_id)
    assert (row["status"], row["outcome"]) == (expected["status"], expected["outcome"])
    assert row["request_type"] == expected["request_type"]
    assert row["model"] == expected["model"]
    assert row["stream"] is expected["stream"]
    for field, value in expected["usage"].items():
        assert row[field] == value, field
    calls = expected["tool_calls"]
    assert row["tool_call_count"] == len(calls)
    assert row["tool_names"] == [call["name"] for call in calls]
    blocks = [b for b in row["response_body"]["content"] if b.get("type") == "tool_use"]
    assert [{"name": b["name"], "input": b["input"]} for b in blocks] == calls


def main(argv: list[str] | None = None) -> None:
    """Collect the two fixture exchanges through a proxy in front of the fake upstream and
    export them into the folder given (tests/data/samples)."""
    from tests.fakes.upstream import FakeUpstream
    from tests.support import ProxyProcess

    out = Path((argv or sys.argv[1:] or ["tests/data/samples"])[0]).resolve()
    with tempfile.TemporaryDirectory() as temp, FakeUpstream() as fake:
        samples_dir = Path(temp) / "samples"
        proxy = ProxyProcess(fake.base_url, Path(temp) / "proxy",
                             {"COLLECT_TEST_SAMPLES": "true", "TEST_SAMPLES_DIR": samples_dir})
        try:
            for make in (tool_use_stream, title_message):
                headers, body, reply = make()
                fake.script(reply)
                assert send(proxy.url, headers, body).status_code == 200
            wait_files(samples_dir, 2)
        finally:
            proxy.stop()
        for old in out.glob("*.json"):
            old.unlink()
        done = flask_samples(samples_dir, Path(temp), "export", "--all", "--out", str(out))
        print(done.stdout + done.stderr)
        done.check_returncode()


if __name__ == "__main__":
    main()
