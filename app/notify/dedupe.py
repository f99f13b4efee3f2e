"""De-duplication of identical alerts: at most one message per alert per 10 minutes.

The rule: the first alert of a kind is sent at once and opens a 10-minute window. Identical
alerts inside the window are only counted. When the window ends, if any were counted, one
follow-up goes out — the latest of them, saying "N more like this since <first>" — and a new
window opens from then; a window that ends with no repeats simply closes, and the next such
alert is sent at once again. So a storm gives one message at its start and one per 10 minutes
while it lasts (each with its count), and every repeat is accounted for.

Identical means the same key: upstream errors by domain, account, status and error type; OAuth
refresh failures by domain and account; quota alerts by their own `key` (account, kind, level
and window). Digests have no key and are never de-duplicated. Pure: the caller passes the time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.events import OAuthRefreshFailed, UsageAlert
from app.notify.records import UpstreamProblem

WINDOW = timedelta(minutes=10)
MAX_KEYS = 10000  # open windows kept; past it the oldest is forgotten (its count with it)


@dataclass(frozen=True, slots=True)
class Repeats:
    """`count` identical alerts were held back since `since` (when the last message went)."""

    count: int
    since: datetime


@dataclass(slots=True)
class _Window:
    opened: datetime
    count: int = 0
    latest: Any = None


def dedupe_key(record: Any) -> tuple | None:
    """What makes two alerts identical; None for records that are always sent."""
    if isinstance(record, UpstreamProblem):
        return ("upstream", record.domain, record.account_id, record.status, record.error_type)
    if isinstance(record, OAuthRefreshFailed):
        return ("oauth_refresh", record.domain, record.account_id)
    if isinstance(record, UsageAlert):
        return ("usage", record.key)
    return None


class Dedupe:
    """Open windows by key; `admit` says whether to send now, `due` yields the follow-ups."""

    def __init__(self, window: timedelta = WINDOW, max_keys: int = MAX_KEYS):
        self.window = window
        self.max_keys = max_keys
        self.suppressed = 0  # alerts held back so far (reported in follow-ups)
        self._open: dict[tuple, _Window] = {}

    def admit(self, record: Any, now: datetime) -> tuple[bool, Repeats | None]:
        """(send now?, repeats to mention): an identical alert inside an open window is only
        counted (False); otherwise it is sent, and opens a window. When that window had ended
        with repeats no `due` call reported yet, this message carries them instead."""
        key = dedupe_key(record)
        if key is None:
            return True, None
        window = self._open.pop(key, None)
        if window is not None and now < window.opened + self.window:
            window.count += 1
            window.latest = record
            self._open[key] = window
            self.suppressed += 1
            return False, None
        repeats = Repeats(window.count, window.opened) if window and window.count else None
        if len(self._open) >= self.max_keys:
            self._open.pop(next(iter(self._open)))
        self._open[key] = _Window(opened=now)
        return True, repeats

    def due(self, now: datetime) -> list[tuple[Any, Repeats]]:
        """The follow-ups of windows that ended by `now`; those windows reopen from `now`."""
        out = []
        for key, window in list(self._open.items()):
            if now < window.opened + self.window:
                continue
            if window.count:
                out.append((window.latest, Repeats(window.count, window.opened)))
                self._open[key] = _Window(opened=now)
            else:
                del self._open[key]
        return out

    def flush(self) -> list[tuple[Any, Repeats]]:
        """Every open window's follow-up now, whatever its age (at shutdown)."""
        out = [(w.latest, Repeats(w.count, w.opened)) for w in self._open.values() if w.count]
        self._open.clear()
        return out

    def next_due(self) -> datetime | None:
        """When the earliest open window ends."""
        if not self._open:
            return None
        return min(w.opened for w in self._open.values()) + self.window

    def __len__(self) -> int:
        return len(self._open)
