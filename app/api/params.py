"""Query-string parameters of the JSON API, checked and turned into query inputs.

Every problem is an InvalidRequest (400, Anthropic's error shape) naming the parameter, so a
script learns what to fix; nothing unchecked reaches a query. An empty value means "no filter",
as in `?domain=&account=` from a form.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from app.errors import InvalidRequest
from app.storage.conversation_queries import ConversationFilter
from app.storage.queries import STATUS_DISCONNECTED, STATUS_ERROR, RequestFilter
from app.storage.usage import RateLimitFilter, UsageFilter

DEFAULT_LIMIT = 50
MAX_LIMIT = 500
DEFAULT_CHUNK_LIMIT = 1000
MAX_CHUNK_LIMIT = 10_000
MAX_OFFSET = 2**31 - 1         # far beyond any real table; keeps the value a safe SQL integer
MAX_TEXT = 1000                # characters of `q`; LIKE patterns have engine limits too
MAX_VALUE = 500                # characters of any other value

LIST_FILTERS = ("domain", "account", "model", "type", "status", "conversation_id", "since",
                "until", "q")
PAGING = ("limit", "offset")
WINDOW_PARAMS = ("account", "domain", "model", "hours")
DAILY_PARAMS = ("account", "domain", "model", "days")
TOOLS_PARAMS = ("account", "domain", "days")
ACCOUNTS_PARAMS = ("days",)
RATELIMIT_PARAMS = ("account", "domain", "since", "until") + PAGING
STATS_PARAMS = ("since", "until", "domain", "account", "model", "conversation_id")
CONVERSATION_FILTERS = ("domain", "account", "since", "until", "q")

DEFAULT_HOURS, MAX_HOURS = 5, 168     # a week of windows at most
DEFAULT_DAYS, MAX_DAYS = 30, 366      # a (leap) year of history at most
DEFAULT_STATS_SPAN = timedelta(hours=24)

_RELATIVE = re.compile(r"(\d{1,6})([mhdw])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_STATUS_CLASS = re.compile(r"[1-5]xx")
_STATUS_CODE = re.compile(r"[1-5]\d\d")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_CONVERSATION_ID = re.compile(r"[0-9A-Za-z_-]{1,64}")

Args = Mapping[str, Sequence[str]]


def request_filter(args: Args, now: datetime | None = None) -> RequestFilter:
    """The filters of `GET /api/requests` from its query string (`now` for relative times)."""
    values = _single_values(args, LIST_FILTERS + PAGING)
    now = now or datetime.now(UTC)
    domain = values.get("domain")
    since = _time(values, "since", now)
    until = _time(values, "until", now)
    if since is not None and until is not None and since > until:
        raise InvalidRequest("Invalid parameter 'since': it is later than 'until'.")
    return RequestFilter(
        domain=domain.lower() if domain else None,  # stored domains are lower-case
        account=values.get("account"),
        model=values.get("model"),
        request_type=values.get("type"),
        status=_status(values.get("status")),
        conversation_id=values.get("conversation_id"),
        since=since,
        until=until,
        text=values.get("q"),
    )


def usage_window(args: Args) -> tuple[UsageFilter, int]:
    """The filters of `GET /api/usage/window` and its length in hours."""
    values = _single_values(args, WINDOW_PARAMS)
    return _usage_filter(values), _bounded(values, "hours", DEFAULT_HOURS, 1, MAX_HOURS)


def usage_days(args: Args, known: Sequence[str] = DAILY_PARAMS) -> tuple[UsageFilter, int]:
    """The filters of a day-by-day usage answer (`known` names those it takes) and its number
    of days."""
    values = _single_values(args, known)
    return _usage_filter(values), _bounded(values, "days", DEFAULT_DAYS, 1, MAX_DAYS)


def ratelimit_filter(args: Args, now: datetime) -> RateLimitFilter:
    """The filters of `GET /api/ratelimits` (paging apart)."""
    values = _single_values(args, RATELIMIT_PARAMS)
    since, until = _time_range(values, now)
    domain = values.get("domain")
    return RateLimitFilter(domain=domain.lower() if domain else None,
                           account=values.get("account"), since=since, until=until)


def ratelimit_paging(args: Args) -> tuple[int, int]:
    """Paging of `GET /api/ratelimits`."""
    return paging(args, known=RATELIMIT_PARAMS)


def stats_range(args: Args, now: datetime) -> tuple[UsageFilter, datetime, datetime]:
    """The filters of `GET /api/stats` and its range: `since` defaults to 24 hours before
    `now`, `until` to `now`."""
    values = _single_values(args, STATS_PARAMS)
    since, until = _time_range(values, now)
    until = until or now
    since = since or min(until, now) - DEFAULT_STATS_SPAN
    if since > until:
        raise InvalidRequest("Invalid parameter 'since': it is later than 'until'.")
    return _usage_filter(values), since, until


def paging(args: Args, default: int = DEFAULT_LIMIT, maximum: int = MAX_LIMIT,
           known: Sequence[str] = PAGING) -> tuple[int, int]:
    """`limit` (default `default`, larger values capped at `maximum`) and `offset` (0)."""
    values = _single_values(args, known)
    limit = _integer(values, "limit", default)
    offset = _integer(values, "offset", 0)
    if offset > MAX_OFFSET:
        raise InvalidRequest(f"Invalid parameter 'offset': at most {MAX_OFFSET}.")
    return min(limit, maximum), offset


def list_paging(args: Args) -> tuple[int, int]:
    """Paging of `GET /api/requests` (whose other parameters are the filters)."""
    return paging(args, known=LIST_FILTERS + PAGING)


def chunk_paging(args: Args) -> tuple[int, int]:
    """Paging of `GET /api/requests/<id>/chunks`: long streams hold thousands of events."""
    return paging(args, DEFAULT_CHUNK_LIMIT, MAX_CHUNK_LIMIT)


def request_id(raw: str) -> str | None:
    """The canonical (lower-case) uuid, or None when `raw` is not one: ids never reach a query
    unchecked, so `../`, quotes and the like end as a plain 404."""
    value = raw.strip().lower()
    return value if _UUID.fullmatch(value) else None


def conversation_filter(args: Args, now: datetime | None = None) -> ConversationFilter:
    """The filters of `GET /api/conversations` from its query string (`now` for relative
    times); `since` and `until` bound the conversation's last activity."""
    values = _single_values(args, CONVERSATION_FILTERS + PAGING)
    since, until = _time_range(values, now or datetime.now(UTC))
    domain = values.get("domain")
    return ConversationFilter(domain=domain.lower() if domain else None,
                              account=values.get("account"), since=since, until=until,
                              text=values.get("q"))


