"""Reading a client request into an Exchange: the body once and bounded, then validation."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from app.domain import normalise_domain
from app.errors import ClientDisconnected, InvalidRequest, RequestTooLarge
from app.proxy.exchange import COUNT_TOKENS, MESSAGES, OTHER, Exchange
from app.usage.classify import classify_request

_READ_SIZE = 65536
# Messages bodies nested deeper than this are refused. Claude clients stay far below it (tool
# schemas and inputs reach a few dozen levels); far deeper JSON makes json.loads hit Python's
# recursion limit (a 500) and every recursive reader after it (storage, dashboard, API) too.
MAX_JSON_DEPTH = 128


def client_headers(environ: dict) -> list[tuple[str, str]]:
    """The request headers as the client sent them, original case and order when the server
    kept them (our gevent server does), else rebuilt from the WSGI environ."""
    raw = environ.get("nexus.raw_headers")
    if raw is not None:
        return raw
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append((key[5:].replace("_", "-").title(), value))
    if environ.get("CONTENT_TYPE"):
        headers.append(("Content-Type", environ["CONTENT_TYPE"]))
    if environ.get("CONTENT_LENGTH"):
        headers.append(("Content-Length", environ["CONTENT_LENGTH"]))
    return headers


def raw_target(environ: dict) -> tuple[str, str]:
    """Path and query exactly as on the request line (still percent-encoded)."""
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not target:
        path = quote(environ.get("PATH_INFO", "").encode("latin-1"), safe="/:@!$&'()*+,;=-._~")
        return path, environ.get("QUERY_STRING", "")
    if not target.startswith("/"):  # absolute-form target: keep only path and query
        parts = urlsplit(target)
        return parts.path or "/", parts.query
    path, _, query = target.partition("?")
    return path, query


def path_kind(method: str, path: str) -> str:
    """Which record a path makes: full Messages rows, count_tokens, or light rows."""
    if method == "POST" and path.rstrip("/") == "/v1/messages":
        return MESSAGES
    if method == "POST" and path.rstrip("/") == "/v1/messages/count_tokens":
        return COUNT_TOKENS
    return OTHER


def new_exchange(environ: dict, publish: Callable[[Any], None]) -> Exchange:
    """The Exchange for this request, from its line and headers (the body is not read yet)."""
    headers = client_headers(environ)
    path, query = raw_target(environ)
    method = environ.get("REQUEST_METHOD", "GET").upper()
    lower = {name.lower(): value for name, value in headers}
    return Exchange(
        method=method,
        path=path,
        query=query,
        domain=normalise_domain(lower.get("host") or environ.get("SERVER_NAME")),
        publish=publish,
        kind=path_kind(method, path),
        client_addr=environ.get("REMOTE_ADDR"),
        user_agent=lower.get("user-agent"),
        session_id=lower.get("x-claude-code-session-id"),
        agent_id=lower.get("x-claude-code-agent-id"),
        request_headers=headers,
    )


def load_request(exchange: Exchange, environ: dict, max_bytes: int) -> None:
    """Read and check the body: raises InvalidRequest or RequestTooLarge, upstream untouched."""
    _check_path(exchange.path)
    exchange.request_body = read_body(environ, max_bytes)
    if exchange.kind != OTHER:
        _parse_json(exchange)


def _check_path(path: str) -> None:
    # Dot segments could walk the upstream request out of /v1 on servers that normalise paths
    # (with the proxy's credential attached). Checked once percent-decoded and with "\\" as a
    # separator too, since some servers decode %2f/%5c before normalising.
    segments = re.split(r"[/\\]", unquote(path))
    if any(s in (".", "..") for s in segments):
        raise InvalidRequest("The request path may not contain '.' or '..' segments.")


def read_body(environ: dict, max_bytes: int) -> bytes:
    """The whole request body, refusing more than `max_bytes` before reading it if possible."""
    length_header = environ.get("CONTENT_LENGTH")
    length = None
    if length_header:
        try:
            length = int(length_header)
        except ValueError:
            raise InvalidRequest("Content-Length is not a number.") from None
        if length > max_bytes:
            raise _too_large(max_bytes)
    stream = environ["wsgi.input"]
    chunked = environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
    if length is None and not chunked:
        return b""
    parts: list[bytes] = []
    received = 0
    while True:
        want = _READ_SIZE if length is None else min(_READ_SIZE, length - received)
        if want <= 0:
            break
        try:
            data = stream.read(want)
        except OSError as err:
            if type(err).__name__ == "_InvalidClientInput":  # gevent: malformed chunked body
                raise InvalidRequest(f"Malformed chunked request body: {err}") from None
            raise _cut_short(length) from None
        if not data:
            break
        received += len(data)
        if received > max_bytes:
            raise _too_large(max_bytes)
        parts.append(data)
    if length is not None and received < length:
        raise _cut_short(length)
    return b"".join(parts)


def within_depth(value: dict | list, limit: int) -> bool:
    """True when no array or object in `value` lies more than `limit` levels deep (`value`
    itself is level 1). Iterative, so the check itself cannot overflow the stack."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return False
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, (dict, list)):
                stack.append((child, depth + 1))
    return True


def _too_deep() -> InvalidRequest:
    return InvalidRequest(f"The request body is nested more than {MAX_JSON_DEPTH} levels deep.")


def _cut_short(length: int | None) -> ClientDisconnected:
    announced = f" ({length} bytes announced)" if length is not None else ""
    return ClientDisconnected(
        f"client closed the connection before the whole body arrived{announced}")


def _too_large(max_bytes: int) -> RequestTooLarge:
    # The unread rest of the body is still on the socket: close rather than drain it.
    return RequestTooLarge(f"Request body exceeds the proxy's limit of {max_bytes} bytes "
                           "(MAX_REQUEST_BYTES).", headers={"Connection": "close"})


def _parse_json(exchange: Exchange) -> None:
    try:
        # Decoded strictly first: json.loads(bytes) would let UTF-8-encoded surrogates
        # ("\xed\xa0\x80") through, which no database column or log line can hold.
        body = json.loads(exchange.request_body.decode("utf-8-sig"))
    except ValueError as err:
        # ValueError covers invalid UTF-8 too (UnicodeDecodeError is one).
        raise InvalidRequest(f"The request body is not valid JSON: {err}") from None
    except RecursionError:  # deeper than Python's parser goes
        raise _too_deep() from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    if not within_depth(body, MAX_JSON_DEPTH):
        raise _too_deep()
    exchange.request_json = body
    model = body.get("model")
    exchange.model = model if isinstance(model, str) else None
    exchange.stream = body.get("stream") is True
    if exchange.kind == MESSAGES:
        exchange.request_type = classify_request(body)
