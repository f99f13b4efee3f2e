"""Events of an exchange's life, and the bus that hands them to subscribers.

The proxy publishes; storage, notifications, metrics and health subscribe. Publishing is
synchronous and runs on the request path, so subscribers must only hand work off (enqueue); a
subscriber that raises is logged and skipped, never allowed to break the exchange.

Each exchange publishes `ExchangeStarted` once and exactly one terminal event:
`ExchangeCompleted`, `ExchangeFailed` or `ExchangeDisconnected`.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.proxy.exchange import Exchange

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ExchangeStarted:
    exchange: Exchange


@dataclass(frozen=True, slots=True)
class ExchangeEnded:
    """Base of the three terminal events; subscribe to it to see every finished exchange."""

    exchange: Exchange


@dataclass(frozen=True, slots=True)
class ExchangeCompleted(ExchangeEnded):
    """The upstream answered (any status) and the whole answer reached the client."""


@dataclass(frozen=True, slots=True)
class ExchangeFailed(ExchangeEnded):
    """The proxy answered with its own error, or the upstream failed mid-answer."""


@dataclass(frozen=True, slots=True)
class ExchangeDisconnected(ExchangeEnded):
    """The client went away before the answer was complete."""


@dataclass(frozen=True, slots=True)
class OAuthRefreshFailed:
    """A domain's OAuth token could not be refreshed; its requests get 401 until it can."""

    domain: str
    account_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class UsageAlert:
    """A quota alert (SPEC §6.2), published by the writer side after the rows that caused it
    are committed; the notifications send it.

    kinds:
    - ``window_tokens``: an account's output tokens in the rolling 5-hour window crossed
      ``level`` percent of ALERT_WINDOW_TOKEN_LIMIT;
    - ``unified_utilization``: the upstream's ``unified-{5h,7d}-utilization`` crossed ``level``
      percent (``window`` says which);
    - ``unified_status``: the upstream's unified status became ``level`` (``allowed_warning``
      or ``rejected``).

    ``key`` names the window and level (the account, the kind, the level and when the window
    started or resets), so that a receiver can send each one once.
    """

    kind: str
    domain: str
    account_id: str | None
    level: str
    window: str                        # "5h" or "7d"
    used_percent: float | None         # of the limit or the upstream's utilization
    tokens: int | None                 # window_tokens: output tokens in the window
    limit: int | None                  # window_tokens: ALERT_WINDOW_TOKEN_LIMIT
    resets_at: datetime | None         # when the window (or its oldest request) ends
    request_id: str | None             # the request whose answer crossed the level
    key: str


Subscriber = Callable[[Any], None]


class EventBus:
    """Synchronous publish/subscribe keyed by event class (subclasses reach base subscribers)."""

    def __init__(self) -> None:
        self._subscribers: dict[type, list[Subscriber]] = defaultdict(list)

    def subscribe(self, event_type: type, subscriber: Subscriber) -> None:
        self._subscribers[event_type].append(subscriber)

    def publish(self, event: Any) -> None:
        for event_type in type(event).__mro__:
            for subscriber in self._subscribers.get(event_type, ()):
                try:
                    subscriber(event)
                except Exception:
                    log.exception("event subscriber %r failed on %s", subscriber,
                                  type(event).__name__)
