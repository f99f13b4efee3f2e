"""The dashboard's requests pages (SPEC §7.2): the filtered, paged list and one request's detail.

The list reads through the JSON API's own pieces: `params` checks the query string (a mistake
becomes a 400 page naming the parameter), `queries.list_requests` reads one page of summaries
(never bodies) with the indexed queries of `app.storage.queries`. With `HX-Request` the list
answers only its table fragment, so filter changes, paging and live refreshes swap the table.

The detail reads one row by its key and the first chunks of its stream, then shows the stored
request body as a chat (system, user, assistant, tool_use, tool_result, thinking collapsed,
images and documents as placeholders), the rebuilt answer, headers as stored (redacted by the
writer), the raw JSON and the chunk timeline. Stored text is only ever rendered through Jinja's
autoescape; long texts and bodies are cut at fixed sizes so a huge exchange stays a page.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from flask import Response, current_app, make_response, render_template, request, url_for

from app.api import params, serialise
from app.dashboard import bp, htmx
from app.dashboard.chat import build_chat, pretty
from app.dashboard.formats import FORMAT
from app.errors import InvalidRequest
from app.proxy.inbound import MAX_JSON_DEPTH, within_depth
from app.storage import queries
from app.storage.database import StorageError
from app.storage.models import UsageHourly

TABLE_ID = "requests-table"
FORM_FIELDS = ("q", "domain", "account", "model", "type", "status", "since", "until",
               "conversation_id")
STATUS_CHOICES = (("", "Any status"), ("2xx", "2xx success"), ("4xx", "4xx refused"),
                  ("429", "429 rate limited"), ("5xx", "5xx error"), ("error", "Failed"),
                  ("client_disconnected", "Client hung up"))
TYPE_CHOICES = (("", "Any type"), ("inference", "Inference"),
                ("query_evaluation", "Query evaluation"), ("quota", "Quota check"))
SINCE_PRESETS = ("1h", "24h", "7d", "30d")
SEARCH_SPAN = "7d"
SUGGESTION_DAYS = 30       # domains, accounts and models offered in the filters: recent ones
SUGGESTION_LIMIT = 200

CHUNK_LIMIT = params.DEFAULT_CHUNK_LIMIT   # timeline rows shown; the API pages through the rest
RAW_LIMIT = 256 * 1024     # characters of a pretty-printed body shown as raw JSON
PREVIEW_CHARS = 120        # characters of a chunk's data shown in the timeline


# ---------------------------------------------------------------------------------------------
# Views


@bp.get("/requests")
def requests_list():
    args = request.args.to_dict(flat=False)
    values = {name: request.args.get(name, "") for name in FORM_FIELDS}
    if values["q"].strip() and not (values["since"] or values["until"]):
        # A text search may read every row of its range (always on SQLite; on PostgreSQL for
        # fewer than three characters, which the trigram index cannot serve): without a range
        # it searches the last week (shown in the form, widened by choosing another), so a
        # page never scans all.
        values["since"], args["since"] = SEARCH_SPAN, [SEARCH_SPAN]
    limit = offset = 0
    rows: list[dict] = []
    total: int | None = 0
    error = None
    status = 200
    try:
        filters = params.request_filter(args, _now())
        limit, offset = params.list_paging(args)
        limit = max(limit, 1)
        with queries.read_session():
            rows, total = _read_page(filters, limit, offset)
    except InvalidRequest as err:
        error, status = err.message, 400
    except StorageError:
        current_app.logger.warning("dashboard: the requests cannot be read", exc_info=True)
        error, status = "The database cannot be read right now; see the server log.", 503
    page = _page(values, rows, total, limit or params.DEFAULT_LIMIT, offset, error)
    if htmx and not htmx.history_restore_request and not htmx.boosted:
        response = make_response(render_template("dashboard/requests/_table.html", **page),
                                 status)
        if htmx.trigger != TABLE_ID:  # a filter change or a page link: show clean URLs
            response.headers["HX-Push-Url"] = page["self_url"]
    else:
        suggestions = _suggestions() if status != 503 else {}
        response = make_response(render_template(
            "dashboard/requests/list.html", suggestions=suggestions,
            status_choices=_choices(STATUS_CHOICES, values["status"]),
            type_choices=_choices(TYPE_CHOICES, values["type"]), since_presets=SINCE_PRESETS,
            **page), status)
    response.headers["Vary"] = "HX-Request"
    return response


@bp.get("/requests/<path:raw_id>")
def request_detail(raw_id: str):
    request_id = params.request_id(raw_id)
    if request_id is None:
        return _not_found(raw_id)
    try:
        with queries.read_session():
            row = queries.get_request(request_id)
            chunks, chunk_total = (queries.list_chunks(request_id, CHUNK_LIMIT, 0)
                                   if row is not None and row.stream else ([], 0))
    except StorageError:
        current_app.logger.warning("dashboard: a request cannot be read", exc_info=True)
        return _message("Storage unavailable",
                        "The database cannot be read right now; see the server log.", 503)
    if row is None:
        return _not_found(raw_id)
    body = _parse(row.request_body)
    answer = _parse(row.response_body)
    response = make_response(render_template(
        "dashboard/requests/detail.html", r=row, fmt=FORMAT,
        chat=build_chat(body, answer) if isinstance(body, dict) else None,
        answer_error=_answer_error(answer),
        parameters=_parameters(body),
        tools=_tool_names(body),
        request_headers=_headers(row.request_headers),
        response_headers=_headers(row.response_headers),
        attempts=_attempts(row.attempts_detail),
        timeline=_timeline(chunks, row.duration_ms), chunk_total=chunk_total,
        raw_request=_raw(body, row.request_body), raw_response=_raw(answer, row.response_body),
        api_url=url_for("api.get_request", raw_id=request_id)
        if "api" in current_app.blueprints else None))
    response.headers["Cache-Control"] = "no-store"  # bodies: keep them out of caches
    return response


# ---------------------------------------------------------------------------------------------
# The list


def _now() -> datetime:
    return current_app.extensions["nexus.clock"]()


def _read_page(filters: queries.RequestFilter, limit: int,
               offset: int) -> tuple[list[dict], int | None]:
    """One page of summaries and the number of matches, or None for "more than this page
    shows" with a text search: counting every match of `q` computes the search text of each
    (the index only narrows candidates down), so a search only looks one row past the page to
    know whether there is a next one."""
    if not filters.text:
        return queries.list_requests(filters, limit, offset)
    rows = list(queries.page_query(filters).limit(limit + 1).offset(offset).dicts())
    if len(rows) > limit:
        return rows[:limit], None
    return rows, offset + len(rows) if rows or offset == 0 else None


def _page(values: dict[str, str], rows: list[dict], total: int | None, limit: int,
          offset: int, error: str | None) -> dict[str, Any]:
    """What `_table.html` shows: rows, counts, the URLs of this page and its neighbours
    (`total` None: not counted, and there is a next page)."""
    more = total is None or offset + limit < total
    last = None if total is None else max((total - 1) // limit * limit, 0)
    filtered = any(values[name] for name in FORM_FIELDS)
    return {
        "rows": rows, "total": total, "limit": limit, "offset": offset, "error": error,
        "values": values, "filtered": filtered, "fmt": FORMAT, "table_id": TABLE_ID,
        "first_shown": offset + 1 if rows else 0, "last_shown": offset + len(rows),
        "page_number": offset // limit + 1,
        "page_count": None if total is None else max((total + limit - 1) // limit, 1),
        "self_url": _list_url(values, limit, offset),
        "first_url": _list_url(values, limit, 0) if offset > 0 else None,
        "prev_url": _list_url(values, limit, max(offset - limit, 0)) if offset > 0 else None,
        "next_url": _list_url(values, limit, offset + limit) if more and rows else None,
        "last_url": _list_url(values, limit, last) if last is not None and offset < last
        else None,
        "clear_url": url_for("dashboard.requests_list"),
        "live": offset == 0 and error is None, "default_limit": params.DEFAULT_LIMIT,
    }


def _list_url(values: dict[str, str], limit: int, offset: int) -> str:
    """The list's URL with only the filters in use (a form sends every field, empty or not)."""
    query = [(name, values[name]) for name in FORM_FIELDS if values[name]]
    if limit != params.DEFAULT_LIMIT:
        query.append(("limit", str(limit)))
    if offset:
        query.append(("offset", str(offset)))
    base = url_for("dashboard.requests_list")
    return f"{base}?{urlencode(query)}" if query else base


