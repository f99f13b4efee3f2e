"""Fold Anthropic Messages stream events into the message a non-streaming call returns."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.proxy.sse import SSEEvent

_MAX_PROBLEMS = 100
_KNOWN_BLOCKS = frozenset({"text", "thinking", "redacted_thinking"})
# Fields a message_delta must not overwrite: they belong to the fold, not to the delta.
_RESERVED = frozenset({"type", "content", "usage"})
_STOP_FIELDS = ("stop_reason", "stop_sequence")
# delta type -> (field carrying the value, how it is applied, block type it belongs to)
_DELTAS = {
    "text_delta": ("text", "str", "text"),
    "thinking_delta": ("thinking", "str", "thinking"),
    "signature_delta": ("signature", "set", "thinking"),
    "input_json_delta": ("partial_json", "json", "tool_use"),
    "citations_delta": ("citation", "citation", "text"),
}


def _accepts(btype: str, target: str) -> bool:
    # A known delta only touches the block type it is defined for; an unknown block type
    # might legitimately take it, so it is given the benefit of the doubt.
    if btype in _KNOWN_BLOCKS or btype.endswith(("tool_use", "tool_result")):
        return btype.endswith("tool_use") if target == "tool_use" else btype == target
    return True


def _merge_usage(base: dict, update: dict) -> None:
    for key, value in update.items():
        if value is None:
            # Usage counts are cumulative; null means "not reported here", not "zero".
            base.setdefault(key, None)
        elif isinstance(value, dict):
            current = base.get(key)
            base[key] = {**current, **value} if isinstance(current, dict) else dict(value)
        else:
            base[key] = value


def _index(data: dict) -> int | None:
    index = data.get("index")
    if isinstance(index, int) and not isinstance(index, bool) and index >= 0:
        return index
    return None


class _Block:
    """Accumulation state of one content block; deltas are joined only when built."""

    __slots__ = ("block", "strs", "lists", "json_parts", "stopped")

    def __init__(self, block: dict, stopped: bool = False) -> None:
        self.block = block
        self.strs: dict[str, list[str]] = {}
        self.lists: dict[str, list] = {}
        self.json_parts: list[str] | None = None
        self.stopped = stopped

    def add_str(self, field: str, value: str) -> None:
        parts = self.strs.get(field)
        if parts is None:
            prev = self.block.get(field)
            parts = self.strs[field] = [prev] if isinstance(prev, str) and prev else []
        parts.append(value)

    def add_items(self, field: str, items: list) -> None:
        self.lists.setdefault(field, []).extend(items)

    def set_field(self, field: str, value: Any) -> None:
        # Copy on write: a message built earlier may share this dict.
        self.block = {**self.block, field: value}
        self.strs.pop(field, None)
        self.lists.pop(field, None)

    def build(self, report: Callable[[str], None] | None = None, index: int = 0) -> dict:
        if not self.strs and not self.lists and self.json_parts is None:
            return self.block
        out = dict(self.block)
        for field, parts in self.strs.items():
            out[field] = "".join(parts)
        for field, items in self.lists.items():
            prev = out.get(field)
            out[field] = prev + items if isinstance(prev, list) else list(items)
        if self.json_parts is not None:
            raw = "".join(self.json_parts)
            try:
                out["input"] = json.loads(raw) if raw.strip() else {}
            except (ValueError, RecursionError):
                out["input"] = {}
                out["_partial_json"] = raw
                if report is not None:
                    report(f"invalid tool input JSON in content block {index}")
        return out

    def stop(self, report: Callable[[str], None], index: int) -> None:
        self.block = self.build(report, index)
        self.strs, self.lists, self.json_parts = {}, {}, None
        self.stopped = True


class MessageFolder:
    """Folds decoded Anthropic SSE events into the message a non-streaming call would return."""

    def __init__(self) -> None:
        self._start: dict | None = None
        self._fields: dict[str, Any] = {}
        self._blocks: dict[int, _Block] = {}
        self._built: dict | None = None
        self._seen_unknown: set[str] = set()
        self.usage: dict = {}
        self.stop_reason: str | None = None
        self.complete = False
        self.error: dict | None = None
        self.first_content_ms: float | None = None
        self.event_count = 0
        self.problems: list[str] = []

    @property
    def message(self) -> dict | None:
        """The message folded so far (open blocks included), or None before message_start."""
        if self._start is None:
            return None
        if self._built is None:  # cached until the next feed: callers read it repeatedly
            msg = {**self._start, **self._fields, "content": self._content()}
            msg.setdefault("type", "message")
            for key in _STOP_FIELDS:
                msg.setdefault(key, None)
            msg["usage"] = {k: dict(v) if isinstance(v, dict) else v for k, v in self.usage.items()}
            self._built = msg
        return self._built

    @property
    def tool_uses(self) -> list[dict]:
        """The tool_use blocks so far, as ``{"id", "name", "input"}`` in content order."""
        msg = self.message
        content = msg["content"] if msg is not None else self._content()
        keys = ("id", "name", "input")
        return [{k: b.get(k) for k in keys} for b in content if b.get("type") == "tool_use"]

    def feed(self, event: SSEEvent, at_ms: float | None = None) -> None:
        """Apply one decoded event; anything wrong is recorded in ``problems``."""
        self.event_count += 1
        self._built = None
        try:
            self._feed(event, at_ms)
        except Exception as exc:  # a folding bug must never break the relay
            self._problem(f"internal error folding event: {type(exc).__name__}: {exc}")

    def _feed(self, event: SSEEvent, at_ms: float | None) -> None:
        name = event.event
        try:
            data = json.loads(event.data)
        except (ValueError, RecursionError):
            self._problem(f"invalid JSON in {name or 'unnamed'} event")
            return
        if not isinstance(data, dict):
            self._problem(f"{name or 'unnamed'} event data is not a JSON object")
            return
        etype = data.get("type")
        if not isinstance(etype, str):
            etype = name
        elif name is not None and name != etype:
            self._problem(f"event name {name!r} does not match data type {etype!r}")
        if etype == "ping":
            return
        handler = _HANDLERS.get(etype or "")
        if handler is None:
            self._problem(f"unknown event type {etype!r}", once=True)
            return
        if self.complete:
            self._problem(f"{etype} after message_stop")
        handler(self, data, at_ms)

    def _problem(self, text: str, once: bool = False) -> None:
        if once:
            if text in self._seen_unknown:
                return
            self._seen_unknown.add(text)
        # Bounded so that a garbage stream cannot grow memory without limit.
        if len(self.problems) < _MAX_PROBLEMS:
            self.problems.append(text)
        elif len(self.problems) == _MAX_PROBLEMS:
            self.problems.append("further problems not recorded")

    def _content(self) -> list[dict]:
        return [self._blocks[i].build() for i in sorted(self._blocks)]

    def _open_block(self, data: dict, etype: str) -> tuple[int, _Block] | None:
        index = _index(data)
        state = self._blocks.get(index) if index is not None else None
        if state is None or state.stopped:
            why = "unknown content block" if state is None else "stopped content block"
            self._problem(f"{etype} for {why} index {data.get('index')!r}")
            return None
        return index, state

    def _on_message_start(self, data: dict, at_ms: float | None) -> None:
        msg = data.get("message")
        if not isinstance(msg, dict) or self._start is not None:
            dup = self._start is not None
            self._problem("duplicate message_start" if dup else "malformed message_start")
            return
        self._start = msg
        if isinstance(msg.get("usage"), dict):
            _merge_usage(self.usage, msg["usage"])
        reason = msg.get("stop_reason")
        self.stop_reason = reason if isinstance(reason, str) else None
        content = msg.get("content")
        for i, block in enumerate(content if isinstance(content, list) else ()):
            if isinstance(block, dict) and i not in self._blocks:
                self._blocks[i] = _Block(block, stopped=True)

    def _on_block_start(self, data: dict, at_ms: float | None) -> None:
        index = _index(data)
        block = data.get("content_block")
        if index is None or not isinstance(block, dict):
            self._problem(f"malformed content_block_start at index {data.get('index')!r}")
            return
        if self._start is None:
            self._problem("content_block_start before message_start")
        if index in self._blocks:
            self._problem(f"duplicate content_block_start for index {index}")
        elif index != len(self._blocks):
            self._problem(f"content_block_start index {index}, expected {len(self._blocks)}")
        if not isinstance(block.get("type"), str):
            block = {**block, "type": ""}
        self._blocks[index] = _Block(block)

    def _on_block_delta(self, data: dict, at_ms: float | None) -> None:
        if self.first_content_ms is None and at_ms is not None:
            self.first_content_ms = at_ms
        found = self._open_block(data, "content_block_delta")
        if found is None:
            return
        index, state = found
        delta = data.get("delta")
        dtype = delta.get("type") if isinstance(delta, dict) else None
        if not isinstance(dtype, str):
            self._problem(f"content_block_delta without a delta type for block {index}")
            return
        spec = _DELTAS.get(dtype)
        if spec is None:
            self._problem(f"unknown delta type {dtype!r} applied generically", once=True)
            self._apply_generic(state, delta, index)
            return
        key, kind, target = spec
        btype = state.block["type"]
        value = delta.get(key)
        if not _accepts(btype, target):
            self._problem(f"{dtype} for {btype} block {index} ignored")
        elif kind == "citation" and value is not None:
            state.add_items("citations", [value])
        elif not isinstance(value, str):
            self._problem(f"{dtype} for block {index} lacks a usable {key!r}")
        elif kind == "json":
            if state.json_parts is None:
                state.json_parts = []
            state.json_parts.append(value)
        elif kind == "set":
            state.set_field(key, value)
        else:
            state.add_str(key, value)

    def _apply_generic(self, state: _Block, delta: dict, index: int) -> None:
        # Strings append and lists extend (the shapes the known deltas use); any other
        # value replaces, as signature_delta does. Mismatched shapes are left alone.
        for key, value in delta.items():
            current = state.block.get(key)
            if key == "type":
                continue
            if isinstance(value, str) and (current is None or isinstance(current, str)):
                state.add_str(key, value)
            elif isinstance(value, list) and (current is None or isinstance(current, list)):
                state.add_items(key, value)
            elif isinstance(value, (str, list)):
                self._problem(f"delta field {key!r} does not fit block {index}; ignored")
            else:
                state.set_field(key, value)

    def _on_block_stop(self, data: dict, at_ms: float | None) -> None:
        found = self._open_block(data, "content_block_stop")
        if found is not None:
            found[1].stop(self._problem, found[0])

    def _on_message_delta(self, data: dict, at_ms: float | None) -> None:
        delta = data.get("delta")
        if not isinstance(delta, dict):
            self._problem("message_delta without a delta object")
            delta = {}
        for key, value in delta.items():
            # stop_* always carry the final value; other fields only count when given.
            if key in _STOP_FIELDS or (value is not None and key not in _RESERVED):
                self._fields[key] = value
        if "stop_reason" in delta:
            reason = delta["stop_reason"]
            self.stop_reason = reason if isinstance(reason, str) else None
        if isinstance(data.get("usage"), dict):
            _merge_usage(self.usage, data["usage"])

    def _on_message_stop(self, data: dict, at_ms: float | None) -> None:
        self.complete = True

    def _on_error(self, data: dict, at_ms: float | None) -> None:
        error = data.get("error")
        if not isinstance(error, dict):
            self._problem("error event without an error object")
            error = {"type": "error", "message": "" if error is None else str(error)}
        self.error = error


_HANDLERS = {
    "message_start": MessageFolder._on_message_start,
    "content_block_start": MessageFolder._on_block_start,
    "content_block_delta": MessageFolder._on_block_delta,
    "content_block_stop": MessageFolder._on_block_stop,
    "message_delta": MessageFolder._on_message_delta,
    "message_stop": MessageFolder._on_message_stop,
    "error": MessageFolder._on_error,
}
