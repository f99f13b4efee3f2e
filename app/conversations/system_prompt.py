"""The system prompt as conversation tracking sees it: its text without the parts that change
between requests of one session (the billing header, git status, dates, the model line,
`<system-reminder>` sections), and whether its billing line marks a sub-agent.

Pure; used by app/conversations/normalise.py.
"""

from __future__ import annotations

import functools
import re
from typing import Any

REMINDER_OPEN, REMINDER_CLOSE = "<system-reminder>", "</system-reminder>"
BILLING_PREFIX = "x-anthropic-billing-header:"

_SUBAGENT_MARK = re.compile(r"\bcc_is_subagent\s*=\s*true\b", re.IGNORECASE)
# System prompt lines that change between requests of one session.
_VOLATILE_LINE = re.compile(
    r"^\s*(?:[-*]\s+)?(?:current branch:|main branch\b|today['\u2019]s date\b|current date\b"
    r"|you are powered by the model\b)", re.IGNORECASE)
_GIT_STATUS = re.compile(r"^\s*gitstatus:", re.IGNORECASE)
_RECENT_COMMITS = re.compile(r"^\s*recent commits:", re.IGNORECASE)


def normalised_system(system: Any) -> tuple[list[str], bool]:
    """The normalised texts of a system prompt (a string or a list of blocks), and whether its
    billing block marks a sub-agent."""
    if isinstance(system, str):
        parts = [system]
    elif isinstance(system, list):
        parts = [b.get("text") if isinstance(b, dict) else b for b in system]
        parts = [p for p in parts if isinstance(p, str)]
    else:
        return [], False
    marked = False
    texts = []
    for part in parts:
        text, part_marked = _system_part(part)
        marked = marked or part_marked
        if text:
            texts.append(text)
    return texts, marked


# A session sends the same system prompt (10-20 KB) with every request: its normalised text is
# kept for the prompts seen last rather than worked out line by line each time.
@functools.lru_cache(maxsize=64)
def _system_part(part: str) -> tuple[str, bool]:
    """One system text normalised, and whether its billing line marks a sub-agent."""
    marked = any(line.lstrip().lower().startswith(BILLING_PREFIX)
                 and _SUBAGENT_MARK.search(line) for line in part.splitlines())
    return _system_text(part), marked


def _system_text(text: str) -> str:
    """A system text without its volatile parts: the billing header, the gitStatus section
    (branch lines, status, recent commits), date lines, the model line and reminders."""
    lines = cut_reminders(text).splitlines()
    kept: list[str] = []
    skipping = None   # "git": inside gitStatus; "commits": inside a Recent commits: list
    for line in lines:
        blank = not line.strip()
        if skipping == "commits":
            if not blank:
                continue
            skipping = None
        elif skipping == "git":
            if _RECENT_COMMITS.match(line):
                skipping = "commits"
            continue
        if _GIT_STATUS.match(line):
            skipping = "git"
        elif _RECENT_COMMITS.match(line):
            skipping = "commits"
        elif not (_VOLATILE_LINE.match(line) or line.lstrip().lower().startswith(BILLING_PREFIX)):
            kept.append(line)
    return "\n".join(kept).strip()


def cut_reminders(text: str) -> str:
    """`text` without its `<system-reminder>…</system-reminder>` sections (an unclosed one is
    kept). Linear: one scan with str.find."""
    start = text.find(REMINDER_OPEN)
    if start < 0:
        return text
    parts, pos = [], 0
    while start >= 0:
        end = text.find(REMINDER_CLOSE, start + len(REMINDER_OPEN))
        if end < 0:
            break
        parts.append(text[pos:start])
        pos = end + len(REMINDER_CLOSE)
        start = text.find(REMINDER_OPEN, pos)
    parts.append(text[pos:])
    return "".join(parts)
