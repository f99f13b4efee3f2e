"""When to retry the upstream before the first byte reached the client (SPEC §3.4). Pure."""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from app.proxy.headers import header_value

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 529})


def retry_after_seconds(headers: Iterable[tuple[str, str]], now: datetime | None = None
                        ) -> float | None:
    """The wait the upstream asked for: `retry-after-ms`, else `retry-after` (seconds or date)."""
    headers = list(headers)
    millis = header_value(headers, "retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = header_value(headers, "retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, honouring the upstream's hints, within a wait budget."""

    max_retries: int = 2
    base_delay: float = 0.5
    max_delay: float = 8.0
    budget: float = 60.0  # total seconds of waiting across all retries of one request

    def backoff(self, retry_number: int, rng: random.Random | None = None) -> float:
        """The jittered delay before retry `retry_number` (1-based) absent any hint."""
        delay = min(self.max_delay, self.base_delay * 2 ** (retry_number - 1))
        return delay * (0.75 + 0.5 * (rng or random).random())

    def delay_after(
        self,
        attempts_made: int,
        waited: float,
        status: int | None,
        headers: Iterable[tuple[str, str]] = (),
        rng: random.Random | None = None,
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to give up.

        `status` is None for a transport failure (connection error, timeout, reset before the
        first byte). `x-should-retry` from the upstream overrides the status rule either way.
        """
        if attempts_made > self.max_retries:
            return None
        headers = list(headers)
        if status is not None:
            hint = (header_value(headers, "x-should-retry") or "").strip().lower()
            if hint == "false" or (hint != "true" and status not in RETRYABLE_STATUSES):
                return None
        asked = retry_after_seconds(headers) if status is not None else None
        delay = asked if asked is not None else self.backoff(attempts_made, rng)
        if waited + delay > self.budget:
            return None
        return delay