def _choices(choices: tuple[tuple[str, str], ...], current: str) -> list[tuple[str, str]]:
    """A select's options, with the current value added when the URL holds another one."""
    known = [value for value, _ in choices]
    extra = [(current, current)] if current and current.lower() not in known else []
    return [*choices, *extra]


def _suggestions() -> dict[str, list[str]]:
    """Domains, accounts and models seen recently, from the hourly roll-up (small and keyed
    by hour), offered as the filters' datalists."""
    since = _now().replace(minute=0, second=0, microsecond=0) - timedelta(days=SUGGESTION_DAYS)
    found: dict[str, set[str]] = {"domain": set(), "account": set(), "model": set()}
    try:
        with queries.read_session():
            keys = (UsageHourly.select(UsageHourly.domain, UsageHourly.account_id,
                                       UsageHourly.model)
                    .where(UsageHourly.hour >= since)
                    .group_by(UsageHourly.domain, UsageHourly.account_id, UsageHourly.model)
                    .tuples())
            for domain, account, model in keys:
                for name, value in (("domain", domain), ("account", account),
                                    ("model", model)):
                    if value:
                        found[name].add(value)
    except StorageError:
        return {}
    return {name: sorted(items)[:SUGGESTION_LIMIT] for name, items in found.items()}


# ---------------------------------------------------------------------------------------------
# Pages for what is not there


