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
