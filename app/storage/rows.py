"""An ended Exchange as the rows that record it: one `requests` row, its `request_chunks` rows
and, when the upstream's answer carried `anthropic-ratelimit-*` headers, one
`ratelimit_samples` row (the rate-limit ledger, SPEC §6.2).

Pure: no Flask, no database. Every value is a plain Python value the models accept (JSON
columns take lists and dicts) and that survives a JSON round trip through the spool.

Two rules hold for every string stored, wherever it came from:
- no secret: credential headers are redacted and any `sk-ant-…` string is masked, in headers,
  bodies, chunks, errors and paths alike (SPEC §3.2);
- no NUL character: PostgreSQL TEXT refuses it (and so a whole batch would fail), so it is
  dropped; lone surrogates, which no UTF-8 database accepts either, become U+FFFD.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from app.events import ExchangeCompleted, ExchangeDisconnected, ExchangeFailed
from app.proxy.decoding import UnsupportedEncoding, decoder_for
from app.proxy.exchange import Exchange
from app.proxy.headers import header_value
from app.redact import mask_decoded, mask_text, redact_headers
from app.redact_events import mask_events
from app.usage.pricing import PriceTable, cost_usd, load_prices
from app.usage.ratelimits import parse_ratelimit_headers

OUTCOMES = (
    (ExchangeCompleted, "completed"),
    (ExchangeFailed, "failed"),
    (ExchangeDisconnected, "client_disconnected"),
)

_INT_MAX = 2**31 - 1  # INTEGER columns are 32-bit on PostgreSQL

_prices: PriceTable | None = None


def _bundled_prices() -> PriceTable:
    """The price file shipped with the product, read once (costs are fixed at write time)."""
    global _prices
    if _prices is None:
        _prices = load_prices()
    return _prices


# (request row, its chunk rows): what the writer queues, writes and spools together. The
# request row may carry its `ratelimit_samples` row under SAMPLE, a key that is no column: the
# sink and the spool take it out (`sample_of`), so it travels, commits and replays with it.
Item = tuple[dict[str, Any], list[dict[str, Any]]]
SAMPLE = "_ratelimit_sample"


def items(exchanges: list[Exchange], keep_chunks: bool,
          prices: PriceTable | None = None) -> tuple[list[Item], list]:
    """The rows of each exchange, and (exchange id, error) for any that could not be built;
    costs from `prices` (default: the bundled price file)."""
    built, failures = [], []
    for exchange in exchanges:
        try:
            request = request_row(exchange, prices)
            sample = ratelimit_row(exchange)
            if sample is not None:
                request[SAMPLE] = sample
            built.append((request, chunk_rows(exchange) if keep_chunks else []))
        except Exception as err:  # a bug on one odd exchange must not lose the whole batch
            failures.append((exchange.id, err))
    return built, failures


def sample_of(request: dict[str, Any]) -> dict[str, Any] | None:
    """The `ratelimit_samples` row an item's request row carries, if any."""
    return request.get(SAMPLE)


def request_row(exchange: Exchange, prices: PriceTable | None = None) -> dict[str, Any]:
    """The `requests` row of an ended exchange (conversation fields are left empty)."""
    x = exchange
    usage = x.usage if isinstance(x.usage, dict) else {}
    split = usage.get("cache_creation") if isinstance(usage.get("cache_creation"), dict) else {}
    tool_names = [clean(str(t.get("name"))) for t in x.tool_uses if isinstance(t, dict)]
    cost, cost_flagged = cost_usd(usage or None, x.model, prices or _bundled_prices())
    return {
        "id": x.id,
        "received_at": x.received_at,
        "completed_at": x.completed_at,
        "domain": clean(x.domain),
        "account_id": _optional(x.account_id),
        "auth_mode": _optional(x.auth_mode, 32),
        "method": clean(x.method)[:16],
        "path": clean(x.path),
        "query": clean(x.query or ""),
        "model": _optional(x.model),
        "request_type": _optional(x.request_type, 32),
        "stream": bool(x.stream),
        "status": None if x.status is None else clean(str(x.status))[:32],
        "outcome": outcome(x),
        "error_type": _optional(x.error_type),
        "error_message": _optional(x.error_message),
        "attempts": len(x.attempts),
        "attempts_detail": scrub([asdict(a) for a in x.attempts]) if x.attempts else None,
        "duration_ms": x.duration_ms,
        "first_byte_ms": x.first_byte_ms,
        "first_token_ms": x.first_token_ms,
        "input_tokens": _count(usage.get("input_tokens")),
        "output_tokens": _count(usage.get("output_tokens")),
        "cache_creation_input_tokens": _count(usage.get("cache_creation_input_tokens")),
        "cache_creation_5m_tokens": _count(split.get("ephemeral_5m_input_tokens")),
        "cache_creation_1h_tokens": _count(split.get("ephemeral_1h_input_tokens")),
        "cache_read_input_tokens": _count(usage.get("cache_read_input_tokens")),
        "service_tier": _optional(usage.get("service_tier")),
        "tool_call_count": len(tool_names),
        "tool_names": tool_names,
        "cost_usd": cost,
        "cost_flagged": cost_flagged,
        "request_headers": _headers(x.request_headers),
        "response_headers": _headers(x.response_headers) if x.response_headers else None,
        "request_body": _clean_body(x.request_body) or None,
        "response_body": response_text(x),
        "response_truncated": bool(x.response_body_truncated),
        "session_id": _optional(x.session_id),
        "agent_id": _optional(x.agent_id),
        "parent_agent_id": None,
        "user_agent": _optional(x.user_agent),
        "client_addr": _optional(x.client_addr),
        "conversation_id": None,
        "branch_id": None,
        "parent_request_id": None,
        "current_message_hash": None,
        "parent_message_hash": None,
        "system_hash": None,
        "message_count": None,
        "is_subtask": False,
        "parent_task_request_id": None,
        "is_compaction_request": False,
        "is_compaction_continuation": False,
        "is_retry": False,
        "response_hash": None,
    }


