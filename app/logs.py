"""Logging: text or JSON lines, the request id on every line, secrets always masked."""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import uuid
from datetime import UTC, datetime

from flask import Flask, Response, g, request

from app.events import EventBus, ExchangeEnded, UsageAlert
from app.redact import mask_text, redact_headers

# The id on the lines logged while serving a request: the exchange id on the proxy route (set
# by its view), a short generated one (or the client's X-Request-Id) everywhere else.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "nexus_request_id", default=None)
REQUEST_ID_HEADER = "X-Request-Id"
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

DEBUG_BODY_LIMIT = 65536
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id"}


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        return True


def _timestamp(record: logging.LogRecord) -> str:
    when = datetime.fromtimestamp(record.created, UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        rid = f" [{record.request_id}]" if getattr(record, "request_id", None) else ""
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}{rid}: " \
               f"{record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return mask_text(line)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": _timestamp(record), "level": record.levelname.lower(),
                 "logger": record.name, "msg": record.getMessage()}
        if getattr(record, "request_id", None):
            entry["request_id"] = record.request_id
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return mask_text(json.dumps(entry, default=str, ensure_ascii=False))


def configure_logging(level: str, fmt: str) -> None:
    """Send every log line to stderr in the chosen format (replaces earlier handlers)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_nexus", False):
            root.removeHandler(old)
    handler._nexus = True
    root.addHandler(handler)
    root.setLevel(level.upper())
    # urllib3 warns per discarded pooled connection; our own lines say what matters.
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    # peewee's debug line per statement prints its parameters (bodies, headers): the slow
    # query log (nexus.sql, app/storage/database.py) shows statements without them.
    logging.getLogger("peewee").setLevel(logging.INFO)


def init_request_ids(app: Flask) -> None:
    """Give every request a request id for its log lines, and answer it as `X-Request-Id` on
    every route but the proxy's (which answers `x-nexus-request-id`)."""
    app.before_request(_start_request)
    app.after_request(_answer_request_id)


def _start_request() -> None:
    # gevent serves all the requests of a keep-alive connection in one greenlet, whose context
    # outlives each request: without this, the previous request's id would carry over.
    if request.endpoint == "proxy.forward":
        request_id_var.set(None)  # the view sets the exchange's id before it logs anything
        return
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = incoming if _CLIENT_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex[:12]
    g.nexus_request_id = request_id
    request_id_var.set(request_id)


def _answer_request_id(response: Response) -> Response:
    request_id = g.get("nexus_request_id")
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


class ExchangeLog:
    """One line per finished exchange (with DEBUG, its headers and bodies too, masked), and a
    warning per usage alert, so alerts are seen even where no notification is configured."""

    def __init__(self, debug: bool):
        self.debug = debug
        self.log = logging.getLogger("nexus.exchange")

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(ExchangeEnded, self.on_ended)
        bus.subscribe(UsageAlert, self.on_alert)

    def on_alert(self, alert: UsageAlert) -> None:
        who = alert.account_id or f"domain {alert.domain}"
        if alert.kind == "unified_status":
            what = f"upstream rate-limit status is {alert.level}"
        elif alert.kind == "unified_utilization":
            what = f"upstream {alert.window} utilization reached {alert.level}%"
        else:
            what = (f"{alert.tokens} output tokens in 5 h reached {alert.level}% of "
                    f"{alert.limit}")
        resets = f" (resets {alert.resets_at:%Y-%m-%d %H:%M} UTC)" if alert.resets_at else ""
        self.log.warning("usage alert: %s: %s%s", who, what, resets,
                         extra={"request_id": alert.request_id, "alert_kind": alert.kind,
                                "alert_level": alert.level, "account_id": alert.account_id,
                                "domain": alert.domain, "used_percent": alert.used_percent})

    def on_ended(self, event: ExchangeEnded) -> None:
        x = event.exchange
        usage = x.usage or {}
        target = x.path + (f"?{x.query}" if x.query else "")
        fields = {
            "request_id": x.id, "method": x.method, "path": target, "domain": x.domain,
            "account_id": x.account_id, "auth_mode": x.auth_mode,
            "status": x.status, "model": x.model, "stream": x.stream,
            "request_type": x.request_type, "attempts": len(x.attempts),
            "duration_ms": x.duration_ms, "first_byte_ms": x.first_byte_ms,
            "first_token_ms": x.first_token_ms,
            "input_tokens": usage.get("input_tokens"), "output_tokens": usage.get("output_tokens"),
            "outcome": type(event).__name__, "error_type": x.error_type,
        }
        parts = [f"{x.method} {target} -> {x.status} in {x.duration_ms:.0f} ms"]
        if x.model:
            parts.append(f"model={x.model}")
        if usage:
            parts.append(f"tokens={usage.get('input_tokens')}/{usage.get('output_tokens')}")
        if x.error_type:
            parts.append(f"error={x.error_type}: {x.error_message}")
        text = " ".join(parts)
        level = logging.WARNING if x.error_type else logging.INFO
        self.log.log(level, text, extra=fields)
        if self.debug:
            self.log.debug("request headers %s body %s", redact_headers(x.request_headers),
                           _body_text(x.request_body), extra={"request_id": x.id})
            self.log.debug("response headers %s body %s", redact_headers(x.response_headers),
                           _body_text(x.response_body) if x.response_body else x.response,
                           extra={"request_id": x.id})


def _body_text(body: bytes) -> str:
    text = body[:DEBUG_BODY_LIMIT].decode("utf-8", "replace")
    return text + (f"… ({len(body)} bytes)" if len(body) > DEBUG_BODY_LIMIT else "")
