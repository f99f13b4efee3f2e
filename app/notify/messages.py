"""Slack messages (Block Kit payloads) for each kind of notification. Pure: records in, JSON out.

Every text taken from traffic goes through `mask_text` and Slack's mrkdwn escaping, and is cut
to fit Slack's limits (a section's text 3,000 characters, a field's 2,000, a header's 150; we
keep to 40 blocks of Slack's 50). Each payload has a plain `text` too: Slack shows it in
notifications and where blocks cannot be shown.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from app.events import OAuthRefreshFailed, UsageAlert
from app.notify.dedupe import Repeats
from app.notify.records import Digest, UpstreamProblem
from app.redact import mask_text
from app.usage.pricing import PriceTable, cost_usd

SECTION_TEXT_MAX = 3000
FIELD_TEXT_MAX = 2000
HEADER_TEXT_MAX = 150
CONTEXT_TEXT_MAX = 2000
MAX_BLOCKS = 40
FALLBACK_MAX = 400
ERROR_TEXT_MAX = 1500   # an error message, inside a code block
DIGEST_TEXT_MAX = 1400  # the prompt, and the reply, of a digest
NONE = "—"


def message_for(record: Any, base_url: str, repeats: Repeats | None = None,
                prices: PriceTable | None = None) -> dict:
    """The payload for any record the notifier queues."""
    if isinstance(record, UpstreamProblem):
        return upstream_problem_message(record, base_url, repeats)
    if isinstance(record, OAuthRefreshFailed):
        return refresh_failure_message(record, repeats)
    if isinstance(record, UsageAlert):
        return usage_alert_message(record, base_url, repeats)
    if isinstance(record, Digest):
        cost = cost_usd(record.usage, record.model, prices)[0] if prices is not None else None
        return digest_message(record, base_url, cost)
    raise TypeError(f"no Slack message for {type(record).__name__}")


def upstream_problem_message(p: UpstreamProblem, base_url: str,
                             repeats: Repeats | None = None) -> dict:
    if p.timeout:
        title, icon = "Upstream timeout", ":hourglass:"
    elif p.status is not None and (p.status >= 500 or p.status == 429):
        title, icon = f"Upstream error {p.status}", ":rotating_light:"
    else:
        title, icon = "Upstream answer broke off", ":rotating_light:"
    link = request_link(base_url, p.request_id)
    blocks = [
        header(f"{icon} {title}"),
        fields(("Domain", p.domain), ("Account", p.account_id), ("Model", p.model),
               ("Status", p.status), ("Error type", p.error_type),
               ("Request id", f"`{p.request_id}`", False)),
    ]
    if p.error_message:
        blocks.append(section(f"```{fit(p.error_message, ERROR_TEXT_MAX)}```", escaped=True))
    attempts = f"{p.attempts} attempt{'s' if p.attempts != 1 else ''}"
    took = f"{p.duration_ms:.0f} ms" if p.duration_ms is not None else None
    blocks.append(context(f"<{link}|Open in the dashboard>", fit(f"{p.method} {p.path}", 200),
                          attempts, took, slack_date(p.received_at)))
    text = (f"{title} on {p.domain} ({p.account_id or 'no account'}, "
            f"{p.model or 'no model'}), request {p.request_id}")
    if p.error_type or p.error_message:  # last: what the fallback's length limit cuts
        text += f": {p.error_type or 'error'} {p.error_message or ''}".rstrip()
    return payload(text, blocks, repeats)


def refresh_failure_message(e: OAuthRefreshFailed, repeats: Repeats | None = None) -> dict:
    blocks = [
        header(":key: OAuth refresh failed"),
        fields(("Domain", e.domain), ("Account", e.account_id)),
        section(f"*Reason*\n```{fit(e.reason, ERROR_TEXT_MAX)}```", escaped=True),
        context("Requests of this domain are answered 401 until a refresh succeeds. If the "
                "refresh token was revoked, run "
                f"`flask --app wsgi credentials oauth-login {fit(e.domain, 255)}`."),
    ]
    text = f"OAuth refresh failed for {e.domain} ({e.account_id or 'no account'}): {e.reason}"
    return payload(text, blocks, repeats)


def usage_alert_message(a: UsageAlert, base_url: str, repeats: Repeats | None = None) -> dict:
    who = a.account_id or f"domain {a.domain}"
    shown = f"*{fit(who, 255)}*"
    if a.kind == "unified_status":
        rejected = a.level == "rejected"
        icon = ":no_entry:" if rejected else ":warning:"
        title = f"Quota: upstream status {a.level}"
        what = (f"The upstream is rejecting requests of {shown} ({a.window} limit)."
                if rejected else f"The upstream warns that {shown} is close to its "
                f"{a.window} limit.")
    elif a.kind == "unified_utilization":
        icon = _level_icon(a.level)
        title = f"Quota: upstream {a.window} utilization at {a.level} %"
        used = f"{a.used_percent:.0f} %" if a.used_percent is not None else f"{a.level} %"
        what = f"The upstream reports {used} of the {a.window} limit of {shown} used."
    else:  # window_tokens
        icon = _level_icon(a.level)
        title = f"Quota: {a.level} % of the 5-hour window"
        used = f" ({a.used_percent:.0f} %)" if a.used_percent is not None else ""
        what = (f"{shown} used {_number(a.tokens)} of {_number(a.limit)} output tokens{used} "
                "in the last 5 hours (`ALERT_WINDOW_TOKEN_LIMIT`).")
    blocks = [
        header(f"{icon} {title}"),
        section(what, escaped=True),
        fields(("Account", a.account_id), ("Domain", a.domain), ("Level", a.level),
               ("Window", a.window),
               ("Used", f"{a.used_percent:.1f} %" if a.used_percent is not None else None),
               ("Resets", slack_date(a.resets_at) if a.resets_at else None, False)),
    ]
    if a.request_id:
        blocks.append(context(f"<{request_link(base_url, a.request_id)}|The request that "
                              "crossed it>"))
    resets = f", resets {a.resets_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC" if a.resets_at else ""
    text = f"{title} — {who} on {a.domain}{resets}"
    return payload(text, blocks, repeats)


def digest_message(d: Digest, base_url: str, cost: Decimal | None = None) -> dict:
    usage = d.usage or {}
    tokens = [f"in {_number(usage.get('input_tokens'))}",
              f"out {_number(usage.get('output_tokens'))}"]
    if usage.get("cache_read_input_tokens"):
        tokens.append(f"cache read {_number(usage['cache_read_input_tokens'])}")
    if usage.get("cache_creation_input_tokens"):
        tokens.append(f"cache write {_number(usage['cache_creation_input_tokens'])}")
    blocks = [
        section(f":speech_balloon: *{fit(d.domain, 255)}* · {fit(d.account_id or NONE, 255)} · "
                f"{fit(d.model or NONE, 255)}", escaped=True),
        section(f"*User*\n{quote_lines(fit(d.prompt or NONE, DIGEST_TEXT_MAX))}",
                escaped=True),
        section(f"*Claude*\n{quote_lines(fit(d.reply or NONE, DIGEST_TEXT_MAX))}",
                escaped=True),
        context("tokens " + " / ".join(tokens),
                f"${cost:.6f}" if cost is not None else "cost unknown",
                f"<{request_link(base_url, d.request_id)}|Open in the dashboard>",
                slack_date(d.received_at)),
    ]
    text = f"{d.domain}: {d.prompt or NONE}"
    return payload(text, blocks)


# ------------------------------------------------------------------ building blocks


def payload(text: str, blocks: list[dict], repeats: Repeats | None = None) -> dict:
    """The webhook body: fallback text and at most MAX_BLOCKS blocks."""
    if repeats is not None and repeats.count:
        more = f"{repeats.count} more like this since"
        blocks = [*blocks[: MAX_BLOCKS - 1],
                  context(f":repeat: {more} {slack_date(repeats.since)} (identical alerts are "
                          "sent once per 10 minutes)")]
        text = f"{text} ({more} {repeats.since.astimezone(UTC):%H:%M} UTC)"
    return {"text": _cut(mask_text(text), FALLBACK_MAX), "blocks": blocks[:MAX_BLOCKS]}


def header(text: str) -> dict:
    return {"type": "header",
            "text": {"type": "plain_text", "text": _cut(mask_text(text), HEADER_TEXT_MAX),
                     "emoji": True}}


def section(text: str, escaped: bool = False) -> dict:
    """A mrkdwn section; `escaped` when the caller already ran its parts through `fit`."""
    body = _cut(text, SECTION_TEXT_MAX) if escaped else fit(text, SECTION_TEXT_MAX)
    return {"type": "section", "text": {"type": "mrkdwn", "text": body}}


def fields(*items: tuple) -> dict:
    """A section of two-column fields: (label, value[, escape]); empty values show a dash."""
    out = []
    for label, value, *rest in items[:10]:  # Slack allows 10 fields
        shown = NONE if value is None or value == "" else str(value)
        if not rest or rest[0]:
            shown = fit(shown, FIELD_TEXT_MAX - 40)
        out.append({"type": "mrkdwn", "text": f"*{label}*\n{shown}"})
    return {"type": "section", "fields": out}


def context(*parts: str | None) -> dict:
    text = " · ".join(p for p in parts if p)
    return {"type": "context",
            "elements": [{"type": "mrkdwn", "text": _cut(text, CONTEXT_TEXT_MAX)}]}


def fit(text: str, limit: int) -> str:
    """`text` masked, escaped for mrkdwn and cut (with an ellipsis) to `limit` characters."""
    text = mask_text(str(text))
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    # Cut the raw text, never the escaped one, so no `&amp;` is left half-written.
    size = end = 0
    while size + len(escape(text[end])) <= limit - 1:
        size += len(escape(text[end]))
        end += 1
    return escape(text[:end]) + "…"


def escape(text: str) -> str:
    """Slack's mrkdwn escaping: only &, < and > are special."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def quote_lines(text: str) -> str:
    return "\n".join(f">{line}" for line in text.splitlines() or [""])


def request_link(base_url: str, request_id: str) -> str:
    return f"{base_url.rstrip('/')}/dashboard/requests/{quote(request_id, safe='')}"


def slack_date(when: datetime | None) -> str | None:
    """A date Slack shows in each reader's time zone, with a UTC fallback."""
    if when is None:
        return None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    fallback = f"{when.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"
    return f"<!date^{int(when.timestamp())}^{{date_short_pretty}} {{time_secs}}|{fallback}>"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else NONE


def _level_icon(level: str) -> str:
    return ":rotating_light:" if level.isdigit() and int(level) >= 95 else ":warning:"