def chunk_rows(exchange: Exchange) -> list[dict[str, Any]]:
    """One `request_chunks` row per SSE event the exchange kept, in arrival order; masked as
    one stream, so that a secret the answer spells across events is masked in each of them."""
    pairs = list(exchange.chunks)
    texts = mask_events([_without_nul(raw.decode("utf-8", "replace")) for _, raw in pairs])
    return [{"request_id": exchange.id, "seq": seq, "offset_ms": at_ms,
             "data": _valid_utf8(text),
             "received_at": exchange.received_at}  # the request's: same partition
            for seq, ((at_ms, _), text) in enumerate(zip(pairs, texts, strict=True))]


def ratelimit_row(exchange: Exchange) -> dict[str, Any] | None:
    """The `ratelimit_samples` row of the answer's `anthropic-ratelimit-*` headers, or None.

    Only those headers are kept (so no credential can be), cleaned like every stored string.
    """
    x = exchange
    parsed = parse_ratelimit_headers(x.response_headers or [])
    if parsed is None:
        return None
    sample = {name: clean(value) if isinstance(value, str) else value
              for name, value in parsed.items()}
    sample["headers"] = [[clean(name), clean(value)] for name, value in parsed["headers"]]
    return {"account_id": _optional(x.account_id), "domain": clean(x.domain),
            "request_id": x.id, "sampled_at": x.completed_at or x.received_at, **sample}


def outcome(exchange: Exchange) -> str | None:
    """completed, failed or client_disconnected, from the exchange's terminal event."""
    for event_type, name in OUTCOMES:
        if isinstance(exchange.ended, event_type):
            return name
    return None


def response_text(exchange: Exchange) -> str | None:
    """The answer as text: the rebuilt (stream) or parsed (JSON) message, else the raw body."""
    if exchange.response is not None:
        return clean(json.dumps(scrub(exchange.response), ensure_ascii=False,
                                separators=(",", ":")))
    if not exchange.response_body:
        return None
    body = exchange.response_body
    encoding = header_value(exchange.response_headers, "content-encoding")
    if encoding:  # e.g. a gzip'd HTML error page from a load balancer
        try:
            decoder = decoder_for(encoding)
            body = decoder.decompress(body) + decoder.flush()
        except UnsupportedEncoding:
            pass
        except Exception:  # corrupt compressed data (zlib, brotli, zstd errors): keep the bytes
            body = exchange.response_body
    return clean(body.decode("utf-8", "replace"))


# Short strings that clean() keeps as they are: header names and values, JSON keys, types,
# model names. An exchange has some 150 of them, most seen on every exchange; a set look-up is
# a tenth of cleaning one again. Only strings that needed no change are kept (never a
# secret), and the set starts afresh once full, so it stays bounded.
_CLEAN_MAX_CHARS = 64
_CLEAN_KEPT_MAX = 4096
_clean_kept: set[str] = set()


def clean(text: str) -> str:
    """A string as it may be stored: secrets masked, NUL dropped, valid UTF-8."""
    short = len(text) <= _CLEAN_MAX_CHARS
    if short and text in _clean_kept:
        return text
    cleaned = _valid_utf8(mask_text(_without_nul(text)))
    if short and cleaned == text:
        if len(_clean_kept) >= _CLEAN_KEPT_MAX:
            _clean_kept.clear()
        _clean_kept.add(text)
    return cleaned


def _clean_body(body: bytes) -> str:
    """clean() of a body's text, using its bytes: a body that is valid UTF-8 (any client's)
    needs neither encoding again for masking nor checking after it."""
    body = body.replace(b"\x00", b"") if b"\x00" in body else body
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return clean(body.decode("utf-8", "replace"))
    return mask_decoded(text, body)  # masking only puts valid text in valid text


def _without_nul(text: str) -> str:
    # Before masking: `sk-ant-\x00abc…` is a key once stored without its NUL.
    return text.replace("\x00", "") if "\x00" in text else text


def _valid_utf8(text: str) -> str:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def scrub(value: Any) -> Any:
    """A JSON value with every string cleaned, and anything not JSON turned into a string."""
    if isinstance(value, str):
        return clean(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {clean(str(k)): scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(v) for v in value]
    return clean(str(value))


def _headers(headers: list[tuple[str, str]]) -> list[list[str]]:
    return [[clean(name), clean(value)] for name, value in redact_headers(headers)]


def _optional(value: Any, limit: int | None = None) -> str | None:
    if value is None:
        return None
    text = clean(str(value))
    return text[:limit] if limit else text


def _count(value: Any) -> int | None:
    """A token count, or None when the upstream sent something no INTEGER column takes."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _INT_MAX:
        return None
    return value