def _not_found(raw_id: str) -> Response:
    return _message("Request not found",
                    f"No request with id {raw_id[:100]!r} was recorded.", 404)


def _message(title: str, message: str, status: int) -> Response:
    return make_response(render_template("dashboard/requests/message.html", title=title,
                                         message=message), status)


def _answer_error(answer: Any) -> dict[str, str] | None:
    """An error answer's type and message (Anthropic's shape)."""
    if isinstance(answer, dict) and answer.get("type") == "error":
        error = answer.get("error") if isinstance(answer.get("error"), dict) else {}
        return {"type": str(error.get("type") or "error"),
                "message": str(error.get("message") or "")}
    return None


def _parameters(body: Any) -> str | None:
    """The request's settings: the body without its messages, system prompt and tools."""
    if not isinstance(body, dict):
        return None
    rest = {key: value for key, value in body.items()
            if key not in ("messages", "system", "tools")}
    return pretty(rest) if rest else None


def _tool_names(body: Any) -> list[str]:
    tools = body.get("tools") if isinstance(body, dict) else None
    if not isinstance(tools, list):
        return []
    return [str(tool.get("name") or tool.get("type") or "?") for tool in tools
            if isinstance(tool, dict)]


# ---------------------------------------------------------------------------------------------
# Headers, attempts, raw bodies, chunks


def _headers(stored: Any) -> list[tuple[str, str]]:
    """Stored headers (pairs, already redacted by the writer) as rows."""
    if isinstance(stored, dict):
        stored = list(stored.items())
    if not isinstance(stored, list):
        return []
    return [(str(item[0]), str(item[1])) for item in stored
            if isinstance(item, (list, tuple)) and len(item) == 2]


def _attempts(detail: Any) -> tuple[list[str], list[list[Any]]]:
    """The attempts' columns (the union of their keys, in first-seen order) and rows."""
    if not isinstance(detail, list) or not detail:
        return [], []
    items = [item for item in detail if isinstance(item, dict)]
    columns = list(dict.fromkeys(key for item in items for key in item))
    return columns, [[item.get(column) for column in columns] for item in items]


