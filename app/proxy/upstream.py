"""The connection to the Claude API: pooled, with timeouts and retries before the first byte."""

from __future__ import annotations

import http.client
import logging
import os
import socket
import time
import urllib.request
from dataclasses import dataclass, field

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from urllib3.util import SKIP_HEADER

from app.errors import UpstreamError, UpstreamTimeout
from app.proxy.exchange import Attempt, Exchange
from app.proxy.retry import RetryPolicy

log = logging.getLogger(__name__)

READ_SIZE = 65536
CONNECT_TIMEOUT_S = 10.0
# Idle keep-alive connections kept per upstream; beyond it connections are closed after use.
# Large, because a busy proxy has hundreds of streams open and re-handshaking TLS costs ~50 ms.
POOL_SIZE = 512

TRANSPORT_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)
# Not urllib3's TimeoutError: its NewConnectionError (connection refused) is one of those.
TIMEOUT_ERRORS = (requests.Timeout, urllib3.exceptions.ReadTimeoutError, socket.timeout)


def is_timeout(err: BaseException) -> bool:
    """Whether a transport error was a timeout rather than a refusal or a reset."""
    return isinstance(err, TIMEOUT_ERRORS)


def transport_error(err: BaseException, waiting_for: str) -> UpstreamError:
    """Our error for a transport failure: 504 for timeouts, 502 for the rest."""
    if is_timeout(err):
        return UpstreamTimeout(f"The upstream did not answer in time (waiting for {waiting_for}).")
    reason = str(err)[:300] or type(err).__name__
    return UpstreamError(f"The upstream connection failed while waiting for {waiting_for}: "
                         f"{reason}")


