"""The settings table: every setting's name, default, parser and meaning, in one place.

Settings come from the environment, then an optional `.env` file (the environment wins), then
the dict passed to `create_app` (tests). The README documents each row; a test keeps them in step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values


class ConfigError(Exception):
    """A setting has a value that cannot be used; the message is one line naming it."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    parse: Callable[[str], Any]
    help: str


def _boolean(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("expected true or false")


def _integer(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError("expected a whole number") from None
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ValueError(f"expected a number {bounds}")
        return value

    return parse


def _seconds(positive: bool) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw.strip())
        except ValueError:
            raise ValueError("expected a number of seconds") from None
        if value != value or value < 0 or (positive and value == 0):  # NaN, negative, zero
            raise ValueError("expected a number of seconds above 0" if positive else
                             "expected a number of seconds, 0 or more")
        return value

    return parse


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError("expected one of " + ", ".join(allowed))
        return value

    return parse


def _http_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an http:// or https:// URL")
    if parts.query or parts.fragment:
        raise ValueError("expected a base URL without query or fragment")
    return value


def _host(raw: str) -> str:
    value = raw.strip()
    if not value or any(c.isspace() for c in value):
        raise ValueError("expected a host name or IP address")
    return value


def _path(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("expected a folder path")
    return value


def _token(raw: str) -> str:
    value = raw.strip()
    if not value or any(c.isspace() for c in value):
        raise ValueError("expected a value without spaces")
    return value


def _optional_secret(raw: str) -> str | None:
    value = raw.strip()
    if value and len(value) < 16:
        raise ValueError("expected at least 16 characters (or nothing)")
    return value or None


def _optional_integer(low: int) -> Callable[[str], int | None]:
    strict = _integer(low)

    def parse(raw: str) -> int | None:
        return strict(raw) if raw.strip() else None

    return parse


def _percent_levels(raw: str) -> tuple[int, ...]:
    """`80,95` -> (80, 95): distinct whole percents from 1 to 100, in rising order."""
    levels = set()
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isascii() or not part.isdigit() or not 1 <= int(part) <= 100:
            raise ValueError("expected whole percents from 1 to 100 separated by commas")
        levels.add(int(part))
    return tuple(sorted(levels))


def _optional_http_url(raw: str) -> str | None:
    return _http_url(raw) if raw.strip() else None


def _optional_text(raw: str) -> str | None:
    return raw.strip() or None


def _optional_file(raw: str) -> str | None:
    value = raw.strip()
    if value and not Path(value).is_file():
        raise ValueError(f"no such file: {value}")
    return value or None


def _database_url(raw: str) -> str:
    value = raw.strip()
    scheme = value.split("://", 1)[0] if "://" in value else ""
    if scheme not in ("sqlite", "postgres", "postgresql"):
        raise ValueError("expected sqlite:///path or postgresql://user@host/db")
    return value


SETTINGS: tuple[Setting, ...] = (
    Setting("HOST", "127.0.0.1", _host,
            "Listen address (the Docker image uses `0.0.0.0`)."),
    Setting("PORT", "3000", _integer(1, 65535), "Listen port."),
    Setting("CLAUDE_API_BASE_URL", "https://api.anthropic.com", _http_url,
            "Upstream base URL; requests go to this URL plus the client's path and query."),
    Setting("CLAUDE_API_TIMEOUT", "600", _seconds(positive=True),
            "Seconds to wait for the upstream's response headers, and the longest silence "
            "allowed inside a stream."),
    Setting("UPSTREAM_MAX_RETRIES", "2", _integer(0, 10),
            "Retries of connection errors, timeouts and 429/500/502/503/504/529 answers before "
            "the first byte reaches the client."),
    Setting("CREDENTIALS_DIR", "./credentials", _path,
            "Folder of per-domain credential files `<domain>.credentials.json` (see "
            "Credentials)."),
    Setting("ENABLE_CLIENT_AUTH", "false", _boolean,
            "Require callers to present their domain's `client_api_key`."),
    Setting("CLAUDE_OAUTH_CLIENT_ID", "9d1c250a-e61b-44d9-88ed-5944d1962f5e", _token,
            "OAuth client id used to refresh and obtain tokens (Claude Code's public id)."),
    Setting("CLAUDE_OAUTH_TOKEN_URL", "https://console.anthropic.com/v1/oauth/token", _http_url,
            "OAuth token endpoint."),
    Setting("DATABASE_URL", "sqlite:///data/nexus.db", _database_url,
            "`sqlite:///path` (relative to the working directory) or `postgresql://…`."),
    Setting("DATABASE_POOL_SIZE", "10", _integer(1, 1000),
            "PostgreSQL connections per process."),
    Setting("STORAGE_BATCH_SIZE", "200", _integer(1, 10000),
            "The batch writer inserts when this many rows are queued..."),
    Setting("STORAGE_BATCH_INTERVAL_MS", "250", _integer(1, 60000),
            "...or when the oldest queued row has waited this long (milliseconds)."),
    Setting("STORAGE_QUEUE_MAX", "10000", _integer(1),
            "Rows held in memory; beyond them, and while the database fails, rows go to the "
            "spool."),
    Setting("SPOOL_DIR", "./data/spool", _path,
            "Folder of the spool: JSON-lines files of rows not yet written, replayed in order "
            "once the database answers."),
    Setting("STORE_STREAMING_CHUNKS", "true", _boolean,
            "Keep every SSE event of a streamed answer, with its arrival offset."),
    Setting("RETENTION_DAYS", "0", _integer(0),
            "Rows older than this many days are purged daily (0 keeps everything)."),
    Setting("DASHBOARD_API_KEY", "", _optional_secret,
            "Key for `/api/*` (`Authorization: Bearer` or `X-Dashboard-Key`). Unset: `/api/*` "
            "answers loopback clients only."),
    Setting("SECRET_KEY", "", _optional_secret,
            "Signs dashboard sessions (at least 16 characters). Unset: generated once and kept "
            "in `data/secret_key` (mode 0600), so logins survive restarts."),
    Setting("SLACK_WEBHOOK_URL", "", _optional_http_url,
            "Slack incoming webhook for notifications (a domain's credential file may name its "
            "own in its `slack` block). Unset: no Slack messages."),
    Setting("SLACK_CHANNEL", "", _optional_text,
            "Channel to post to, when the webhook allows overriding it (`#claude-alerts`)."),
    Setting("SLACK_USERNAME", "", _optional_text,
            "Name the messages are posted under (unset: the webhook's own)."),
    Setting("SLACK_ICON_EMOJI", "", _optional_text,
            "Icon of the messages, such as `:robot_face:` (unset: the webhook's own)."),
    Setting("SLACK_CONVERSATION_DIGEST", "false", _boolean,
            "Also post each inference request's user prompt and reply (truncated, with tokens, "
            "cost and a dashboard link)."),
    Setting("PUBLIC_URL", "", _optional_http_url,
            "The proxy's address as people reach it, for links in notifications. Unset: "
            "`http://HOST:PORT`."),
    Setting("ALERT_WINDOW_TOKEN_LIMIT", "", _optional_integer(1),
            "Output tokens per account in a 5-hour window that count as 100 % for quota "
            "alerts. Unset: no window alerts (the upstream's own rate-limit statuses still "
            "alert)."),
    Setting("ALERT_THRESHOLDS", "80,95", _percent_levels,
            "Percent levels of the window limit, and of the upstream's unified 5h/7d "
            "utilization, that raise an alert once per window and level."),
    Setting("PRICES_FILE", "", _optional_file,
            "A price file replacing the bundled `app/usage/prices.json` (same format); read at "
            "start-up."),
    Setting("COLLECT_TEST_SAMPLES", "false", _boolean,
            "Write each exchange to `TEST_SAMPLES_DIR` as one JSON file (secrets masked), to "
            "turn real traffic into test fixtures with `samples export`."),
    Setting("TEST_SAMPLES_DIR", "./test-samples", _path,
            "Folder of the collected test samples."),
    Setting("SLOW_QUERY_THRESHOLD_MS", "500", _integer(0),
            "SQL statements slower than this many milliseconds are logged with their duration "
            "(0 turns the log off)."),
    Setting("MAX_REQUEST_BYTES", "33554432", _integer(1),
            "Request bodies larger than this are answered 413 without contacting the upstream."),
    Setting("SHUTDOWN_GRACE_S", "30", _seconds(positive=False),
            "On SIGTERM, how long in-flight requests and streams may take to finish."),
    Setting("WEB_CONCURRENCY", "2", _integer(1, 64),
            "gunicorn worker processes (`packaging/gunicorn.conf.py`, the Docker image); "
            "`make run` and the binary serve with one process."),
    Setting("WORKER_CONNECTIONS", "1000", _integer(10, 100000),
            "Concurrent connections (streams) one gunicorn gevent worker serves."),
    Setting("DEBUG", "false", _boolean,
            "Log request and response headers and bodies (secrets masked)."),
    Setting("LOG_LEVEL", "info", _choice("debug", "info", "warning", "error"),
            "Lowest level logged."),
    Setting("LOG_FORMAT", "text", _choice("text", "json"),
            "`text` for people, `json` (one object per line) for log collectors."),
)

BY_NAME = {setting.name: setting for setting in SETTINGS}


class Settings:
    """Parsed settings with lower-case attribute access: `settings.port`."""

    def __init__(self, values: Mapping[str, Any]):
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name.upper()]
        except KeyError:
            raise AttributeError(name) from None

    def as_dict(self) -> dict[str, Any]:
        return dict(self._values)


def load_settings(
    environ: Mapping[str, str] | None = None,
    env_file: str | os.PathLike | None = ".env",
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Parse every setting from overrides, the environment and the env file, in that order."""
    environ = os.environ if environ is None else environ
    from_file: Mapping[str, str | None] = {}
    if env_file is not None and Path(env_file).is_file():
        from_file = dotenv_values(env_file)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(BY_NAME))
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]}")
    values: dict[str, Any] = {}
    for setting in SETTINGS:
        if setting.name in overrides and not isinstance(overrides[setting.name], str):
            values[setting.name] = overrides[setting.name]  # already typed (tests)
            continue
        raw = overrides.get(setting.name)
        if raw is None:
            raw = environ.get(setting.name)
        if raw is None:
            raw = from_file.get(setting.name)
        if raw is None:
            raw = setting.default
        try:
            values[setting.name] = setting.parse(raw)
        except ValueError as err:
            raise ConfigError(f"{setting.name}={raw!r}: {err}") from None
    return Settings(values)
