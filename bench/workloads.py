"""The benchmark's workloads: which request, streamed or not, at which concurrency."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bench.httpclient import build_request

DATA = Path(__file__).resolve().parent / "data"
HOST = "127.0.0.1"

# What the Anthropic SDKs send on every call (the key is a dummy: the fake accepts any).
SDK_HEADERS = [
    ("Accept", "application/json"),
    ("Content-Type", "application/json"),
    ("User-Agent", "nexus-bench/1"),
    ("anthropic-version", "2023-06-01"),
    ("x-api-key", "sk-ant-bench-0000"),
]

# Claude Code 2.1.197's headers around the captured request (tests/data/traffic/).
CLAUDE_CODE_HEADERS = [
    ("Accept", "application/json"),
    ("Content-Type", "application/json"),
    ("User-Agent", "claude-cli/2.1.197 (external, sdk-cli)"),
    ("X-Claude-Code-Session-Id", "4e583aa5-38fd-4ec2-868a-78f4ddbecece"),
    ("X-Stainless-Lang", "js"),
    ("X-Stainless-Package-Version", "0.94.0"),
    ("X-Stainless-Retry-Count", "0"),
    ("X-Stainless-Timeout", "600"),
    ("anthropic-beta", "claude-code-20250219,context-1m-2025-08-07,"
                       "interleaved-thinking-2025-05-14,context-management-2025-06-27"),
    ("anthropic-dangerous-direct-browser-access", "true"),
    ("anthropic-version", "2023-06-01"),
    ("x-api-key", "sk-ant-bench-0000"),
    ("x-app", "cli"),
]


def small_body(stream: bool) -> bytes:
    """A ~300-byte Messages request, the size of a short one-question call."""
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "metadata": {"user_id": "bench-user-0001"},
        "system": "You are a concise assistant. Answer in one short sentence.",
        "messages": [{"role": "user", "content":
                      "What is the capital of France? Please answer briefly and plainly, "
                      "without any extra commentary."}],
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":")).encode()


def claude_code_body() -> bytes:
    """The 76 KB body of a real Claude Code request (system prompt, tools, history)."""
    return (DATA / "claude_code_request.json").read_bytes()


@dataclass(frozen=True)
class Workload:
    key: str  # stable id, used in the JSON output
    title: str  # as shown in the table
    body: bytes
    headers: tuple[tuple[str, str], ...]
    stream: bool
    concurrency: int

    def request(self, port: int, path_prefix: str = "") -> bytes:
        """The raw request for a target on `port` (LiteLLM serves /anthropic/v1/messages)."""
        return build_request(HOST, port, path_prefix + "/v1/messages", self.body,
                             list(self.headers))


def all_workloads() -> list[Workload]:
    small_json, small_stream, cc = small_body(False), small_body(True), claude_code_body()
    sdk, code = tuple(SDK_HEADERS), tuple(CLAUDE_CODE_HEADERS)
    if b'"stream":true' not in cc:
        raise ValueError("bench/data/claude_code_request.json must be a streaming request")
    return [
        Workload("small_json_c1", "1. small JSON", small_json, sdk, False, 1),
        Workload("small_json_c10", "1. small JSON", small_json, sdk, False, 10),
        Workload("small_stream_c1", "2. small stream", small_stream, sdk, True, 1),
        Workload("small_stream_c10", "2. small stream", small_stream, sdk, True, 10),
        Workload("claude_code_c1", "3. Claude Code stream", cc, code, True, 1),
        Workload("claude_code_c10", "3. Claude Code stream", cc, code, True, 10),
    ]
