"""What the event bus tells the metrics: one count per ended exchange, its tokens and cost,
its latencies, its upstream attempts; quota alerts and OAuth refresh failures.

Subscribers run on the request path, so they only increment counters and observe histograms:
no I/O, nothing that waits. Labels are bounded: status codes, methods, request types and
outcomes are small fixed sets, and the client-chosen ones (domain, model) keep the first
MAX_VALUES distinct values seen and call the rest `other`, so a client inventing names cannot
grow the scrape without bound.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.events import (
    EventBus,
    ExchangeDisconnected,
    ExchangeEnded,
    ExchangeFailed,
    ExchangeStarted,
    OAuthRefreshFailed,
    UsageAlert,
)
from app.proxy.exchange import CLIENT_DISCONNECTED, Exchange
from app.usage.pricing import PriceTable, cost_usd

# Seconds, for answers that take from tens of milliseconds (count_tokens) to ten minutes
# (CLAUDE_API_TIMEOUT's default: a long extended-thinking stream).
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
MAX_VALUES = 100
OTHER, NONE = "other", "none"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
TOKEN_KINDS = (("input", "input_tokens"), ("output", "output_tokens"),
               ("cache_creation", "cache_creation_input_tokens"),
               ("cache_read", "cache_read_input_tokens"))
_SAFE = re.compile(r"[A-Za-z0-9\[][A-Za-z0-9._:@/\[\]-]{0,99}")  # [::1]:3000 too


class LabelValues:
    """A client-chosen value as a label value: the first `limit` distinct safe values as they
    are, `other` for the rest, `none` when missing."""

    def __init__(self, limit: int = MAX_VALUES):
        self.limit = limit
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, value: object) -> str:
        if not isinstance(value, str) or not value:
            return NONE
        if value in self._seen:
            return value
        if not _SAFE.fullmatch(value):
            return OTHER
        with self._lock:
            if len(self._seen) >= self.limit:
                return OTHER
            self._seen.add(value)
        return value


def status_label(status: object) -> str:
    """The HTTP status sent, `client_disconnected`, or `none`."""
    if status == CLIENT_DISCONNECTED:
        return CLIENT_DISCONNECTED
    if isinstance(status, int) and 100 <= status <= 599:
        return str(status)
    return NONE if status is None else OTHER


def attempt_failure(error: str | None) -> str:
    """`timeout` or `connection_error` for an attempt that got no answer (its error is the
    exception's repr)."""
    return "timeout" if "Timeout" in (error or "").split("(", 1)[0] else "connection_error"


def _fixed(value: object) -> str:
    """A value from a small set the proxy chose (an alert's kind or level), checked anyway."""
    return value if isinstance(value, str) and _SAFE.fullmatch(value) else OTHER


class ExchangeMetrics:
    """The event-driven metrics of one app, in its registry."""

    def __init__(self, registry: CollectorRegistry,
                 prices: Callable[[], PriceTable | None]):
        self._prices = prices
        self.domains, self.models, self.errors = LabelValues(), LabelValues(), LabelValues(50)
        r = registry
        self.requests = Counter(
            "nexus_requests", "Exchanges ended, by domain, method, request type, model and "
            "HTTP status sent (or client_disconnected).",
            ["domain", "method", "request_type", "model", "status"], registry=r)
        self.in_flight = Gauge("nexus_requests_in_flight", "Exchanges started and not ended.",
                               registry=r, multiprocess_mode="livesum")
        self.tokens = Counter(
            "nexus_tokens", "Tokens of ended exchanges, from the answer's usage; kind is "
            "input, output, cache_creation or cache_read.", ["domain", "model", "kind"],
            registry=r)
        self.cost = Counter(
            "nexus_cost_usd", "Cost of ended exchanges in USD, from the price table (unpriced "
            "models add nothing).", ["domain", "model"], registry=r)
        self.duration = Histogram(
            "nexus_request_duration_seconds", "From receiving the request to the end of the "
            "answer (or the client's hang-up).", ["model", "stream"], buckets=BUCKETS,
            registry=r)
        self.upstream_latency = Histogram(
            "nexus_upstream_latency_seconds", "Per answered upstream attempt: from sending it "
            "to its status, headers and first body bytes.", ["model"], buckets=BUCKETS,
            registry=r)
        self.first_token = Histogram(
            "nexus_time_to_first_token_seconds", "Streams: from receiving the request to the "
            "first content delta.", ["model"], buckets=BUCKETS, registry=r)
        self.attempts = Counter(
            "nexus_upstream_attempts", "Upstream attempts by outcome: 2xx, 3xx, 4xx, 5xx, "
            "timeout or connection_error.", ["outcome"], registry=r)
        self.retries = Counter(
            "nexus_upstream_retries", "Upstream attempts that were retried, by reason: the "
            "status answered, timeout or connection_error.", ["reason"], registry=r)
        self.upstream_errors = Counter(
            "nexus_upstream_errors", "Exchanges whose upstream answered an error (its error "
            "type, else http_<status>) or failed (the proxy's error type).", ["error_type"],
            registry=r)
        self.alerts = Counter("nexus_usage_alerts", "Quota alerts raised, by kind and level.",
                              ["kind", "level"], registry=r)
        self.oauth_failures = Counter("nexus_oauth_refresh_failures",
                                      "OAuth token refreshes that failed, by domain.",
                                      ["domain"], registry=r)

    def subscribe(self, bus: EventBus) -> None:
        bus.subscribe(ExchangeStarted, self._on_started)
        bus.subscribe(ExchangeEnded, self._on_ended)
        bus.subscribe(UsageAlert, self._on_alert)
        bus.subscribe(OAuthRefreshFailed, self._on_oauth_failed)

    def _on_started(self, event: ExchangeStarted) -> None:
        self.in_flight.inc()

    def _on_ended(self, event: ExchangeEnded) -> None:
        self.in_flight.dec()
        x = event.exchange
        domain, model = self.domains(x.domain), self.models(x.model)
        method = x.method if x.method in METHODS else OTHER
        request_type = x.request_type if x.request_type in (
            "inference", "query_evaluation", "quota") else (x.kind or NONE)
        self.requests.labels(domain, method, request_type, model, status_label(x.status)).inc()
        if x.duration_ms is not None:
            self.duration.labels(model, "true" if x.stream else "false").observe(
                x.duration_ms / 1000)
        if x.stream and x.first_token_ms is not None:
            self.first_token.labels(model).observe(x.first_token_ms / 1000)
        self._attempts(x, model)
        self._usage(x, domain, model)
        error_type = self._upstream_error(event, x)
        if error_type is not None:
            self.upstream_errors.labels(error_type).inc()

    def _attempts(self, x: Exchange, model: str) -> None:
        for attempt in x.attempts:
            if attempt.status is None:
                outcome = attempt_failure(attempt.error)
            else:
                outcome = f"{attempt.status // 100}xx"
                self.upstream_latency.labels(model).observe(attempt.duration_ms / 1000)
            self.attempts.labels(outcome).inc()
            if attempt.retry_delay_s is not None:
                self.retries.labels(outcome if attempt.status is None
                                    else status_label(attempt.status)).inc()

    def _usage(self, x: Exchange, domain: str, model: str) -> None:
        usage = x.usage
        if not isinstance(usage, dict):
            return
        for kind, key in TOKEN_KINDS:
            value = usage.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                self.tokens.labels(domain, model, kind).inc(value)
        prices = self._prices()
        if prices is not None:
            cost, _ = cost_usd(usage, x.model, prices)
            if cost:
                self.cost.labels(domain, model).inc(float(cost))

    def _upstream_error(self, event: ExchangeEnded, x: Exchange) -> str | None:
        if not x.attempts or isinstance(event, ExchangeDisconnected):
            return None  # answered by the proxy itself, or the client went away
        if isinstance(event, ExchangeFailed):
            return self.errors(x.error_type)
        status = x.upstream_status
        if not isinstance(status, int) or status < 400:
            return None
        error = x.response.get("error") if isinstance(x.response, dict) else None
        named = self.errors(error.get("type")) if isinstance(error, dict) else NONE
        return named if named not in (NONE, OTHER) else f"http_{status_label(status)}"

    def _on_alert(self, event: UsageAlert) -> None:
        self.alerts.labels(_fixed(event.kind), _fixed(event.level)).inc()

    def _on_oauth_failed(self, event: OAuthRefreshFailed) -> None:
        self.oauth_failures.labels(self.domains(event.domain)).inc()
