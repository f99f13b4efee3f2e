"""The errors the product itself raises, and the one place that turns them into responses.

    NexusError                      500 api_error
    ├── InvalidRequest              400 invalid_request_error   (bad JSON, bad path, …)
    ├── RequestTooLarge             413 request_too_large
    ├── AuthenticationFailed        401 authentication_error
    ├── NotFound                    404 not_found_error
    ├── MethodNotAllowed            405 invalid_request_error
    ├── UpstreamError               502 api_error               (transport failure, bad gateway)
    │   └── UpstreamTimeout         504 timeout_error
    └── ClientDisconnected          499 (nginx's code; nobody is left to read it)

Every error renders in Anthropic's shape, `{"type":"error","error":{"type":…,"message":…}}`, so
SDKs surface them like the API's own. Upstream error *responses* are not exceptions: they are
passed through untouched.
"""

from __future__ import annotations

import json
import logging

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-nexus-request-id"


class NexusError(Exception):
    status = 500
    error_type = "api_error"

    def __init__(self, message: str, headers: dict[str, str] | None = None,
                 error_type: str | None = None):
        super().__init__(message)
        self.message = message
        self.headers = headers or {}
        if error_type:  # e.g. an upstream's own mid-stream error type, kept as it said
            self.error_type = error_type


class InvalidRequest(NexusError):
    status = 400
    error_type = "invalid_request_error"


class RequestTooLarge(NexusError):
    status = 413
    error_type = "request_too_large"


class AuthenticationFailed(NexusError):
    status = 401
    error_type = "authentication_error"


class NotFound(NexusError):
    status = 404
    error_type = "not_found_error"


class MethodNotAllowed(NexusError):
    status = 405
    error_type = "invalid_request_error"


class UpstreamError(NexusError):
    status = 502
    error_type = "api_error"


class UpstreamTimeout(UpstreamError):
    status = 504
    error_type = "timeout_error"


class ClientDisconnected(NexusError):
    status = 499
    error_type = "client_disconnected"


def error_body(error_type: str, message: str) -> bytes:
    """Anthropic's error JSON."""
    return json.dumps(
        {"type": "error", "error": {"type": error_type, "message": message}},
        separators=(",", ":"),
    ).encode()


def error_response(err: NexusError, request_id: str | None = None) -> Response:
    """The response for an error the proxy produced itself."""
    response = Response(error_body(err.error_type, err.message), status=err.status,
                        content_type="application/json")
    for name, value in err.headers.items():
        response.headers[name] = value
    if request_id:
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


def _from_http_exception(exc: HTTPException) -> NexusError:
    if exc.code == 404:
        return NotFound(f"Not found: {request.path}")
    if exc.code == 405:
        err = MethodNotAllowed("Method not allowed")
        allowed = exc.get_headers()
        err.headers = {k: v for k, v in allowed if k.lower() == "allow"}
        return err
    err = NexusError(exc.description or exc.name)
    err.status = exc.code or 500
    err.error_type = "invalid_request_error" if err.status < 500 else "api_error"
    return err


def init_app(app: Flask) -> None:
    """Register the handlers that render every error in Anthropic's shape."""

    def render(err: NexusError) -> Response:
        exchange = g.get("exchange")
        if exchange is not None and isinstance(err, ClientDisconnected):
            exchange.disconnect(err.message)
        elif exchange is not None:
            exchange.fail(err)
        return error_response(err, exchange.id if exchange is not None else None)

    @app.errorhandler(NexusError)
    def handle_nexus_error(err: NexusError):
        return render(err)

    @app.errorhandler(HTTPException)
    def handle_http_exception(exc: HTTPException):
        return render(_from_http_exception(exc))

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception):
        log.exception("unexpected error")
        return render(NexusError("Internal error in the proxy; see its log."))
