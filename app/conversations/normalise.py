"""What the conversation hashes see (CONVERSATIONS.md "Normalisation"): a request body reduced
to a `Shape` — chained hashes of its normalised history and of each prefix a parent may have
sent, the hash of its normalised system prompt, and the markers of sub-agents and compaction.

Pure and standard library only; it runs on the batch writer for every stored request, so it is
linear in the size of the body (each prefix hash costs one more sha256 over two digests:
h_i = sha256(h_{i-1} || sha256(canonical(message_i)))). Bodies come from arbitrary clients:
nothing here raises; what cannot be read is "no information".

Normalisation, in short: string content equals one text block; `<system-reminder>` sections are
cut out of every text (content, text blocks, tool_result content) and the text is stripped of
surrounding whitespace; blocks empty afterwards are dropped, and so are messages; thinking,
redacted_thinking, cache_control, citations, is_error and `role: "system"` entries are ignored;
tool_use keeps name, id and canonical JSON input; tool_result keeps tool_use_id and its
normalised content; images and documents keep their media type and a hash of their data; a
tool_use id (or tool_result tool_use_id) seen earlier in the history drops the repeated block.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from app.conversations.system_prompt import cut_reminders, normalised_system

SUBAGENT_TOOLS = frozenset({"Task", "Agent"})
SUMMARY_KEY_CHARS = 2000
COMPACTION_PHRASE = "detailed summary of the conversation so far"
CONTINUATION_PREFIX = "this session is being continued from a previous conversation"

_SEED = hashlib.sha256(b"nexus-conversation-v1").digest()
_IGNORED_KEYS = frozenset({"cache_control", "citations", "is_error"})
_DROPPED_TYPES = frozenset({"thinking", "redacted_thinking"})
_MEDIA_TYPES = frozenset({"image", "document"})

_SUMMARY_LINE = re.compile(r"^[ \t]*summary:[ \t]*", re.IGNORECASE | re.MULTILINE)
_SUMMARY_TRAILER = re.compile(
    r"^[ \t]*(?:If you need specific details from before compaction"
    r"|Please continue the conversation from where we left"
    r"|Continue the conversation from where it left off)",
    re.IGNORECASE | re.MULTILINE)

T = TypeVar("T")

# One encoder for every canonical form (json.dumps with options builds one per call).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              default=repr)


@dataclass(frozen=True)
class Shape:
    """What linking needs of one request body."""

    message_count: int                 # user + assistant entries of `messages`
    current_hash: str | None           # the whole normalised history; None without a message
    parent_hash: str | None            # the history before the last assistant message
    ancestor_hashes: tuple[str, ...]   # the history before each assistant message, last first
    last_assistant_hash: str | None    # response_hash() of the last assistant message
    system_hash: str | None            # the normalised system prompt
    single_user_text: str | None       # the text of a history of one user message
    compaction_summary: str | None     # the summary a compaction continuation carries
    is_compaction_request: bool        # the last user message asks for a summary
    is_subagent_marked: bool           # `cc_is_subagent=true` in the billing system block


EMPTY = Shape(0, None, None, (), None, None, None, None, False, False)


def _never_raises(default: Callable[[], T]) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Any error (a body of unexpected shape, nesting too deep) gives `default()`."""
    def wrap(function: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(function)
        def safe(*args: Any) -> T:
            try:
                return function(*args)
            except Exception:  # arbitrary client input must never break a write
                return default()
        return safe
    return wrap


# ------------------------------------------------------------------------------ public API


@_never_raises(lambda: EMPTY)
def shape(body: Any) -> Shape:
    """The Shape of a Messages request body (any value: what is unreadable counts as absent)."""
    if not isinstance(body, dict):
        return EMPTY
    raw = body.get("messages")
    raw = raw if isinstance(raw, list) else []
    entries = [m for m in raw
               if isinstance(m, dict) and m.get("role") in ("user", "assistant")]
    history = _history(entries)

    state = _SEED
    current = None
    ancestors: list[str] = []
    last_assistant: dict | None = None
    for message, blocks in history:
        if message.get("role") == "assistant":
            if current is not None:
                ancestors.append(current)
            last_assistant = message
        state = hashlib.sha256(state + _digest(message.get("role"), blocks)).digest()
        current = state.hex()
    ancestors.reverse()

    user_blocks = [blocks for message, blocks in history if message.get("role") == "user"]
    single = None
    if len(history) == 1 and history[0][0].get("role") == "user":
        texts = [b[1] for b in history[0][1] if b[0] == "text"]
        single = "\n".join(texts) if texts else None
    system_texts, marked = normalised_system(body.get("system"))
    return Shape(
        message_count=len(entries),
        current_hash=current,
        parent_hash=ancestors[0] if ancestors else None,
        ancestor_hashes=tuple(ancestors),
        last_assistant_hash=response_hash(last_assistant) if last_assistant else None,
        system_hash=_hash_json(system_texts) if system_texts else None,
        single_user_text=single,
        compaction_summary=_compaction_summary(user_blocks[0]) if user_blocks else None,
        is_compaction_request=bool(user_blocks) and any(
            b[0] == "text" and COMPACTION_PHRASE in b[1].lower() for b in user_blocks[-1]),
        is_subagent_marked=marked,
    )


@_never_raises(lambda: None)
def response_hash(message: Any) -> str | None:
    """The hash of an answer (an assistant message as the proxy records it, or its content
    list), equal to `Shape.last_assistant_hash` of a later request replaying it. None when
    nothing of it survives normalisation (or it is not an assistant message)."""
    if isinstance(message, dict):
        if message.get("role", "assistant") != "assistant":
            return None
        content = message.get("content")
    elif isinstance(message, list):
        content = message
    else:
        return None
    blocks = _blocks(content, None, None)
    return _digest("assistant", blocks).hex() if blocks else None


@_never_raises(list)
def spawned_prompts(message: Any) -> list[tuple[str, str]]:
    """(tool_use id, prompt) of every `Task` / `Agent` tool_use of an answer, in order."""
    content = message.get("content") if isinstance(message, dict) else message
    found = []
    for block in content if isinstance(content, list) else ():
        # isinstance first: a list or dict name is unhashable, and one such block must not
        # cost the answer's other sub-agent prompts.
        if (isinstance(block, dict) and block.get("type") == "tool_use"
                and isinstance(block.get("name"), str) and block["name"] in SUBAGENT_TOOLS):
            tool_input = block.get("input")
            prompt = tool_input.get("prompt") if isinstance(tool_input, dict) else None
            if isinstance(prompt, str):
                tool_id = block.get("id")
                found.append((tool_id if isinstance(tool_id, str) else "", prompt))
    return found


@_never_raises(lambda: hashlib.sha256(b"").hexdigest())
def text_hash(text: str) -> str:
    """The hash of a prompt or of `Shape.single_user_text`, after text normalisation
    (reminders cut, surrounding whitespace stripped). A non-string counts as ""."""
    return hashlib.sha256(_encode(_text(text) if isinstance(text, str) else "")).hexdigest()


@_never_raises(str)
def summary_key(text: str) -> str:
    """A comparable form of a compaction summary, for the continuation's summary and for the
    text of the summarisation answer alike: its summary section (after a `<summary>` tag, or
    after the `Summary:` line that follows an `Analysis:` section), lower-cased, whitespace
    collapsed, `<analysis>`/`<summary>` tags as `analysis:`/`summary:`, the first 2,000
    characters, without trailing dots (Claude Code once appended one)."""
    if not isinstance(text, str):
        return ""
    low = cut_reminders(text).lower()
    start = low.find("<summary>")
    if start >= 0:
        low = low[start + len("<summary>"):]
        end = low.find("</summary>")
        low = low[:end] if end >= 0 else low
    elif low.lstrip().startswith(("<analysis>", "analysis:")):
        found = _SUMMARY_LINE.search(low)
        low = low[found.end():] if found else low
    for tag, mark in (("<analysis>", " analysis: "), ("</analysis>", " "),
                      ("<summary>", " summary: "), ("</summary>", " ")):
        low = low.replace(tag, mark)
    return " ".join(low.split())[:SUMMARY_KEY_CHARS].rstrip(" .")


# ------------------------------------------------------------------------------ history


def _history(entries: list[dict]) -> list[tuple[dict, list]]:
    """The normalised messages (each with its canonical blocks), empty ones dropped; tool ids
    seen earlier in the history drop the repeated block."""
    seen_uses: set[str] = set()
    seen_results: set[str] = set()
    history = []
    for message in entries:
        blocks = _blocks(message.get("content"), seen_uses, seen_results)
        if blocks:
            history.append((message, blocks))
    return history


def _blocks(content: Any, seen_uses: set[str] | None, seen_results: set[str] | None,
            nested: bool = False) -> list:
    """The canonical blocks of one message's content (lists, JSON-ready). With the `seen`
    sets, tool ids met before drop their block, and the sets are updated. `nested`: the
    content of a tool_result, where tool blocks are kept whole (no deeper recursion)."""
    if isinstance(content, str):
        text = _text(content)
        return [["text", text]] if text else []
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        return []
    out = []
    for block in content:
        if isinstance(block, str):
            block = {"type": "text", "text": block}
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if not isinstance(kind, str):  # unhashable in the set tests below: an unknown block
            kind = None
        if kind in _DROPPED_TYPES:
            continue
        if kind == "text":
            text = _text(block.get("text"))
            if text:
                out.append(["text", text])
        elif kind == "tool_use" and not nested:
            tool_id = _str(block.get("id"))
            if seen_uses is not None:
                if tool_id and tool_id in seen_uses:
                    continue
                seen_uses.add(tool_id)
            out.append(["tool_use", _str(block.get("name")), tool_id,
                        _canonical(block.get("input"))])
        elif kind == "tool_result" and not nested:
            tool_id = _str(block.get("tool_use_id"))
            if seen_results is not None:
                if tool_id and tool_id in seen_results:
                    continue
                seen_results.add(tool_id)
            out.append(["tool_result", tool_id, _blocks(block.get("content"), None, None, True)])
        elif kind in _MEDIA_TYPES:
            out.append(_media(kind, block.get("source")))
        else:  # server tools, search results, …: kept whole, minus what never counts
            out.append(["block", _canonical(
                {k: v for k, v in block.items() if k not in _IGNORED_KEYS})])
    return out


def _media(kind: str, source: Any) -> list:
    """An image or document: its media type and the hash of its data (or of its reference)."""
    if not isinstance(source, dict):
        return [kind, "", "", _sha_hex(_canonical(source))]
    for field in ("data", "url", "file_id"):
        value = source.get(field)
        if isinstance(value, str):
            return [kind, _str(source.get("media_type")), field, _sha_hex(value)]
    rest = {k: v for k, v in source.items() if k not in _IGNORED_KEYS}
    return [kind, _str(source.get("media_type")), "source", _sha_hex(_canonical(rest))]


def _compaction_summary(blocks: list) -> str | None:
    """The summary of a compaction continuation's first user message: the text after its
    `Summary:` line (or after the heading line), without Claude Code's closing instructions."""
    for block in blocks:
        if block[0] != "text" or not block[1].lower().startswith(CONTINUATION_PREFIX):
            continue
        text = block[1]
        found = _SUMMARY_LINE.search(text)
        if found:
            text = text[found.end():]
        else:
            newline = text.find("\n")
            text = text[newline + 1:] if newline >= 0 else ""
        trailer = _SUMMARY_TRAILER.search(text)
        return (text[:trailer.start()] if trailer else text).strip()
    return None


# ------------------------------------------------------------------------------ primitives


def _text(value: Any) -> str:
    """A normalised text: reminders cut, surrounding whitespace stripped ("" when no str)."""
    return cut_reminders(value).strip() if isinstance(value, str) else ""


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _canonical(value: Any) -> str:
    """Canonical JSON (sorted keys, compact, unicode kept); a marker when it cannot be had
    (nesting too deep, cycles): such values are "no information"."""
    try:
        return _CANONICAL.encode(value)
    except (RecursionError, ValueError, TypeError):
        return f"<unserialisable {type(value).__name__}>"


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # lone surrogates survive json.loads


def _sha_hex(text: str) -> str:
    return hashlib.sha256(_encode(text)).hexdigest()


def _hash_json(value: Any) -> str:
    return _sha_hex(_canonical(value))


def _digest(role: Any, blocks: list) -> bytes:
    """sha256 of one normalised message (its blocks are shallow: tool input is already text)."""
    return hashlib.sha256(_encode(_canonical([role, blocks]))).digest()
