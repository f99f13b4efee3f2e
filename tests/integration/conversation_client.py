"""A tiny simulated Messages client that keeps its history the way Claude Code does: every
request carries the whole conversation (system prompt, the `Bash` and `Agent` tools, the
session header), the answer the upstream gave is appended as the next assistant message, and
the next user turn (a prompt or tool_results) follows. Sub-agents are clients of their own,
with an agent id and the billing marker Claude Code puts on their requests.

Answers come back as JSON or as an event stream (folded with the fake's own `fold_sse`),
alternating by default, so both paths of the proxy's recording feed the linker."""

from __future__ import annotations

import http.client
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from tests.fakes.upstream import fold_sse

KEY = "sk-ant-api03-conversation-client-0123456789"
VERSION = "2023-06-01"
MODEL = "claude-sonnet-4-5-20250929"
TRAFFIC = Path(__file__).resolve().parents[1] / "data" / "traffic"

TOOLS = [
    {"name": "Bash", "description": "Run a shell command.",
     "input_schema": {"type": "object", "properties": {"command": {"type": "string"}},
                      "required": ["command"]}},
    {"name": "Agent", "description": "Launch a sub-agent for a task.",
     "input_schema": {"type": "object",
                      "properties": {"description": {"type": "string"},
                                     "prompt": {"type": "string"},
                                     "subagent_type": {"type": "string"}},
                      "required": ["description", "prompt"]}},
]
REMINDER = ("<system-reminder>\nAs you answer the user's questions, you can use the following "
            "context:\n# currentDate\nToday's date is 2026-11-26.\n</system-reminder>\n\n")
# The words Claude Code 2.1 uses around a compaction (app/conversations/normalise.py detects
# them): the summarisation request's instructions and the continuation's heading.
SUMMARY_INSTRUCTIONS = (
    "CRITICAL: Respond with TEXT ONLY. Do NOT call any tools.\n\n"
    "Your task is to create a detailed summary of the conversation so far, paying close "
    "attention to the user's explicit requests and your previous actions.\nThis summary should "
    "be thorough in capturing technical details, code patterns, and architectural decisions.")
CONTINUATION_HEADING = (
    "This session is being continued from a previous conversation that ran out of context. "
    "The summary below covers the earlier portion of the conversation.")
CONTINUATION_TRAILER = (
    "If you need specific details from before compaction (like exact code snippets, error "
    "messages, or content you generated), read the full transcript at: "
    "/home/dev/.claude/projects/-home-dev-project/session.jsonl\n"
    "Continue the conversation from where it left off without asking the user any further "
    "questions.")


def system_prompt(subagent: bool = False) -> list[dict]:
    """Claude Code's system blocks: the billing header (marking sub-agents), then the prompt."""
    marker = " cc_is_subagent=true;" if subagent else ""
    return [
        {"type": "text",
         "text": f"x-anthropic-billing-header: cc_version=2.1.197.d55; cc_entrypoint=cli;{marker}"},
        {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
         "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": ("You are an agent for Claude Code." if subagent else
                                  "You are an interactive agent that helps users with software "
                                  "engineering tasks.")},
    ]


def continuation_text(summary: str) -> str:
    """The first user message of a compacted session, carrying `summary`."""
    return f"{CONTINUATION_HEADING}\n\nSummary:\n{summary}\n\n{CONTINUATION_TRAILER}"


@dataclass
class Answer:
    """One request through the proxy: its id there, its status, the assistant message."""

    request_id: str
    status: int
    message: dict | None
    body: dict

    @property
    def tool_uses(self) -> list[dict]:
        content = (self.message or {}).get("content") or []
        return [block for block in content if block.get("type") == "tool_use"]


