"""Test samples end to end: a proxy process with COLLECT_TEST_SAMPLES writes one file per
exchange with no secret in it, the `samples` commands list, show and export them, and an
exported fixture replays through the proxy as the checked-in ones do."""

from __future__ import annotations

import json

import pytest
import requests

from app import create_app
from app.samples.files import write_sample
from tests.fakes.upstream import Reply, fold_sse, parse_sse, text_block, tool_use_block
from tests.integration.sample_support import (
    KEY,
    PROMPT_KEY,
    SECRETS,
    flask_samples,
    recorded,
    replay,
    send,
    title_message,
    tool_use_stream,
    wait_files,
)

QUERY_SECRET = "query-secret-value-5c4b3a"


def secrets_in(text: str) -> list[str]:
    return [secret for secret in (*SECRETS, QUERY_SECRET) if secret in text]


def test_collected_samples_hold_no_secret_and_export_as_fixtures(start_proxy, upstream,
                                                                 tmp_path):
    samples_dir = tmp_path / "samples"
    proxy = start_proxy(COLLECT_TEST_SAMPLES="true", TEST_SAMPLES_DIR=str(samples_dir))
    headers, body, _ = tool_use_stream()
    upstream.script(Reply(content=[text_block(f"Your key {PROMPT_KEY} is in the README."),
                                   tool_use_block("Read", {"file_path": "README.md"})],
                          stop_reason="tool_use"))
    streamed = send(proxy.url, headers, body)
    assert streamed.status_code == 200
    assert fold_sse(streamed.content)["content"][0]["text"].startswith(f"Your key {PROMPT_KEY}")
    headers, body, reply = title_message()
    upstream.script(reply)
    plain = send(proxy.url, headers, body, query=f"beta=true&api_key={QUERY_SECRET}")
    assert plain.status_code == 200

    paths = wait_files(samples_dir, 2)
    health = requests.get(proxy.url + "/health", timeout=5).json()["samples"]
    assert (health["state"], health["written"], health["dropped"], health["failed"]) == \
        ("running", 2, 0, 0)
    assert [p.name for p in samples_dir.iterdir() if p.name.startswith(".")] == []
    samples = {}
    for path in paths:
        text = path.read_text()
        assert secrets_in(text) == [], path.name
        sample = json.loads(text)
        samples[sample["id"]] = sample
        assert path.name.endswith(f"_{sample['id'][:8]}.json")
    stream_sample = samples[streamed.headers["x-nexus-request-id"]]
    plain_sample = samples[plain.headers["x-nexus-request-id"]]

    sent_headers = dict(stream_sample["request"]["headers"])
    assert sent_headers["x-api-key"] == f"sk-ant-…{KEY[-4:]}"
    assert sent_headers["Authorization"].startswith("Bearer …")
    assert sent_headers["Cookie"] == "[redacted]"
    assert stream_sample["request"]["body"]["messages"][0]["content"][-1]["text"].endswith(
        f"my key sk-ant-…{PROMPT_KEY[-4:]}")
    response = stream_sample["response"]
    assert (response["status"], response["stream"], stream_sample["stream"]) == (200, True, True)
    # The reply spelled the key over several events: masked as one text, spread back.
    masked_reply = f"Your key sk-ant-…{PROMPT_KEY[-4:]} is in the README."
    assert response["body"]["content"][0]["text"] == masked_reply
    events = "".join(e["raw"] for e in response["events"]).encode()
    assert len(response["events"]) == len(parse_sse(upstream.received[0].response_body))
    assert fold_sse(events)["content"] == response["body"]["content"]
    assert [t["name"] for t in stream_sample["tool_uses"]] == ["Read"]
    assert stream_sample["timing"]["first_token_ms"] > 0
    assert stream_sample["usage"]["output_tokens"] > 0

    assert plain_sample["query"] == "beta=true&api_key=%5Bredacted%5D"  # "[redacted]"
    assert plain_sample["request_type"] == "query_evaluation"
    assert plain_sample["response"]["stream"] is False
    assert plain_sample["response"]["body"] == json.loads(upstream.received[1].response_body)
    assert plain_sample["response"]["events"] == []
    assert dict(plain_sample["response"]["headers"])["Set-Cookie"] == "[redacted]"

    # The commands, as a user runs them (another process, reading TEST_SAMPLES_DIR).
    stream_name = next(p.name for p in paths if p.name.endswith(
        f"_{stream_sample['id'][:8]}.json"))
    listed = flask_samples(samples_dir, tmp_path, "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split()[:2] == ["NAME", "TIME"]
    row = next(line for line in lines if line.startswith(stream_name))
    assert "POST /v1/messages?beta=true" in row and " 200 " in row and " yes " in row
    limited = flask_samples(samples_dir, tmp_path, "list", "--limit", "1")
    assert len(limited.stdout.splitlines()) == 3 and "1 older sample" in limited.stdout

    shown = flask_samples(samples_dir, tmp_path, "show", stream_sample["id"][:8])
    assert shown.returncode == 0, shown.stderr
    assert f"Sample    {stream_name}" in shown.stdout
    assert "Tools     Read" in shown.stdout and "200 (completed)" in shown.stdout
    assert "x-api-key: sk-ant-…" in shown.stdout
    full = flask_samples(samples_dir, tmp_path, "show", stream_name, "--json")
    assert json.loads(full.stdout) == stream_sample

    out = tmp_path / "fixtures"
    exported = flask_samples(samples_dir, tmp_path, "export", "--all", "--out", str(out))
    assert exported.returncode == 0, exported.stderr
    assert "Exported 2 fixture(s)" in exported.stdout and "Exporting" in exported.stderr
    fixtures = sorted(out.glob("*.json"))
    assert sorted(p.name for p in fixtures) == sorted(p.name for p in paths)
    for path in fixtures:
        assert secrets_in(path.read_text()) == []
        fixture = json.loads(path.read_text())
        upstream.reset()
        replay(proxy, upstream, fixture)  # the export path itself, proven on fresh samples


def test_chunks_for_samples_do_not_reach_the_database(start_proxy, upstream, tmp_path):
    samples_dir = tmp_path / "samples"
    proxy = start_proxy(COLLECT_TEST_SAMPLES="true", TEST_SAMPLES_DIR=str(samples_dir),
                        STORE_STREAMING_CHUNKS="false")
    headers, body, reply = tool_use_stream()
    upstream.script(reply)
    answer = send(proxy.url, headers, body)
    request_id = answer.headers["x-nexus-request-id"]
    [path] = wait_files(samples_dir, 1)
    events = json.loads(path.read_text())["response"]["events"]
    assert "".join(e["raw"] for e in events).encode() == answer.content
    assert recorded(proxy.url, request_id)["stream"] is True
    chunks = requests.get(f"{proxy.url}/api/requests/{request_id}/chunks", timeout=5).json()
    assert chunks["total"] == 0
    assert proxy.stop() == 0
    log = proxy.log_text()
    assert "samples: writing each exchange to" in log and "not written" not in log


def test_nothing_is_collected_by_default(start_proxy, upstream, tmp_path):
    proxy = start_proxy()
    headers, body, reply = title_message()
    upstream.script(reply)
    request_id = send(proxy.url, headers, body).headers["x-nexus-request-id"]
    proxy.exchange(request_id)
    assert not (tmp_path / "proxy0" / "test-samples").exists()


@pytest.fixture
def cli(tmp_path):
    app = create_app({"TEST_SAMPLES_DIR": str(tmp_path / "samples")}, env_file=None)
    runner = app.test_cli_runner()
    with app.app_context():  # as `flask` pushes it (the group is a plain click group)
        yield lambda *args: runner.invoke(args=["samples", *args])


def one_line_error(result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_errors_are_one_line(cli, tmp_path):
    assert "does not exist" in one_line_error(cli("list"))
    folder = tmp_path / "samples"
    folder.mkdir()
    assert "No samples in" in one_line_error(cli("list"))
    assert "No samples in" in one_line_error(cli("export", "--all", "--out", str(tmp_path)))
    (folder / "20260101T000000Z_inference_m_broken00.json").write_text("{not json")
    assert "not valid JSON" in one_line_error(cli("show", "broken00"))
    assert "No sample 'nope'" in one_line_error(cli("show", "nope"))
    assert "No sample 'nope'" in one_line_error(cli("export", "nope", "--out", str(tmp_path)))
    assert "names or --all" in one_line_error(cli("export", "--out", str(tmp_path)), code=2)
    listed = cli("list")  # an unreadable file is a row of the list, not a failure
    assert listed.exit_code == 0 and "(unreadable)" in listed.output


def test_export_skips_what_cannot_be_replayed(cli, tmp_path):
    folder = tmp_path / "samples"
    good = {"format": "claude-nexus-test-sample", "version": 1, "id": "aaaa0000-1",
            "received_at": "2026-01-01T00:00:01Z", "method": "GET", "path": "/v1/models",
            "query": "", "status": 200, "outcome": "completed",
            "request": {"headers": [], "body": None},
            "response": {"status": 200, "headers": [["content-type", "application/json"]],
                         "stream": False, "body": {"data": []}, "events": []}}
    failed = {**good, "id": "bbbb0000-2", "received_at": "2026-01-01T00:00:02Z",
              "outcome": "failed", "status": 502, "response": {"status": None}}
    good_path, failed_path = write_sample(folder, good), write_sample(folder, failed)
    out = tmp_path / "out"
    result = cli("export", "--all", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert f"skipped {failed_path.name}: the exchange did not complete" in result.stderr
    assert [p.name for p in out.iterdir()] == [good_path.name]
    assert "did not complete" in one_line_error(cli("export", "bbbb0000", "--out", str(out)))