def conversation_paging(args: Args) -> tuple[int, int]:
    """Paging of `GET /api/conversations` (whose other parameters are the filters)."""
    return paging(args, known=CONVERSATION_FILTERS + PAGING)


def conversation_id(raw: str) -> str | None:
    """A conversation id as stored (1 to 64 of `0-9 A-Z a-z _ -`; a uuid in any case is made
    lower-case, as the writer stores it), or None, so anything else ends as a 404 without a
    query."""
    if _UUID.fullmatch(raw.lower()):
        return raw.lower()
    return raw if _CONVERSATION_ID.fullmatch(raw) else None


def no_parameters(args: Args) -> None:
    """Refuse any parameter where an endpoint takes none (a typo must not go unnoticed)."""
    for name in args:
        raise InvalidRequest(f"Unknown parameter '{name}'; this endpoint takes none.")


def _single_values(args: Args, known: Sequence[str]) -> dict[str, str]:
    """Each parameter's one non-empty value; unknown or repeated parameters are refused, so a
    typo (`acount=`) never silently widens a query."""
    values: dict[str, str] = {}
    for name, given in args.items():
        if name not in known:
            raise InvalidRequest(f"Unknown parameter '{name}'; expected one of "
                                 + ", ".join(known) + ".")
        if len(given) > 1:
            raise InvalidRequest(f"Invalid parameter '{name}': given more than once.")
        value = given[0] if given else ""
        if name != "q":  # spaces around a search text may be what is searched for
            value = value.strip()
        limit = MAX_TEXT if name == "q" else MAX_VALUE
        if len(value) > limit:
            raise InvalidRequest(f"Invalid parameter '{name}': longer than {limit} characters.")
        if "\x00" in value:  # PostgreSQL refuses NUL in text; say so instead of failing later
            raise InvalidRequest(f"Invalid parameter '{name}': contains a NUL character.")
        if value:
            values[name] = value
    return values


def _usage_filter(values: dict[str, str]) -> UsageFilter:
    domain = values.get("domain")
    return UsageFilter(domain=domain.lower() if domain else None, account=values.get("account"),
                       model=values.get("model"), conversation_id=values.get("conversation_id"))


def _time_range(values: dict[str, str],
                now: datetime) -> tuple[datetime | None, datetime | None]:
    since = _time(values, "since", now)
    until = _time(values, "until", now)
    if since is not None and until is not None and since > until:
        raise InvalidRequest("Invalid parameter 'since': it is later than 'until'.")
    return since, until


def _bounded(values: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    value = _integer(values, name, default)
    if not low <= value <= high:
        raise InvalidRequest(f"Invalid parameter '{name}': expected a whole number from {low} "
                             f"to {high}.")
    return value


def _integer(values: dict[str, str], name: str, default: int) -> int:
    raw = values.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit():
        raise InvalidRequest(f"Invalid parameter '{name}': expected a whole number, 0 or more.")
    return int(raw)


def _status(raw: str | None) -> str | None:
    if raw is None:
        return None
    value = raw.lower()
    if value in (STATUS_ERROR, STATUS_DISCONNECTED) or _STATUS_CODE.fullmatch(value) \
            or _STATUS_CLASS.fullmatch(value):
        return value
    raise InvalidRequest(f"Invalid parameter 'status': {raw!r}; expected a code (200), a class "
                         "(4xx, 5xx), 'error' or 'client_disconnected'.")


def _time(values: dict[str, str], name: str, now: datetime) -> datetime | None:
    """An ISO-8601 date or datetime (a bare date is 00:00 UTC, no offset means UTC), or a
    span back from now: `30m`, `24h`, `7d`, `2w`."""
    raw = values.get(name)
    if raw is None:
        return None
    relative = _RELATIVE.fullmatch(raw.lower())
    try:
        if relative:
            count, unit = relative.groups()
            return now - timedelta(**{_UNITS[unit]: int(count)})
        parsed = datetime.fromisoformat(raw)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # not a time, or one outside the years 1 to 9999
        pass
    raise InvalidRequest(f"Invalid parameter '{name}': {raw!r}; expected an ISO-8601 date or "
                         "time (2025-03-14, 2025-03-14T09:30:00Z) or a span back from now "
                         "(30m, 24h, 7d, 2w).")