@dataclass(eq=False)
class UpstreamResponse:
    """An upstream answer whose status and headers are known and whose body is being read."""

    response: requests.Response
    status: int
    headers: list[tuple[str, str]]
    first_chunk: bytes
    closed: bool = field(default=False)
    replaced: bool = field(default=False)  # the body is `first_chunk` alone (see `replace`)
    broken: bool = field(default=False)    # `read_ahead` met a transport error

    def read(self) -> bytes:
        """The next bytes as they arrive (b'' at the end); raises on transport errors."""
        if self.replaced:
            return b""
        return self.response.raw.read1(READ_SIZE)

    def read_ahead(self, limit: int) -> bool:
        """Read on into `first_chunk` until the body ends (True) or `limit` bytes are held
        (False). A transport error also stops it (False, `broken` set): the caller decides."""
        while len(self.first_chunk) < limit:
            try:
                more = self.read()
            except TRANSPORT_ERRORS:
                self.broken = True
                return False
            if not more:
                return True
            self.first_chunk += more
        return False

    def replace(self, body: bytes, headers: list[tuple[str, str]]) -> None:
        """Answer the client with this body and these headers instead of the upstream's; the
        upstream connection is let go (closed if its body was not read to the end)."""
        self.close()
        self.first_chunk, self.headers, self.replaced = body, headers, True

    def close(self) -> None:
        """Release the connection; a body not read to its end closes the socket instead."""
        if not self.closed:
            self.closed = True
            self.response.close()

    def abort(self) -> None:
        """Cut the connection now, from any greenlet: a read blocked on it ends at once."""
        conn = getattr(self.response.raw, "connection", None)
        sock = getattr(conn, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Upstream:
    """Sends requests to CLAUDE_API_BASE_URL exactly as given, retrying before the first byte."""

    def __init__(self, base_url: str, timeout: float, policy: RetryPolicy):
        self.base_url = base_url.rstrip("/")
        self.timeout = (min(CONNECT_TIMEOUT_S, timeout), timeout)
        self.policy = policy
        # The adapter alone, not a Session: a Session would keep the answers' cookies (and could
        # hand them to other clients), follow redirects and run hooks — work we never want.
        self.adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE, max_retries=0)
        # A corporate CA bundle and proxies from the environment are honoured, read once.
        self.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") \
            or True
        self.proxies = {k: v for k, v in urllib.request.getproxies().items()
                        if k in ("http", "https")}
        if urllib.request.proxy_bypass(self.base_url.split("://", 1)[1].split("/", 1)[0]):
            self.proxies = {}

    def close(self) -> None:
        self.adapter.close()

    def open(self, exchange: Exchange, headers: list[tuple[str, str]]) -> UpstreamResponse:
        """Send the exchange's request; retry transport failures and retryable statuses.

        Returns once the status, headers and first body bytes are in; the last upstream answer
        is returned when retries run out. Raises UpstreamError/UpstreamTimeout when no answer
        came at all. Every attempt is appended to `exchange.attempts`.
        """
        waited = 0.0
        number = 0
        while True:
            number += 1
            started = exchange.elapsed_ms()
            try:
                answer = self._attempt(exchange, headers)
            except TRANSPORT_ERRORS as err:
                attempt = Attempt(number, round(started, 3),
                                  round(exchange.elapsed_ms() - started, 3), None, repr(err))
                exchange.attempts.append(attempt)
                delay = self.policy.delay_after(number, waited, None)
                if delay is None:
                    raise transport_error(err, "response headers and first bytes") from err
                log.warning("upstream attempt %d failed (%s); retrying in %.2fs",
                            number, type(err).__name__, delay)
            else:
                attempt = Attempt(number, round(started, 3),
                                  round(exchange.elapsed_ms() - started, 3), answer.status)
                exchange.attempts.append(attempt)
                delay = self.policy.delay_after(number, waited, answer.status, answer.headers)
                if delay is None:
                    return answer
                answer.close()
                log.warning("upstream answered %d on attempt %d; retrying in %.2fs",
                            answer.status, number, delay)
            attempt.retry_delay_s = round(delay, 3)
            time.sleep(delay)  # cooperative under gevent
            waited += delay

    def _attempt(self, exchange: Exchange, headers: list[tuple[str, str]]) -> UpstreamResponse:
        response = self.adapter.send(self._prepare(exchange, headers), stream=True,
                                     timeout=self.timeout, verify=self.verify,
                                     proxies=self.proxies)
        try:
            first = response.raw.read1(READ_SIZE)
        except BaseException:
            response.close()
            raise
        headers = list(response.raw.headers.items())
        _let_go_of_header_copies(response)
        return UpstreamResponse(response, response.status_code, headers, first)

    def _prepare(self, exchange: Exchange, headers: list[tuple[str, str]]
                 ) -> requests.PreparedRequest:
        # Built by hand: requests would re-quote the URL and add default headers and netrc
        # credentials — the upstream must get what the client sent.
        merged: CaseInsensitiveDict = CaseInsensitiveDict()
        for name, value in headers:
            if name in merged:
                sep = "; " if name.lower() == "cookie" else ", "
                merged[name] = f"{merged[name]}{sep}{value}"
            else:
                merged[name] = value
        if "user-agent" not in merged:
            merged["User-Agent"] = SKIP_HEADER  # urllib3 would add its own
        body = exchange.request_body
        if body or exchange.method in ("POST", "PUT", "PATCH"):
            merged["Content-Length"] = str(len(body))
        prepared = requests.PreparedRequest()
        prepared.method = exchange.method
        prepared.url = self.base_url + exchange.path + (f"?{exchange.query}" if exchange.query
                                                        else "")
        prepared.headers = merged
        prepared.body = body or None
        return prepared


def _let_go_of_header_copies(response: requests.Response) -> None:
    """Drop the answer's headers as http.client and requests parsed them: urllib3's copy
    (which it reads again) and our list are all that is needed, and the other two cost an
    open stream about 5 KiB (workload 4 of bench/, hundreds of streams at once)."""
    response.headers = CaseInsensitiveDict()
    original = getattr(response.raw, "_original_response", None)
    if original is not None:
        original.msg = http.client.HTTPMessage()
