"""A test sample: one ended exchange as a JSON document, every secret masked (SPEC §9.2).

Pure: no Flask, no files. The document (format `claude-nexus-test-sample`, version 1):

    format, version, id, received_at, completed_at, domain, account_id, auth_mode,
    method, path, query, request_type, model, stream, status, outcome, error,
    request   {headers: [[name, value]...], body}
    response  {status, headers, stream, body, truncated, events: [{offset_ms, raw}...]}
    timing    {duration_ms, first_byte_ms, first_token_ms}
    usage, tool_uses, attempts

Bodies are the parsed JSON when they are JSON, else text. `response.body` of a stream is the
message rebuilt from its events; `response.events` are the raw SSE events as they arrived
(their texts joined are the stream the client got, masked). No secret survives: credential
headers are reduced to their scheme and last four characters (app/redact.py), query values
with a secret-looking name are replaced, and every other string, bodies and events included,
goes through `mask_text` — a stream's deltas as one text per content block too (stream.py), so a
secret split over several events is caught.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

from app.events import ExchangeCompleted, ExchangeDisconnected, ExchangeFailed
from app.proxy.decoding import decoder_for
from app.proxy.exchange import Exchange
from app.proxy.headers import header_value
from app.redact import mask_text, redact_headers
from app.samples.stream import masked_events

FORMAT = "claude-nexus-test-sample"
VERSION = 1
REDACTED = "[redacted]"

# Header names that carry credentials beyond app/redact.py's SECRET_HEADERS, and query
# parameters that do (OAuth codes and signatures too).
_SECRET_HEADER = re.compile(
    r"api-?key|apikey|secret|passw|(?:^|-)token$|auth|cookie|credential", re.I)
_SECRET_PARAM = re.compile(r"key|secret|passw|token|auth|sig|code|credential|session", re.I)
_STAMP = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)")
_OUTCOMES = ((ExchangeCompleted, "completed"), (ExchangeFailed, "failed"),
             (ExchangeDisconnected, "client_disconnected"))
_NAME_PART = re.compile(r"[^A-Za-z0-9.-]+")


def sample_of(exchange: Exchange) -> dict[str, Any]:
    """The sample document of an ended exchange."""
    x = exchange
    usage = x.usage if isinstance(x.usage, dict) else None
    return {
        "format": FORMAT,
        "version": VERSION,
        "id": x.id,
        "received_at": _time(x.received_at),
        "completed_at": _time(x.completed_at),
        "domain": mask_text(x.domain),
        "account_id": masked(x.account_id),
        "auth_mode": x.auth_mode,
        "method": x.method,
        "path": mask_text(x.path),
        "query": mask_query(x.query or ""),
        "request_type": x.request_type,
        "model": masked(x.model),
        "stream": bool(x.stream),
        "status": x.status,
        "outcome": outcome(x),
        "error": ({"type": masked(x.error_type), "message": masked(x.error_message)}
                  if x.error_type or x.error_message else None),
        "request": {"headers": masked_headers(x.request_headers),
                    "body": body_value(x.request_body)},
        "response": _response(x),
        "timing": {"duration_ms": x.duration_ms, "first_byte_ms": x.first_byte_ms,
                   "first_token_ms": x.first_token_ms},
        "usage": masked(usage),
        "tool_uses": masked(list(x.tool_uses)),
        "attempts": masked([asdict(a) for a in x.attempts]),
    }


def _response(x: Exchange) -> dict[str, Any]:
    content_type = (header_value(x.response_headers, "content-type") or "").lower()
    is_sse = content_type.startswith("text/event-stream")
    if is_sse or x.response is not None:
        body = masked(x.response)
    else:
        body = body_value(_decoded(x))
    return {
        "status": x.upstream_status,
        "headers": masked_headers(x.response_headers),
        "stream": is_sse,
        "body": body,
        "truncated": bool(x.response_body_truncated),
        "events": masked_events(x.chunks) if is_sse else [],
    }


def _decoded(x: Exchange) -> bytes:
    """A non-SSE body without its Content-Encoding (as received when it cannot be undone)."""
    encoding = header_value(x.response_headers, "content-encoding")
    if not encoding or not x.response_body:
        return x.response_body
    try:
        decoder = decoder_for(encoding)
        return decoder.decompress(x.response_body) + decoder.flush()
    except Exception:  # unknown or corrupt coding: the bytes as they came
        return x.response_body


def outcome(exchange: Exchange) -> str | None:
    """completed, failed or client_disconnected, from the exchange's terminal event."""
    for event_type, name in _OUTCOMES:
        if isinstance(exchange.ended, event_type):
            return name
    return None


def body_value(body: bytes) -> Any:
    """A body as a sample holds it: parsed JSON when it is JSON, else text; None when empty."""
    if not body:
        return None
    text = mask_text(body.decode("utf-8", "replace"))
    if text.lstrip()[:1] in ("{", "["):
        try:
            return masked(json.loads(text))
        except ValueError:
            pass
    return text


def masked(value: Any) -> Any:
    """A JSON value with every string masked, and the values of secret-looking keys
    (`api_key`, `refresh_token`, `password`...) replaced."""
    if isinstance(value, str):
        return mask_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {mask_text(str(k)): (REDACTED if _secret_key(k, v) else masked(v))
                for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked(v) for v in value]
    return mask_text(str(value))


def _secret_key(key: Any, value: Any) -> bool:
    # Only strings are secrets: `max_tokens`-like counts and nested objects are kept.
    return isinstance(value, str) and bool(value) and _is_secret_json_key(str(key))


def _is_secret_json_key(key: str) -> bool:
    lower = key.lower()
    return lower in ("api_key", "apikey", "x-api-key", "access_token", "refresh_token",
                     "id_token", "client_secret", "secret", "password", "authorization",
                     "client_api_key", "accesstoken", "refreshtoken")


def masked_headers(headers: list[tuple[str, str]]) -> list[list[str]]:
    """Headers as a sample holds them: credentials masked (app/redact.py), secret-looking
    names (`x-goog-api-key`, `x-auth-token`...) replaced, `sk-ant-…` masked anywhere."""
    return [[name, REDACTED if is_secret_header(name) else mask_text(value)]
            for name, value in redact_headers(headers)]


def is_secret_header(name: str) -> bool:
    """A header whose name says it holds a credential (beyond those redact_headers masks)."""
    lower = name.lower()
    # redact_headers already shows the scheme and last four of these; keep that.
    if lower in ("authorization", "proxy-authorization", "x-api-key", "x-dashboard-key"):
        return False
    return bool(_SECRET_HEADER.search(lower))


def mask_query(query: str) -> str:
    """A query string with secret-looking parameters' values replaced, the rest masked."""
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    if not any(_SECRET_PARAM.search(k) and v for k, v in pairs):
        return mask_text(query)  # as sent: `beta=true` stays `beta=true`
    return urlencode([(mask_text(k), REDACTED if _SECRET_PARAM.search(k) and v
                       else mask_text(v)) for k, v in pairs])


def file_name(sample: dict[str, Any]) -> str:
    """`20261129T163000Z_inference_claude-sonnet-4-5_1a2b3c4d.json`: sortable by time."""
    match = _STAMP.match(sample.get("received_at") or "")
    stamp = "{}{}{}T{}{}{}Z".format(*match.groups()) if match else "unknown"
    kind = _part(sample.get("request_type") or "other")
    model = _part(sample.get("model") or "no-model")
    return f"{stamp}_{kind}_{model}_{_part(str(sample.get('id', '')))[:8]}.json"


def _part(text: str) -> str:
    return _NAME_PART.sub("-", text).strip("-")[:60] or "x"


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")
