"""Where a domain's notifications go: its credential file's `slack` block, else the global
SLACK_* settings, else nowhere.

    {"slack": {"webhook_url": "https://hooks.slack.com/services/…", "channel": "#team",
               "enabled": true}}

- `enabled: false` silences the domain, even with SLACK_WEBHOOK_URL set;
- a block with a `webhook_url` (http or https) sends there, to the block's `channel` if any;
- a block without one uses SLACK_WEBHOOK_URL, with the block's `channel` or SLACK_CHANNEL;
- no block (no file, or an unusable one): SLACK_WEBHOOK_URL and SLACK_CHANNEL.
SLACK_USERNAME and SLACK_ICON_EMOJI dress every message. Files are read through the
credential store, so an edited block counts from the next message on, with no restart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from app.auth.credentials import CredentialError, CredentialStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Target:
    webhook_url: str
    channel: str | None = None
    username: str | None = None
    icon_emoji: str | None = None

    def dress(self, payload: dict) -> dict:
        """The payload with the channel, name and icon this target asks for."""
        extra = {"channel": self.channel, "username": self.username,
                 "icon_emoji": self.icon_emoji}
        return {**payload, **{k: v for k, v in extra.items() if v}}

    def describe(self) -> str:
        """The webhook without its secret path, for logs."""
        parts = urlsplit(self.webhook_url)
        return f"{parts.scheme}://{parts.netloc}/…" + (f" ({self.channel})" if self.channel
                                                       else "")


@dataclass(frozen=True, slots=True)
class Defaults:
    """The global SLACK_* settings."""

    webhook_url: str | None = None
    channel: str | None = None
    username: str | None = None
    icon_emoji: str | None = None


def choose(block: Any, defaults: Defaults) -> Target | None:
    """The target for a domain with this `slack` block (None: no block). Pure."""
    dress = {"username": defaults.username, "icon_emoji": defaults.icon_emoji}
    if isinstance(block, dict):
        if block.get("enabled") is False:
            return None
        channel = _text(block.get("channel"))
        own = _text(block.get("webhook_url"))
        if own and urlsplit(own).scheme in ("http", "https") and urlsplit(own).hostname:
            return Target(own, channel, **dress)
        if defaults.webhook_url:
            return Target(defaults.webhook_url, channel or defaults.channel, **dress)
        return None
    if defaults.webhook_url:
        return Target(defaults.webhook_url, defaults.channel, **dress)
    return None


class Targets:
    """Resolves domains to targets by reading their credential files (cached by the store)."""

    def __init__(self, store: CredentialStore | None, defaults: Defaults):
        self.store = store
        self.defaults = defaults

    def for_domain(self, domain: str | None) -> Target | None:
        block = None
        if self.store is not None and domain:
            try:
                credential = self.store.get(domain)
            except CredentialError as err:
                # The file's own problem shows on every request of the domain; here it only
                # means the global target applies.
                log.debug("slack: %s's credential file unusable: %s", domain, err)
                credential = None
            block = credential.slack if credential is not None else None
        return choose(block, self.defaults)


def _text(value: Any) -> str | None:
    return value.strip() or None if isinstance(value, str) else None
