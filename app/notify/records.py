"""What a notification is about, as small records taken from events on the request path.

A subscriber must not hold on to an Exchange (its bodies can be megabytes, and a thousand of
them may wait for Slack), so the few fields a message needs are copied out here: bounded texts,
secrets already masked. Pure: no Flask, no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.events import ExchangeCompleted, ExchangeEnded, ExchangeFailed
from app.proxy.exchange import MESSAGES, Exchange
from app.redact import mask_text

# Texts are cut here already (messages.py cuts them again to fit Slack's blocks): the margin
# past the cut lets mask_text see a whole key before it is shortened.
ERROR_CAPTURE = 2000
DIGEST_CAPTURE = 4000
_MASK_MARGIN = 256
TIMEOUT_STATUS = 504
_REMINDER = re.compile(r"<system-reminder>.*?(</system-reminder>|$)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class UpstreamProblem:
    """An upstream error or timeout (or the proxy's own 5xx) one client received."""

    request_id: str
    domain: str
    account_id: str | None
    model: str | None
    status: int | None
    error_type: str | None
    error_message: str | None
    method: str
    path: str
    received_at: datetime
    duration_ms: float | None
    attempts: int

    @property
    def timeout(self) -> bool:
        return self.status == TIMEOUT_STATUS or self.error_type == "timeout_error"


@dataclass(frozen=True, slots=True)
class Digest:
    """One inference request's prompt and reply, for the optional conversation digest."""

    request_id: str
    domain: str
    account_id: str | None
    model: str | None
    prompt: str
    reply: str
    usage: dict[str, Any] | None
    received_at: datetime
    duration_ms: float | None


def is_upstream_trouble(event: ExchangeEnded) -> bool:
    """Upstream errors and timeouts: a 5xx or 429 answer (the upstream's or the proxy's own),
    or an answer that broke off mid-way. Client errors (other 4xx) and hang-ups are not."""
    if not isinstance(event, ExchangeCompleted | ExchangeFailed):
        return False
    x = event.exchange
    status = x.status if isinstance(x.status, int) else None
    if status is not None and (status >= 500 or status == 429):
        return True
    # Failed after a 2xx had started flowing: the upstream broke off (or sent `event: error`).
    return isinstance(event, ExchangeFailed) and x.upstream_status is not None \
        and 200 <= x.upstream_status < 300


def wants_digest(event: ExchangeEnded) -> bool:
    """An inference request of the Messages API answered in full with a 200."""
    x = event.exchange
    return isinstance(event, ExchangeCompleted) and x.kind == MESSAGES and x.status == 200 \
        and x.request_type == "inference"


def upstream_problem(x: Exchange) -> UpstreamProblem:
    return UpstreamProblem(
        request_id=x.id, domain=x.domain, account_id=x.account_id, model=x.model,
        status=x.status if isinstance(x.status, int) else None,
        error_type=_short(x.error_type, 100), error_message=_capture(x.error_message,
                                                                     ERROR_CAPTURE),
        method=x.method, path=_short(x.path, 200) or "", received_at=x.received_at,
        duration_ms=x.duration_ms, attempts=len(x.attempts))


def digest(x: Exchange) -> Digest:
    return Digest(
        request_id=x.id, domain=x.domain, account_id=x.account_id, model=x.model,
        prompt=_capture(last_user_text(x.request_json), DIGEST_CAPTURE) or "",
        reply=_capture(reply_text(x.response), DIGEST_CAPTURE) or "",
        usage=dict(x.usage) if isinstance(x.usage, dict) else None,
        received_at=x.received_at, duration_ms=x.duration_ms)


def last_user_text(body: Any) -> str:
    """The text of the last user message, without Claude Code's `<system-reminder>`s; a turn
    of tool results only says so."""
    messages = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if not (isinstance(message, dict) and message.get("role") == "user"):
            continue
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            return ""
        texts, results = [], 0
        for block in blocks:
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(block.get("text"), str):
                text = _REMINDER.sub("", block["text"]).strip()
                if text:
                    texts.append(text)
            elif block.get("type") == "tool_result":
                results += 1
        if texts:
            return "\n\n".join(texts)
        return f"({results} tool result{'s' if results != 1 else ''})" if results else ""
    return ""


def reply_text(message: Any) -> str:
    """The assistant's text, with a `[tool: name]` line per tool call."""
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return ""
    parts = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" and isinstance(block.get("text"), str):
            parts.append(block["text"].strip())
        elif block.get("type") in ("tool_use", "server_tool_use"):
            parts.append(f"[tool: {block.get('name')}]")
    return "\n\n".join(p for p in parts if p)


def _capture(text: str | None, limit: int) -> str | None:
    if text is None:
        return None
    text = str(text)
    if len(text) <= limit:
        return mask_text(text)
    return mask_text(text[: limit + _MASK_MARGIN])[:limit] + "…"


def _short(text: str | None, limit: int) -> str | None:
    return None if text is None else mask_text(str(text)[:limit])
