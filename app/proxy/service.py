"""The proxy: forwards an Exchange upstream and builds the client's streaming response."""

from __future__ import annotations

import contextvars

import gevent
from flask import Response

from app.auth.access import Authorisation
from app.errors import REQUEST_ID_HEADER, ClientDisconnected
from app.proxy import error_bodies
from app.proxy.decoding import decoder_for
from app.proxy.exchange import Exchange
from app.proxy.fold import BodyFold, StreamFold
from app.proxy.headers import client_response_headers, header_value, upstream_request_headers
from app.proxy.relay import ClientWatch, RelayBody
from app.proxy.upstream import Upstream, UpstreamResponse

# Non-SSE bodies are kept for the record up to this size; the client always gets all of it.
RECORD_BODY_LIMIT = 32 << 20


class Proxy:
    """Owns the upstream connection pool; one per process, in `app.extensions["nexus.proxy"]`."""

    def __init__(self, upstream: Upstream, keep_chunks: bool = True):
        self.upstream = upstream
        self.keep_chunks = keep_chunks

    def stop(self) -> None:
        self.upstream.close()

    def forward(self, exchange: Exchange, environ: dict, authorisation: Authorisation
                ) -> Response:
        """Send the exchange upstream and return the response that relays the answer.

        Raises UpstreamError/UpstreamTimeout when no answer came (the caller ends the exchange).
        """
        headers = upstream_request_headers(
            exchange.request_headers, drop_credentials=authorisation.drop_client_credentials,
            add_betas=authorisation.add_betas) + authorisation.credential_headers
        client_socket = environ.get("nexus.client_socket") or environ.get("gunicorn.socket")
        if client_socket is None:  # a server that does not tell: disconnects show on write
            watch = None
            answer = self.upstream.open(exchange, headers)
        else:
            watch = ClientWatch(client_socket)
            try:
                answer = self._open_watched(exchange, headers, watch)
            except BaseException:
                watch.stop()
                raise
            watch.on_gone(answer.abort)
        exchange.first_byte_ms = round(exchange.elapsed_ms(), 3)
        exchange.upstream_status = answer.status
        content_type = (header_value(answer.headers, "content-type") or "").lower()
        is_sse = content_type.startswith("text/event-stream")
        if answer.status >= 400 and not is_sse and exchange.method != "HEAD":
            _rewrite_foreign_error(answer, content_type)
        exchange.response_headers = answer.headers
        encoding = header_value(answer.headers, "content-encoding")
        if is_sse:
            fold: StreamFold | BodyFold = StreamFold(exchange, encoding, self.keep_chunks)
        else:
            fold = BodyFold(exchange, encoding, RECORD_BODY_LIMIT)

        if exchange.method == "HEAD" or answer.status < 200 or answer.status in (204, 304):
            body = _bodiless(exchange, answer, fold, watch)  # nothing will be iterated
        else:
            body = RelayBody(exchange, answer, fold, align_events=is_sse and not encoding,
                             watch=watch)

        response = Response(body, status=answer.status, direct_passthrough=True)
        response.headers.clear()  # no defaults of Flask's: exactly the upstream's headers
        for name, value in client_response_headers(answer.headers):
            response.headers.add(name, value)
        response.headers[REQUEST_ID_HEADER] = exchange.id
        return response

    def _open_watched(self, exchange: Exchange, headers: list[tuple[str, str]],
                      watch: ClientWatch) -> UpstreamResponse:
        """`upstream.open`, abandoned (connection closed) if the client hangs up meanwhile."""
        opener = gevent.spawn(contextvars.copy_context().run, _outcome, self.upstream.open,
                              exchange, headers)
        gevent.wait([opener, watch.gone], count=1)
        if not opener.ready():
            opener.kill(block=True)  # urllib3 closes the half-used connection on the way out
            raise ClientDisconnected("client closed the connection while waiting for the "
                                     "upstream")
        answer, error = opener.value
        if error is not None:
            raise error
        return answer


def _rewrite_foreign_error(answer: UpstreamResponse, content_type: str) -> None:
    """An error answer whose body is not a JSON object (an HTML page from a load balancer) is
    replaced by an Anthropic-shaped error with the same status (app/proxy/error_bodies.py);
    the API's own errors, JSON objects, pass through untouched."""
    complete = answer.read_ahead(error_bodies.READ_LIMIT)
    encoding = header_value(answer.headers, "content-encoding")
    body = answer.first_chunk
    if encoding:
        try:
            decoder = decoder_for(encoding)
            body = decoder.decompress(body) + (decoder.flush() if complete else b"")
        except Exception:  # unknown or corrupt coding: quote the bytes as they are
            body = answer.first_chunk
    if not answer.broken and (error_bodies.is_json_object(body) or (
            not complete and "json" in content_type)):
        return  # an API error (a large one is still being read: relayed as it comes)
    replacement = error_bodies.anthropic_error(answer.status, body, complete)
    headers = [(name, value) for name, value in answer.headers if name.lower() not in (
        "content-type", "content-length", "content-encoding", "transfer-encoding")]
    answer.replace(replacement, headers + [("Content-Type", "application/json"),
                                           ("Content-Length", str(len(replacement)))])


def _bodiless(exchange: Exchange, answer: UpstreamResponse, fold: StreamFold | BodyFold,
              watch: ClientWatch | None) -> list[bytes]:
    """End an exchange whose answer has no body by definition (HEAD, 1xx, 204, 304)."""
    if watch is not None:
        watch.stop()
    answer.close()
    fold.finish(exchange.elapsed_ms())
    exchange.complete()
    return []


def _outcome(function, *args):
    """(result, None) or (None, exception): a greenlet that raises gets its traceback printed
    by gevent's hub, and these exceptions are expected."""
    try:
        return function(*args), None
    except Exception as err:
        return None, err
