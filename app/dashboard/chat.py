"""A request's conversation as the detail page shows it: the system prompt, the messages (the
earlier ones folded) and the answer, as turns of typed parts. Pure: parsed bodies in."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, fields
from typing import Any

TEXT_LIMIT = 20_000        # characters of one text shown in the chat
TAIL_MESSAGES = 6          # messages shown open; earlier ones fold into one <details>
FOLD_SYSTEM_CHARS = 600    # system entries among the messages longer than this start closed



@dataclass
class Part:
    """One content block as shown: `kind` picks its look in `_chat.html`."""

    kind: str                       # text thinking redacted_thinking tool_use tool_result
                                    # image document error other
    text: str = ""
    omitted: int = 0                # characters of `text` left out
    name: str = ""                  # a tool's name; an image's media type
    ref: str = ""                   # tool_use id / tool_result's tool_use_id
    code: str = ""                  # pretty JSON: a tool's input, an unknown block
    is_error: bool = False
    parts: list[Part] = field(default_factory=list)   # a tool_result's content

    def __post_init__(self) -> None:
        _mend_strings(self)


@dataclass
class Turn:
    """A message of the conversation, the system prompt, or the answer."""

    role: str                       # system user assistant answer other
    parts: list[Part]
    label: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        _mend_strings(self)

    @property
    def folded(self) -> bool:
        """A long system entry is shown closed (Claude Code puts whole manuals there)."""
        return self.role == "system" and self.size > FOLD_SYSTEM_CHARS

    @property
    def size(self) -> int:
        return sum(len(part.text) + part.omitted for part in self.parts)


@dataclass
class Chat:
    system: Turn | None
    earlier: list[Turn]             # folded away: what previous requests already showed
    recent: list[Turn]
    answer: Turn | None


def build_chat(body: dict[str, Any], answer: Any) -> Chat:
    """The request body's system prompt and messages, and the answer when it is a message."""
    names: dict[str, str] = {}      # tool_use id -> tool name, for the tool_results
    system = _system_turn(body.get("system"))
    messages = body.get("messages") if isinstance(body.get("messages"), list) else []
    turns = [_message_turn(message, names) for message in messages]
    answer_turn = None
    if isinstance(answer, dict) and answer.get("type") == "message":
        parts = _parts(answer.get("content"), names)
        note = " · ".join(str(item) for item in (answer.get("model"), _stop(answer)) if item)
        answer_turn = Turn("answer", parts, "Answer", note)
    cut = max(len(turns) - TAIL_MESSAGES, 0)
    if cut == 1:  # folding one message away hides more than it saves
        cut = 0
    return Chat(system, turns[:cut], turns[cut:], answer_turn)


def _system_turn(system: Any) -> Turn | None:
    if isinstance(system, str) and system:
        return Turn("system", [_text_part("text", system)], "System")
    if isinstance(system, list) and system:
        return Turn("system", _parts(system, {}), "System")
    return None


def _message_turn(message: Any, names: dict[str, str]) -> Turn:
    if not isinstance(message, dict):
        return Turn("other", [_other(message)], "Message")
    role = message.get("role")
    role = role if role in ("user", "assistant", "system") else "other"
    label = {"user": "User", "assistant": "Assistant", "system": "System"}.get(
        role, str(message.get("role") or "Message"))
    return Turn(role, _parts(message.get("content"), names), label)


def _parts(content: Any, names: dict[str, str]) -> list[Part]:
    if isinstance(content, str):
        return [_text_part("text", content)]
    if not isinstance(content, list):
        return [] if content is None else [_other(content)]
    return [_part(block, names) for block in content]


def _part(block: Any, names: dict[str, str]) -> Part:
    if not isinstance(block, dict):
        return _text_part("text", block) if isinstance(block, str) else _other(block)
    kind = block.get("type")
    if kind == "text":
        return _text_part("text", block.get("text"))
    if kind == "thinking":
        return _text_part("thinking", block.get("thinking"))
    if kind == "redacted_thinking":
        return Part("redacted_thinking")
    if kind in ("tool_use", "server_tool_use", "mcp_tool_use"):
        ref = str(block.get("id") or "")
        name = str(block.get("name") or "?")
        if ref:
            names[ref] = name
        return Part("tool_use", name=name, ref=ref, code=pretty(block.get("input")))
    if kind == "tool_result" or (isinstance(kind, str) and kind.endswith("_tool_result")):
        ref = str(block.get("tool_use_id") or "")
        return Part("tool_result", name=names.get(ref, "" if kind == "tool_result" else kind),
                    ref=ref, is_error=bool(block.get("is_error")),
                    parts=_parts(block.get("content"), names))
    if kind in ("image", "document"):
        return Part(kind, text=_media_note(block))
    return _other(block)


def _text_part(kind: str, text: Any) -> Part:
    text = text if isinstance(text, str) else json.dumps(text, ensure_ascii=False)
    if len(text) > TEXT_LIMIT:
        return Part(kind, text=text[:TEXT_LIMIT], omitted=len(text) - TEXT_LIMIT)
    return Part(kind, text=text)


def _other(block: Any) -> Part:
    name = block.get("type", "") if isinstance(block, dict) else type(block).__name__
    return Part("other", name=str(name), code=pretty(block))


def _media_note(block: dict[str, Any]) -> str:
    """`image/png · 12.3 KB` for inline data, the URL or file id otherwise: never the data."""
    source = block.get("source") if isinstance(block.get("source"), dict) else {}
    kind = source.get("type")
    media = source.get("media_type") or ""
    if kind == "base64" and isinstance(source.get("data"), str):
        size = len(source["data"]) * 3 // 4
        return " · ".join(item for item in (media, byte_size(size)) if item)
    if kind == "url":
        return f"{media} {source.get('url', '')}".strip()
    if kind == "file":
        return f"file {source.get('file_id', '')}"
    if kind == "text":
        return f"{media or 'text'} · {byte_size(len(str(source.get('data', ''))))}"
    title = block.get("title")
    return " · ".join(str(item) for item in (media, kind, title) if item)


def _stop(answer: dict[str, Any]) -> str:
    reason = answer.get("stop_reason")
    return f"stop: {reason}" if reason else ""




def pretty(value: Any) -> str:
    """JSON for people: indented, non-ASCII kept."""
    return mend(json.dumps(value, indent=2, ensure_ascii=False, default=str))


# A lone surrogate is valid in JSON ("\\ud800") but cannot be encoded as UTF-8: one in a
# page would make rendering fail. It is shown as the escape the client sent.
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def mend(text: str) -> str:
    """`text` with each lone surrogate written as its JSON escape, so the page can be sent."""
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _mend_strings(item: Any) -> None:
    for spec in fields(item):
        value = getattr(item, spec.name)
        if isinstance(value, str):
            setattr(item, spec.name, mend(value))


def byte_size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KB"
    return f"{count / 1024 / 1024:.1f} MB"
