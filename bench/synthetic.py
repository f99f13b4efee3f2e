"""Synthetic Claude Code traffic for the storage workload: ended `Exchange`s as the proxy hands
them to the batch writer.

Derived from the real request in `bench/data/claude_code_request.json`: its system prompt, its
`role: system` agent list and a subset of its tools (Agent, Bash, Read, Edit, Write), so that a
conversation's first request is about 22 KB; each turn then adds the assistant's answer (text
and a tool call) and the user's tool_result (a file's worth of text), about 3 KB, so a
conversation of 10-20 turns ends at 50-80 KB. Every request continues the one before it
exactly as Claude Code does (the recorded answer is replayed as the next assistant message),
so the writer's conversation linking finds real parents. Each conversation also sends a
`quota` side request (Haiku, not streamed) first, and one in six spawns a sub-agent (an
`Agent` tool call at turn 3, followed by three requests of the sub-agent whose first message
is the call's prompt).

Answers are streamed: each exchange carries its SSE events as the relay keeps them (about 30:
message_start, text deltas, the tool call's input deltas, message_delta, message_stop), the
rebuilt message, usage with cache reads and 1-hour cache writes, and the subscription's
`anthropic-ratelimit-unified-*` headers (so each exchange also makes a rate-limit sample).
"""

from __future__ import annotations

import json
import random
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from app.proxy.exchange import MESSAGES, Attempt, Exchange

DATA = Path(__file__).resolve().parent / "data"
TOOLS = ("Agent", "Bash", "Read", "Edit", "Write")
MODEL, SIDE_MODEL = "claude-opus-4-5", "claude-haiku-4-5"
SUBAGENT_EVERY = 6
SUBAGENT_TURNS = 3
SPAWN_TURN = 3


