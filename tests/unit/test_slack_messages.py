"""Slack notifications, the pure parts: Block Kit payloads, masking and truncation, the
de-duplication windows, the choice of webhook, which exchanges are worth a message."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from app.events import (
    ExchangeCompleted,
    ExchangeDisconnected,
    ExchangeFailed,
    OAuthRefreshFailed,
    UsageAlert,
)
from app.notify.dedupe import WINDOW, Dedupe, Repeats, dedupe_key
from app.notify.messages import (
    MAX_BLOCKS,
    fit,
    message_for,
    payload,
    section,
)
from app.notify.records import (
    Digest,
    UpstreamProblem,
    digest,
    is_upstream_trouble,
    last_user_text,
    upstream_problem,
    wants_digest,
)
from app.notify.targets import Defaults, Target, choose
from app.proxy.exchange import MESSAGES, Exchange
from app.usage.pricing import load_prices
from tests.fakes.slack import payload_problem

BASE = "https://nexus.example.com"
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SECRET = "sk-ant-api03-" + "A1b2C3d4" * 10 + "XyZ9"


def problem(**changes) -> UpstreamProblem:
    fields = dict(request_id="0b6f1c1e-1111-4222-8333-944455556666", domain="team.example.com",
                  account_id="acc_team", model="claude-sonnet-4-5", status=500,
                  error_type="api_error", error_message="Internal server error",
                  method="POST", path="/v1/messages", received_at=T0, duration_ms=12.4,
                  attempts=1)
    return UpstreamProblem(**{**fields, **changes})


def alert(**changes) -> UsageAlert:
    fields = dict(kind="window_tokens", domain="team.example.com", account_id="acc_team",
                  level="80", window="5h", used_percent=85.0, tokens=850, limit=1000,
                  resets_at=T0 + timedelta(hours=3), request_id="req-1",
                  key="acc_team|window_tokens|80|2025-06-01T09:00")
    return UsageAlert(**{**fields, **changes})


def texts(message: dict) -> str:
    return json.dumps(message, ensure_ascii=False)


# ------------------------------------------------------------------ payloads


def test_upstream_error_names_everything_with_a_dashboard_link():
    message = message_for(problem(), BASE)
    assert payload_problem(message) is None  # Slack would post it
    header, fields, error, context = message["blocks"]
    assert header == {"type": "header", "text": {"type": "plain_text", "emoji": True,
                                                 "text": ":rotating_light: Upstream error 500"}}
    shown = [f["text"] for f in fields["fields"]]
    assert shown == ["*Domain*\nteam.example.com", "*Account*\nacc_team",
                     "*Model*\nclaude-sonnet-4-5", "*Status*\n500", "*Error type*\napi_error",
                     "*Request id*\n`0b6f1c1e-1111-4222-8333-944455556666`"]
    assert error["text"]["text"] == "```Internal server error```"
    link = f"{BASE}/dashboard/requests/0b6f1c1e-1111-4222-8333-944455556666"
    assert f"<{link}|Open in the dashboard>" in context["elements"][0]["text"]
    assert "<!date^1748779200^" in context["elements"][0]["text"]
    assert message["text"] == ("Upstream error 500 on team.example.com (acc_team, "
                               "claude-sonnet-4-5), request 0b6f1c1e-1111-4222-8333-944455556666"
                               ": api_error Internal server error")


def test_timeout_and_missing_values():
    message = message_for(problem(status=504, error_type="timeout_error", account_id=None,
                                  model=None, error_message=None), BASE)
    assert message["blocks"][0]["text"]["text"] == ":hourglass: Upstream timeout"
    assert "*Account*\n—" in [f["text"] for f in message["blocks"][1]["fields"]]
    assert len(message["blocks"]) == 3  # no error message block
    assert payload_problem(message) is None


def test_secrets_are_masked_everywhere():
    message = message_for(problem(error_message=f"invalid x-api-key {SECRET}",
                                  domain="team.example.com"), BASE)
    assert SECRET not in texts(message) and "A1b2C3d4" not in texts(message)
    assert "sk-ant-…XyZ9" in message["blocks"][2]["text"]["text"]
    assert "sk-ant-…XyZ9" in message["text"]
    refresh = message_for(OAuthRefreshFailed("team.example.com", "acc", f"bad {SECRET}"), BASE)
    assert SECRET not in texts(refresh) and "sk-ant-…XyZ9" in texts(refresh)


def test_mrkdwn_is_escaped():
    message = message_for(problem(error_message="<!channel> a & b <https://x|y>"), BASE)
    assert message["blocks"][2]["text"]["text"] == \
        "```&lt;!channel&gt; a &amp; b &lt;https://x|y&gt;```"


def test_long_texts_are_cut_to_slack_limits():
    long = "x" * 10_000
    message = message_for(problem(error_message=long, domain="d" * 3000, model="m" * 3000),
                          BASE)
    assert payload_problem(message) is None
    error = message["blocks"][2]["text"]["text"]
    assert error.endswith("…```") and len(error) <= 1500 + 6
    assert len(message["text"]) <= 400
    fallback = message_for(problem(error_message=long), BASE)["text"]
    assert len(fallback) == 400 and "0b6f1c1e-1111" in fallback and fallback.endswith("x…")
    assert all(len(f["text"]) <= 2000 for f in message["blocks"][1]["fields"])


def test_fit_never_splits_an_escape():
    cut = fit("&" * 100, 23)
    assert cut == "&amp;" * 4 + "…" and len(cut) <= 23
    assert fit("short", 10) == "short"
    assert len(section("y" * 5000)["text"]["text"]) == 3000


def test_blocks_are_capped_and_repeats_are_said():
    blocks = [section(str(i)) for i in range(60)]
    capped = payload("fallback", blocks, Repeats(99, T0))
    assert len(capped["blocks"]) == MAX_BLOCKS
    last = capped["blocks"][-1]["elements"][0]["text"]
    assert last.startswith(":repeat: 99 more like this since <!date^1748779200^")
    assert capped["text"] == "fallback (99 more like this since 12:00 UTC)"


def test_usage_alerts():
    window = message_for(alert(), BASE)
    assert payload_problem(window) is None
    assert window["blocks"][0]["text"]["text"] == ":warning: Quota: 80 % of the 5-hour window"
    assert "*acc_team* used 850 of 1,000 output tokens (85 %)" in \
        window["blocks"][1]["text"]["text"]
    assert f"{BASE}/dashboard/requests/req-1" in texts(window)
    assert "resets 2025-06-01 15:00 UTC" in window["text"]
    high = message_for(alert(level="95", used_percent=96.0, tokens=960), BASE)
    assert high["blocks"][0]["text"]["text"].startswith(":rotating_light:")
    rejected = message_for(alert(kind="unified_status", level="rejected", tokens=None,
                                 limit=None, used_percent=None), BASE)
    assert rejected["blocks"][0]["text"]["text"] == ":no_entry: Quota: upstream status rejected"
    utilization = message_for(alert(kind="unified_utilization", level="80", window="7d",
                                    used_percent=83.0, tokens=None, limit=None), BASE)
    assert "83 % of the 7d limit" in utilization["blocks"][1]["text"]["text"]
    for message in (high, rejected, utilization):
        assert payload_problem(message) is None


def test_refresh_failure():
    message = message_for(OAuthRefreshFailed("team.example.com", None, "invalid_grant"), BASE)
    assert payload_problem(message) is None
    assert message["blocks"][0]["text"]["text"] == ":key: OAuth refresh failed"
    assert "credentials oauth-login team.example.com" in texts(message)
    assert message["text"] == "OAuth refresh failed for team.example.com (no account): " \
        "invalid_grant"


def test_digest_quotes_prompt_and_reply_with_tokens_cost_and_link():
    record = Digest(request_id="r-9", domain="team.example.com", account_id="acc",
                    model="claude-sonnet-4-5", prompt="Fix the bug\nin main.py",
                    reply="Done " + "z" * 5000, received_at=T0, duration_ms=800.0,
                    usage={"input_tokens": 1200, "output_tokens": 345,
                           "cache_read_input_tokens": 10_000})
    message = message_for(record, BASE, prices=load_prices())
    assert payload_problem(message) is None
    _, prompt, reply, context = message["blocks"]
    assert prompt["text"]["text"] == "*User*\n>Fix the bug\n>in main.py"
    assert reply["text"]["text"].startswith("*Claude*\n>Done zzz")
    assert reply["text"]["text"].endswith("…") and len(reply["text"]["text"]) < 1500
    footer = context["elements"][0]["text"]
    assert "tokens in 1,200 / out 345 / cache read 10,000" in footer
    cost = Decimal(footer.split("$")[1].split(" ")[0])
    assert cost > 0
    assert f"<{BASE}/dashboard/requests/r-9|Open in the dashboard>" in footer


# ------------------------------------------------------------------ records


def exchange(**changes) -> Exchange:
    x = Exchange(method="POST", path="/v1/messages", query="", domain="team.example.com",
                 publish=lambda event: None, kind=MESSAGES)
    for name, value in changes.items():
        setattr(x, name, value)
    return x


@pytest.mark.parametrize("event, status, upstream, expected", [
    (ExchangeCompleted, 500, 500, True),
    (ExchangeCompleted, 529, 529, True),
    (ExchangeCompleted, 429, 429, True),
    (ExchangeCompleted, 400, 400, False),
    (ExchangeCompleted, 200, 200, False),
    (ExchangeFailed, 502, None, True),        # transport error
    (ExchangeFailed, 504, None, True),        # timeout
    (ExchangeFailed, 200, 200, True),         # broke off mid-stream
    (ExchangeFailed, 401, None, False),       # the proxy's own client errors
    (ExchangeFailed, 413, None, False),
    (ExchangeDisconnected, "client_disconnected", 200, False),
])
def test_which_exchanges_are_upstream_trouble(event, status, upstream, expected):
    assert is_upstream_trouble(event(exchange(status=status, upstream_status=upstream))) \
        is expected


def test_records_copy_little_and_mask():
    x = exchange(status=500, error_type="api_error", error_message="e " + SECRET + " " * 3000,
                 request_body=b"x" * 1_000_000, account_id="acc")
    record = upstream_problem(x)
    assert record.error_message.startswith("e sk-ant-…XyZ9") and len(record.error_message) < 2100
    assert not hasattr(record, "request_body")
    body = {"messages": [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [
            {"type": "text", "text": "<system-reminder>ignore me</system-reminder>"},
            {"type": "text", "text": "Second question"}]}]}
    assert last_user_text(body) == "Second question"
    assert last_user_text({"messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "t", "content": "x"}]}]}) == "(1 tool result)"
    x = exchange(status=200, request_type="inference", request_json=body,
                 response={"content": [{"type": "text", "text": "Answer"},
                                       {"type": "tool_use", "name": "Read", "input": {}}]},
                 usage={"output_tokens": 5})
    assert wants_digest(ExchangeCompleted(x))
    assert not wants_digest(ExchangeCompleted(exchange(status=200, request_type="quota")))
    record = digest(x)
    assert (record.prompt, record.reply) == ("Second question", "Answer\n\n[tool: Read]")


# ------------------------------------------------------------------ de-duplication


def test_identical_alerts_once_per_window_with_a_follow_up_count():
    dedupe = Dedupe()
    assert dedupe.admit(problem(), T0) == (True, None)
    for i in range(99):
        assert dedupe.admit(problem(request_id=f"r{i}"), T0 + timedelta(seconds=i)) == \
            (False, None)
    assert dedupe.suppressed == 99
    assert dedupe.due(T0 + WINDOW - timedelta(seconds=1)) == []
    assert dedupe.next_due() == T0 + WINDOW
    [(latest, repeats)] = dedupe.due(T0 + WINDOW)
    assert latest.request_id == "r98" and repeats == Repeats(99, T0)
    # The window reopened from then; one that ends without repeats just closes.
    assert dedupe.admit(problem(), T0 + WINDOW + timedelta(minutes=1)) == (False, None)
    assert dedupe.due(T0 + 2 * WINDOW) == [(problem(), Repeats(1, T0 + WINDOW))]
    assert dedupe.due(T0 + 3 * WINDOW) == [] and len(dedupe) == 0
    assert dedupe.admit(problem(), T0 + 3 * WINDOW) == (True, None)


def test_a_window_ended_unnoticed_gives_its_count_to_the_next_message():
    dedupe = Dedupe()
    dedupe.admit(problem(), T0)
    dedupe.admit(problem(), T0 + timedelta(minutes=1))
    assert dedupe.admit(problem(), T0 + timedelta(minutes=11)) == (True, Repeats(1, T0))


def test_what_counts_as_identical():
    assert dedupe_key(problem()) == dedupe_key(problem(request_id="other", error_message="x",
                                                       model="claude-opus-4-1"))
    assert dedupe_key(problem()) != dedupe_key(problem(status=502))
    assert dedupe_key(problem()) != dedupe_key(problem(error_type="overloaded_error"))
    assert dedupe_key(problem()) != dedupe_key(problem(domain="other.example.com"))
    assert dedupe_key(problem()) != dedupe_key(problem(account_id="acc_other"))
    assert dedupe_key(alert()) == dedupe_key(alert(tokens=900))
    assert dedupe_key(alert()) != dedupe_key(alert(key="acc_team|window_tokens|95|…"))
    assert dedupe_key(Digest("r", "d", None, None, "", "", None, T0, None)) is None
    dedupe = Dedupe()
    assert all(dedupe.admit(record, T0)[0] for record in (
        problem(), problem(status=502), alert(), OAuthRefreshFailed("d", None, "x")))


def test_flush_reports_open_counts():
    dedupe = Dedupe()
    dedupe.admit(problem(), T0)
    dedupe.admit(problem(), T0)
    dedupe.admit(alert(), T0)
    assert dedupe.flush() == [(problem(), Repeats(1, T0))]
    assert len(dedupe) == 0


# ------------------------------------------------------------------ targets


DEFAULTS = Defaults("https://hooks.slack.com/services/G", "#alerts", "Nexus", ":robot_face:")


def test_targets():
    assert choose(None, DEFAULTS) == Target(DEFAULTS.webhook_url, "#alerts", "Nexus",
                                            ":robot_face:")
    assert choose({"enabled": False, "webhook_url": "https://x.test/h"}, DEFAULTS) is None
    own = choose({"webhook_url": "https://hooks.slack.com/services/T", "channel": "#team"},
                 DEFAULTS)
    assert (own.webhook_url, own.channel) == ("https://hooks.slack.com/services/T", "#team")
    assert choose({"channel": "#team", "enabled": True}, DEFAULTS).webhook_url == \
        DEFAULTS.webhook_url
    assert choose({"webhook_url": "not a url"}, DEFAULTS).webhook_url == DEFAULTS.webhook_url
    assert choose(None, Defaults()) is None
    assert choose({"enabled": True}, Defaults()) is None
    assert choose({"webhook_url": "https://x.test/h"}, Defaults()).webhook_url == \
        "https://x.test/h"
    dressed = own.dress({"text": "t"})
    assert dressed == {"text": "t", "channel": "#team", "username": "Nexus",
                       "icon_emoji": ":robot_face:"}
    assert Target("https://x.test/h").dress({"text": "t"}) == {"text": "t"}
    assert Target("https://hooks.slack.com/services/T/B/secret").describe() == \
        "https://hooks.slack.com/…"
