"""CORS for browser clients of /v1 (the SDKs' `dangerouslyAllowBrowser`), answered locally."""

from __future__ import annotations

from flask import Response

from app.errors import REQUEST_ID_HEADER

ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
DEFAULT_ALLOWED_HEADERS = ("authorization, x-api-key, content-type, anthropic-version, "
                           "anthropic-beta, anthropic-dangerous-direct-browser-access")


def preflight(origin: str | None, requested_headers: str | None) -> Response:
    """The answer to `OPTIONS /v1/*`: any origin, the methods of the API, the asked headers."""
    response = Response(status=204)
    response.headers["Access-Control-Allow-Origin"] = origin or "*"
    response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
    response.headers["Access-Control-Allow-Headers"] = requested_headers or DEFAULT_ALLOWED_HEADERS
    response.headers["Access-Control-Max-Age"] = "86400"
    if origin:
        response.headers["Vary"] = "Origin"
    return response


def add_cors(response: Response, origin: str | None) -> Response:
    """Let a browser caller read the answer, unless the upstream already decided."""
    if origin and "Access-Control-Allow-Origin" not in response.headers:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers.add("Vary", "Origin")
    if origin:
        exposed = response.headers.get("Access-Control-Expose-Headers")
        names = f"{exposed}, {REQUEST_ID_HEADER}" if exposed else f"{REQUEST_ID_HEADER}, request-id"
        response.headers["Access-Control-Expose-Headers"] = names
    return response
