"""Upstream error answers that are not Anthropic's JSON, rewritten in Anthropic's error shape.

The Claude API itself always answers errors as `{"type":"error","error":{…}}`, but what sits in
front of it may not: a load balancer's HTML 502 page, a corporate proxy's plain-text 403. The
SDKs and Claude Code show such a body as an opaque string (or fail to parse it); rewritten, the
client gets the same status with a typed error whose message quotes the start of the original.
Pure: no Flask, no network.
"""

from __future__ import annotations

import json
import re

# Largest non-JSON error body read whole to quote from; the rest is not read (the connection
# is closed instead). Such pages are a few kilobytes.
READ_LIMIT = 64 << 10
QUOTE_CHARS = 200

ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_type_for(status: int) -> str:
    """Anthropic's error type for an HTTP error status."""
    return ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def is_json_object(body: bytes) -> bool:
    """Whether the body is a JSON object (what every Anthropic error is)."""
    try:
        return isinstance(json.loads(body), dict)
    except ValueError:
        return False


def anthropic_error(status: int, body: bytes, complete: bool) -> bytes:
    """The Anthropic-shaped error body standing for a non-JSON upstream error answer."""
    text = re.sub(r"<[^>]*>", " ", body.decode("utf-8", "replace"))  # an HTML page's words
    text = " ".join(text.split())
    quote = text[:QUOTE_CHARS] + ("…" if len(text) > QUOTE_CHARS or not complete else "")
    message = f"The upstream answered {status} with a body that is not an API error" + (
        f": {quote}" if quote else " (empty)")
    return json.dumps({"type": "error", "error": {"type": error_type_for(status),
                                                  "message": message}}).encode()