def _parse(text: str | None) -> Any:
    """A stored body as JSON when it is an object or array, else the text (or None)."""
    if not text or text.lstrip()[:1] not in ("{", "["):
        return text
    try:
        parsed = json.loads(text)
    except (ValueError, RecursionError):  # truncated, not JSON, or too deep to parse
        return text
    # A body the proxy refused as too deep (or one on another /v1 path) would make the chat
    # view and the pretty printer recurse past Python's limit: it is shown as stored.
    return parsed if within_depth(parsed, MAX_JSON_DEPTH) else text


def _raw(parsed: Any, text: str | None) -> dict[str, Any] | None:
    """A body for the raw view: pretty JSON when it parses (inline base64 data of images and
    documents shortened to a note), the text as stored otherwise; cut at RAW_LIMIT
    characters. The JSON API has every byte."""
    if text is None:
        return None
    shown = pretty(_without_media(parsed)) if isinstance(parsed, (dict, list)) else text
    omitted = max(len(shown) - RAW_LIMIT, 0)
    return {"text": shown[:RAW_LIMIT], "omitted": omitted, "size": len(text.encode()),
            "json": isinstance(parsed, (dict, list))}


def _without_media(value: Any) -> Any:
    if isinstance(value, list):
        return [_without_media(item) for item in value]
    if not isinstance(value, dict):
        return value
    if value.get("type") == "base64" and isinstance(value.get("data"), str):
        size = FORMAT.size(len(value["data"]) * 3 // 4)
        return {**value, "data": f"[{size} of base64 data, left out here]"}
    return {key: _without_media(item) for key, item in value.items()}


def _timeline(chunks: list, duration_ms: float | None) -> list[dict[str, Any]]:
    """Each stored SSE event: name, offset, gap to the one before, a short preview, and its
    place between the request's arrival and its end (in percent, for the timeline's dots)."""
    items = []
    previous = None
    span = max(max((chunk.offset_ms for chunk in chunks), default=0), duration_ms or 0) or 1
    for chunk in chunks:
        shown = serialise.chunk(chunk)
        name = shown["event"] or ("message" if shown["data"] is not None else "(comment)")
        gap = None if previous is None else chunk.offset_ms - previous
        previous = chunk.offset_ms
        items.append({"seq": chunk.seq, "offset_ms": chunk.offset_ms, "gap_ms": gap,
                      "event": name, "preview": _preview(shown["data"], shown["raw"]),
                      "percent": round(100 * chunk.offset_ms / span, 1)})
    return items


def _preview(data: Any, raw: str) -> str:
    if isinstance(data, dict):
        text = _event_summary(data)
    elif data is None:
        text = raw.strip()
    else:
        text = data if isinstance(data, str) else json.dumps(data)
    text = text.replace("\r", "").replace("\n", "⏎")
    return text if len(text) <= PREVIEW_CHARS else text[:PREVIEW_CHARS - 1] + "…"


def _event_summary(data: dict[str, Any]) -> str:
    kind = data.get("type")
    if kind == "content_block_delta" and isinstance(data.get("delta"), dict):
        delta = data["delta"]
        for key in ("text", "thinking", "partial_json"):
            if isinstance(delta.get(key), str):
                return delta[key]
        return str(delta.get("type") or "")
    if kind == "content_block_start" and isinstance(data.get("content_block"), dict):
        block = data["content_block"]
        return " ".join(str(item) for item in (block.get("type"), block.get("name")) if item)
    if kind == "message_start" and isinstance(data.get("message"), dict):
        message = data["message"]
        usage = message.get("usage") if isinstance(message.get("usage"), dict) else {}
        tokens = usage.get("input_tokens")
        return " · ".join(str(item) for item in (
            message.get("model"), f"{tokens} input tokens" if tokens is not None else "")
            if item)
    if kind == "message_delta":
        delta = data.get("delta") if isinstance(data.get("delta"), dict) else {}
        usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
        tokens = usage.get("output_tokens")
        return " · ".join(str(item) for item in (
            delta.get("stop_reason"), f"{tokens} output tokens" if tokens is not None else "")
            if item)
    if kind == "error" and isinstance(data.get("error"), dict):
        return f"{data['error'].get('type', '')}: {data['error'].get('message', '')}"
    if kind in ("content_block_stop", "message_stop", "ping"):
        return ""
    return json.dumps(data, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# Formatting for the templates