class Client:
    """One Claude Code thread (the main one, or a sub-agent's) talking to the proxy."""

    def __init__(self, base_url: str, session_id: str, agent_id: str | None = None,
                 streams: Iterable[bool] = (False, True)):
        self.base_url = base_url
        self.session_id = session_id
        self.agent_id = agent_id
        self.history: list[dict] = []
        self._streams = itertools.cycle(tuple(streams))
        self._http = requests.Session()

    # ------------------------------------------------------------------ turns

    def ask(self, content: str | list[dict], **extra: Any) -> Answer:
        """Append a user turn and send the history; the answer joins the history."""
        self.user(content)
        return self.send(**extra)

    def answer_tools(self, answer: Answer, results: dict[str, str] | None = None,
                     **extra: Any) -> Answer:
        """The next turn: a tool_result for each tool_use of `answer` (text from `results`
        by tool_use id, else a command output)."""
        results = results or {}
        blocks = [{"type": "tool_result", "tool_use_id": use["id"],
                   "content": [{"type": "text",
                                "text": results.get(use["id"], f"output of {use['id']}")}]}
                  for use in answer.tool_uses]
        return self.ask(blocks, **extra)

    def user(self, content: str | list[dict]) -> None:
        self.history.append({"role": "user", "content": content})

    def note(self, text: str) -> None:
        """A `role: "system"` entry, as Claude Code 2.1 inserts them into the history."""
        self.history.append({"role": "system", "content": text})

    def rewind(self, keep: int) -> None:
        """Keep the first `keep` entries of the history (an edit of a later prompt, a rewind)."""
        del self.history[keep:]

    def send(self, messages: list[dict] | None = None, **extra: Any) -> Answer:
        """Send the history (or `messages`) as is; a successful answer joins the history."""
        answer = self.post(self.history if messages is None else messages, **extra)
        if answer.message is not None and messages is None:
            self.history.append({"role": "assistant", "content": answer.message["content"]})
        return answer

    # ------------------------------------------------------------------ the wire

    def body(self, messages: list[dict], **extra: Any) -> dict:
        body = {"model": MODEL, "max_tokens": 8192, "stream": next(self._streams),
                "system": system_prompt(self.agent_id is not None), "tools": TOOLS,
                "metadata": {"user_id": json.dumps({"session_id": self.session_id})},
                "messages": json.loads(json.dumps(messages))}
        body.update(extra)
        return body

    def headers(self) -> dict[str, str]:
        headers = {"x-api-key": KEY, "anthropic-version": VERSION, "x-app": "cli",
                   "User-Agent": "claude-cli/2.1.197 (external, cli)",
                   "X-Claude-Code-Session-Id": self.session_id}
        if self.agent_id:
            headers["x-claude-code-agent-id"] = self.agent_id
        return headers

    def resend(self, answer: Answer) -> Answer:
        """The very body of an earlier request again (a client retry); a successful answer
        joins the history."""
        again = self.post_body(answer.body)
        if again.message is not None:
            self.history.append({"role": "assistant", "content": again.message["content"]})
        return again

    def post(self, messages: list[dict], **extra: Any) -> Answer:
        """Send `messages` (the history untouched)."""
        return self.post_body(self.body(messages, **extra))

    def post_body(self, body: dict) -> Answer:
        response = self._http.post(f"{self.base_url}/v1/messages?beta=true", json=body,
                                   headers=self.headers(), timeout=30)
        return Answer(response.headers.get("x-nexus-request-id", ""), response.status_code,
                      read_message(response.status_code, response.content, body["stream"]),
                      body)

    def close(self) -> None:
        self._http.close()


def read_message(status: int, content: bytes, stream: bool) -> dict | None:
    """The assistant message of a successful answer (JSON, or an event stream folded)."""
    if status != 200:
        return None
    message = fold_sse(content) if stream else json.loads(content)
    assert message.get("role") == "assistant", message
    return message


# ---------------------------------------------------------------------- captured traffic


def captured(name: str) -> dict:
    """A request captured from Claude Code 2.1.197 (tests/data/traffic/<name>)."""
    return json.loads((TRAFFIC / name).read_text())


def assistant_messages(sample: dict) -> list[dict]:
    return [m for m in sample["body"]["messages"] if m.get("role") == "assistant"]


def replay(base_url: str, sample: dict) -> Answer:
    """Send a captured request as Claude Code sent it: its raw path, its headers (minus Host
    and Content-Length) in their order and case, its body in its captured compact form."""
    body = json.dumps(sample["body"], ensure_ascii=False, separators=(",", ":")).encode()
    port = int(base_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(sample["method"], sample["raw_path"], skip_host=True,
                        skip_accept_encoding=True)
        conn.putheader("Host", f"127.0.0.1:{port}")
        for name, value in sample["headers"].items():
            if name.lower() not in ("host", "content-length"):
                conn.putheader(name, value)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        content = response.read()
        request_id = response.getheader("x-nexus-request-id", "")
    finally:
        conn.close()
    return Answer(request_id, response.status,
                  read_message(response.status, content, bool(sample["body"].get("stream"))),
                  sample["body"])
