"""The alert rules (SPEC §6.2): levels fire when crossed upwards, statuses when they change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.usage.alerts import Account, account_of, crossed, sample_alerts, window_alerts

T0 = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
ACC = Account("acc_a", "")


def sample(status="allowed", five=0.1, seven=0.2, claim="five_hour", request_id="r1"):
    return {"account_id": "acc_a", "domain": "team.example.com", "request_id": request_id,
            "unified_status": status, "unified_5h_utilization": five,
            "unified_5h_reset": T0 + timedelta(hours=3), "unified_7d_utilization": seven,
            "unified_7d_reset": T0 + timedelta(days=4), "unified_representative_claim": claim}


def test_crossed_only_upwards_and_only_reached_levels():
    assert crossed(700, 850, (80, 95), 1000) == [80]
    assert crossed(799, 800, (80, 95), 1000) == [80]   # reaching the level is crossing it
    assert crossed(800, 900, (80, 95), 1000) == []     # already there: no second alert
    assert crossed(100, 1200, (80, 95), 1000) == [80, 95]
    assert crossed(960, 940, (80, 95), 1000) == []


def test_window_alert_names_account_level_and_window():
    oldest = T0 - timedelta(hours=2)
    [alert] = window_alerts(ACC, "team.example.com", 700, 850, oldest, 1000, (80, 95), "req-9")
    assert (alert.kind, alert.level, alert.window) == ("window_tokens", "80", "5h")
    assert (alert.tokens, alert.limit, alert.used_percent) == (850, 1000, 85.0)
    assert alert.resets_at == oldest + timedelta(hours=5)
    assert alert.account_id == "acc_a" and alert.request_id == "req-9"
    assert alert.key == f"window_tokens|acc_a|80|{oldest.isoformat()}"


def test_requests_without_account_are_watched_per_domain():
    account = account_of({"account_id": None, "domain": "solo.example.com"})
    assert account == Account(None, "solo.example.com")
    assert account.name == "domain:solo.example.com"
    assert account_of({"account_id": "acc_a", "domain": "x"}) == ACC


def test_status_alerts_on_change_to_warning_or_rejected():
    warned = sample_alerts(ACC, sample("allowed"), sample("allowed_warning"), (80, 95))
    assert [(a.kind, a.level) for a in warned] == [("unified_status", "allowed_warning")]
    assert warned[0].resets_at == T0 + timedelta(hours=3)
    assert sample_alerts(ACC, sample("allowed_warning"), sample("allowed_warning"), ()) == []
    rejected = sample_alerts(ACC, sample("allowed_warning"), sample("rejected", claim="seven_day"),
                             ())
    assert [(a.level, a.window) for a in rejected] == [("rejected", "7d")]
    assert rejected[0].resets_at == T0 + timedelta(days=4)
    assert sample_alerts(ACC, None, sample("rejected"), ())[0].level == "rejected"
    assert sample_alerts(ACC, sample("rejected"), sample("allowed"), ()) == []


def test_utilization_alerts_per_window_and_level():
    alerts = sample_alerts(ACC, sample(five=0.5, seven=0.79), sample(five=0.96, seven=0.8),
                           (80, 95))
    assert sorted((a.window, a.level) for a in alerts) == [("5h", "80"), ("5h", "95"),
                                                          ("7d", "80")]
    assert all(a.kind == "unified_utilization" for a in alerts)
    assert {a.used_percent for a in alerts if a.window == "5h"} == {96.0}
    assert sample_alerts(ACC, sample(five=0.85), sample(five=0.9), (80, 95)) == []
    # the upstream reset the window: crossing again is a new window, with its own key
    again = sample_alerts(ACC, sample(five=0.05), sample(five=0.81), (80, 95))
    assert [a.level for a in again] == ["80"]
    # no earlier sample: a level already passed is reported once
    assert [a.level for a in sample_alerts(ACC, None, sample(five=0.82), (80, 95))] == ["80"]
    assert sample_alerts(ACC, sample(), {**sample(), "unified_5h_utilization": None,
                                         "unified_7d_utilization": None}, (80,)) == []