def _sse(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class Conversation:
    index: int
    domain: str
    account: str
    session_id: str
    turns: int
    system: list[dict]
    tools: list[dict]
    messages: list[dict]
    agent_id: str | None = None
    done: int = 0
    pending_spawn: tuple[str, str] | None = None   # (tool_use id, prompt) of an Agent call
    last_id: str | None = None                      # its latest request
    side_sent: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return self.done >= self.turns


class Traffic:
    """Conversations interleaved as concurrent Claude Code sessions send them."""

    def __init__(self, seed: int = 1, domains: int = 3, accounts: int = 6, active: int = 40,
                 start: datetime | None = None, step_ms: float = 5.0):
        self.rng = random.Random(seed)
        self.base = json.loads((DATA / "claude_code_request.json").read_text())
        self.tools = [t for t in self.base["tools"] if t["name"] in TOOLS]
        self.words = sorted({w for w in json.dumps(self.base["system"]).split()
                             if w.isalpha() and len(w) < 14})
        self.domains = [f"team-{n}.example.com" for n in range(domains)]
        self.accounts = [f"acc_bench_{n}" for n in range(accounts)]
        self.active_max = active
        self.now = start or datetime.now(UTC)
        self.step = timedelta(milliseconds=step_ms)
        self.count = 0
        self.active: deque[Conversation] = deque()
        self.finished: list[Conversation] = []
        self.ratelimit = _ratelimit_headers()
        self.last_streamed_id: str | None = None

    # ---------------------------------------------------------------- text

    def _text(self, words: int) -> str:
        return " ".join(self.rng.choices(self.words, k=words))

    def _file(self, lines: int) -> str:
        return "\n".join(f"{n + 1:>4}\t" + self._text(self.rng.randint(4, 12))
                         for n in range(lines))

    # ---------------------------------------------------------------- conversations

    def _new(self) -> Conversation:
        index = self.count
        self.count += 1
        account = self.rng.randrange(len(self.accounts))
        prompt = (f"Task {index}: " + self._text(self.rng.randint(12, 40))).strip()
        reminder = self.base["messages"][0]["content"][0]
        first = {"role": "user", "content": [dict(reminder),
                                              {"type": "text", "text": prompt,
                                               "cache_control": {"type": "ephemeral"}}]}
        return Conversation(
            index=index, domain=self.domains[account % len(self.domains)],
            account=self.accounts[account], session_id=str(uuid.UUID(int=self.rng.getrandbits(
                128), version=4)), turns=self.rng.randint(10, 20), system=self.base["system"],
            tools=self.tools, messages=[first, self.base["messages"][1]])

    def _subagent(self, parent: Conversation, prompt: str) -> Conversation:
        system = [self.base["system"][0], {"type": "text", "text": "You are a sub-agent. "
                                           + self._text(120)}]
        return Conversation(
            index=parent.index, domain=parent.domain, account=parent.account,
            session_id=parent.session_id, turns=SUBAGENT_TURNS, system=system,
            tools=[t for t in self.tools if t["name"] != "Agent"],
            messages=[{"role": "user", "content": prompt}],
            agent_id=str(uuid.UUID(int=self.rng.getrandbits(128), version=4)))

    def _tick(self) -> datetime:
        self.now += self.step
        return self.now

    def exchanges(self, count: int) -> list[Exchange]:
        """The next `count` exchanges, in the order they are received."""
        out: list[Exchange] = []
        while len(out) < count:
            while len(self.active) < self.active_max:
                self.active.append(self._new())
            conv = self.active.popleft()
            if not conv.side_sent and conv.agent_id is None:
                conv.side_sent = True
                out.append(self._side(conv, self._tick()))
                self.active.append(conv)
                continue
            out.append(self.turn(conv, self._tick()))
            if conv.pending_spawn and conv.agent_id is None:
                self.active.append(self._subagent(conv, conv.pending_spawn[1]))
                conv.pending_spawn = None
            if conv.finished:
                if conv.agent_id is None:
                    self.finished.append(conv)
            else:
                self.active.append(conv)
        return out

    def continuations(self, count: int) -> list[tuple[Exchange, str | None]]:
        """One more turn of `count` finished conversations (the user comes back to them), each
        with the id of the request it continues."""
        picked = self.rng.sample(self.finished, min(count, len(self.finished)))
        at = datetime.now(UTC)
        out = []
        for n, conv in enumerate(picked):
            parent = conv.last_id
            out.append((self.turn(conv, at + n * self.step), parent))
        return out

    def first_requests(self, count: int) -> list[tuple[Exchange, str | None]]:
        """The first request of `count` new conversations (nothing to continue)."""
        at = datetime.now(UTC)
        return [(self.turn(self._new(), at + n * self.step), None) for n in range(count)]

    # ---------------------------------------------------------------- one exchange

    def turn(self, conv: Conversation, received: datetime) -> Exchange:
        """The conversation's next request and its streamed answer; the history grows."""
        body = {"model": MODEL, "messages": conv.messages, "system": conv.system,
                "tools": conv.tools, "metadata": self.base["metadata"], "max_tokens": 64000,
                "thinking": {"type": "adaptive"}, "stream": True}
        raw = _dumps(body)
        tool_id = "toolu_" + uuid.UUID(int=self.rng.getrandbits(128)).hex[:24]
        spawn = (conv.agent_id is None and conv.done == SPAWN_TURN
                 and conv.index % SUBAGENT_EVERY == 0)
        if spawn:
            prompt = f"Investigate part {conv.index} of the code base: " + self._text(30)
            tool = {"type": "tool_use", "id": tool_id, "name": "Agent",
                    "input": {"description": "Explore the code", "prompt": prompt,
                              "subagent_type": "general-purpose"}}
            conv.pending_spawn = (tool_id, prompt)
        else:
            name = self.rng.choice(("Bash", "Read", "Edit", "Read", "Bash"))
            tool = {"type": "tool_use", "id": tool_id, "name": name,
                    "input": {"command": self._text(6)} if name == "Bash" else
                    {"file_path": f"/srv/project/src/{self._text(1)}.py"}}
        text = self._text(self.rng.randint(40, 120))
        message_id = "msg_" + uuid.UUID(int=self.rng.getrandbits(128)).hex[:24]
        cache_read = len(raw) // 4
        usage = {"input_tokens": self.rng.randint(3, 30), "cache_creation_input_tokens": 900,
                 "cache_read_input_tokens": cache_read,
                 "cache_creation": {"ephemeral_5m_input_tokens": 0,
                                    "ephemeral_1h_input_tokens": 900},
                 "output_tokens": len(text) // 4 + 40, "service_tier": "standard"}
        content = [{"type": "text", "text": text}, tool]
        response = {"id": message_id, "type": "message", "role": "assistant", "model": MODEL,
                    "content": content, "stop_reason": "tool_use", "stop_sequence": None,
                    "usage": usage}
        chunks = _events(response, text, tool, self.rng)
        x = self._exchange(conv, received, raw, MODEL, "inference", stream=True)
        x.response, x.usage, x.tool_uses = response, usage, [tool]
        x.chunks = chunks
        x.first_byte_ms, x.first_token_ms = 900.0 + self.rng.random() * 400, 1400.0
        self._complete(x, received, 1500 + 40 * len(chunks))
        # What the client sends next: the answer replayed, then the tool's result.
        result = self._file(self.rng.randint(25, 40))
        conv.messages = [*conv.messages, {"role": "assistant", "content": content},
                         {"role": "user", "content": [{"type": "tool_result",
                                                       "tool_use_id": tool_id,
                                                       "content": result}]}]
        conv.done += 1
        conv.last_id = self.last_streamed_id = x.id
        return x

    def _side(self, conv: Conversation, received: datetime) -> Exchange:
        """Claude Code's quota check before a session's first request (not streamed)."""
        raw = _dumps({"model": SIDE_MODEL, "max_tokens": 1,
                      "messages": [{"role": "user", "content": "quota"}],
                      "metadata": self.base["metadata"]})
        x = self._exchange(conv, received, raw, SIDE_MODEL, "quota", stream=False)
        usage = {"input_tokens": 8, "output_tokens": 1, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": 0, "service_tier": "standard"}
        x.response = {"id": "msg_" + uuid.UUID(int=self.rng.getrandbits(128)).hex[:24],
                      "type": "message", "role": "assistant", "model": SIDE_MODEL,
                      "content": [{"type": "text", "text": "#"}], "stop_reason": "max_tokens",
                      "stop_sequence": None, "usage": usage}
        x.usage = usage
        x.first_byte_ms = 350.0
        self._complete(x, received, 400.0)
        return x

    def _exchange(self, conv: Conversation, received: datetime, raw: bytes, model: str,
                  request_type: str, stream: bool) -> Exchange:
        x = Exchange(method="POST", path="/v1/messages", query="beta=true", domain=conv.domain,
                     publish=_ignore, kind=MESSAGES, received_at=received)
        x.id = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        x.account_id, x.auth_mode = conv.account, "domain_credential"
        x.client_addr, x.user_agent = "10.1.2.3", "claude-cli/2.1.197 (external, cli)"
        x.session_id, x.agent_id = conv.session_id, conv.agent_id
        x.request_headers = [
            ("Host", conv.domain), ("Accept", "application/json"),
            ("Content-Type", "application/json"),
            ("User-Agent", "claude-cli/2.1.197 (external, cli)"),
            ("X-Claude-Code-Session-Id", conv.session_id),
            ("X-Stainless-Lang", "js"), ("X-Stainless-Package-Version", "0.94.0"),
            ("X-Stainless-Retry-Count", "0"), ("X-Stainless-Timeout", "600"),
            ("anthropic-beta", "claude-code-20250219,context-1m-2025-08-07,"
                               "interleaved-thinking-2025-05-14"),
            ("anthropic-version", "2023-06-01"), ("x-app", "cli"),
            ("Authorization", "Bearer sk-ant-oat01-benchbenchbenchbenchbenchbench"),
            ("Content-Length", str(len(raw)))]
        if conv.agent_id:
            x.request_headers.append(("X-Claude-Code-Agent-Id", conv.agent_id))
        x.request_body, x.model, x.stream, x.request_type = raw, model, stream, request_type
        x.upstream_status = 200
        x.response_headers = [
            ("Content-Type", "text/event-stream" if stream else "application/json"),
            ("request-id", "req_" + uuid.UUID(int=self.rng.getrandbits(128)).hex[:24]),
            ("anthropic-organization-id", "4f6c9a2e-8b1d-4c7e-9f3a-2d5b8e1c6a90"),
            *self.ratelimit, ("via", "1.1 google"), ("cf-cache-status", "DYNAMIC"),
            ("Server", "cloudflare")]
        return x

    def _complete(self, x: Exchange, received: datetime, duration_ms: float) -> None:
        x.attempts = [Attempt(1, 0.4, duration_ms - 1.0, 200)]
        x.complete()
        x.completed_at = received + timedelta(milliseconds=duration_ms)
        x.duration_ms = duration_ms


def _ignore(event: Any) -> None:
    return None


def _events(message: dict, text: str, tool: dict, rng: random.Random) -> list[
        tuple[float, bytes]]:
    """The SSE events of the answer, with their offsets in ms, as the relay keeps them."""
    head = {**message, "content": [], "stop_reason": None,
            "usage": {**message["usage"], "output_tokens": 1}}
    events = [_sse("message_start", {"type": "message_start", "message": head}),
              _sse("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}}),
              _sse("ping", {"type": "ping"})]
    for start in range(0, len(text), 32):
        events.append(_sse("content_block_delta", {
            "type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": text[start:start + 32]}}))
    events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    events.append(_sse("content_block_start", {
        "type": "content_block_start", "index": 1,
        "content_block": {**tool, "input": {}}}))
    partial = json.dumps(tool["input"])
    for start in range(0, len(partial), 40):
        events.append(_sse("content_block_delta", {
            "type": "content_block_delta", "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": partial[start:start + 40]}}))
    events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": 1}))
    events.append(_sse("message_delta", {
        "type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {"output_tokens": message["usage"]["output_tokens"]}}))
    events.append(_sse("message_stop", {"type": "message_stop"}))
    at, out = 900.0, []
    for event in events:
        out.append((round(at, 3), event))
        at += rng.uniform(10, 60)
    return out


def _ratelimit_headers() -> list[tuple[str, str]]:
    """The subscription's unified rate-limit headers, as the real API sends them."""
    try:
        from tests.fakes.api_headers import unified_headers
    except ImportError:  # the bench run without the tests' fakes: the same names, by hand
        return [("anthropic-ratelimit-unified-status", "allowed"),
                ("anthropic-ratelimit-unified-5h-utilization", "0.12"),
                ("anthropic-ratelimit-unified-7d-utilization", "0.31")]
    return [(name, value) for name, value in unified_headers()]
