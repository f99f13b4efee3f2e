"""When usage deserves an alert (SPEC §6.2): crossings of levels, and unified statuses. Pure.

Every rule compares a value before and after the rows just written, both read from the
database (app/storage/alerting.py), never a counter held in memory: any process that writes the
crossing row sees the crossing, and a restart forgets nothing. An alert fires when a level is
crossed upwards, so a level fires once per window: again only after usage fell back below it
(the window moved on, or the upstream reset its utilization).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from app.events import UsageAlert
from app.usage.ratelimits import alert_level

WINDOW = timedelta(hours=5)
WINDOW_TOKENS = "window_tokens"
UNIFIED_UTILIZATION = "unified_utilization"
UNIFIED_STATUS = "unified_status"
# Utilization windows of the unified family: (name in alerts, column prefix of the sample).
UNIFIED_WINDOWS = (("5h", "unified_5h"), ("7d", "unified_7d"))


@dataclass(frozen=True)
class Account:
    """Whose usage: the account, or for requests without one, their domain."""

    account_id: str | None
    domain: str

    @property
    def name(self) -> str:
        return self.account_id or f"domain:{self.domain}"


def account_of(row: Mapping[str, Any]) -> Account:
    """The `Account` of a request or sample row (the domain only counts without an account)."""
    account_id = row.get("account_id") or None
    return Account(account_id, "" if account_id else row["domain"])


def crossed(before: float, after: float, levels: Iterable[int], limit: float) -> list[int]:
    """The levels (percent of `limit`) that `after` reaches and `before` did not."""
    return [level for level in levels if before < limit * level / 100 <= after]


def window_alerts(account: Account, domain: str, before: int, after: int, oldest: datetime,
                  limit: int, levels: Iterable[int], request_id: str | None) -> list[UsageAlert]:
    """The levels of ALERT_WINDOW_TOKEN_LIMIT the account's 5-hour output tokens just crossed;
    `oldest` is the first request counted in the window, which names the window."""
    return [UsageAlert(
        kind=WINDOW_TOKENS, domain=domain, account_id=account.account_id, level=str(level),
        window="5h", used_percent=round(after * 100 / limit, 2), tokens=after, limit=limit,
        resets_at=oldest + WINDOW, request_id=request_id,
        key=f"{WINDOW_TOKENS}|{account.name}|{level}|{oldest.isoformat()}",
    ) for level in crossed(before, after, levels, limit)]


def sample_alerts(account: Account, previous: Mapping[str, Any] | None,
                  sample: Mapping[str, Any], levels: Iterable[int]) -> list[UsageAlert]:
    """Alerts one ledger sample raises against the account's sample before it: its unified
    status becoming allowed_warning/rejected, its 5h or 7d utilization crossing a level."""
    alerts = []
    levels = tuple(levels)
    for window, prefix in UNIFIED_WINDOWS:
        now = sample.get(f"{prefix}_utilization")
        if now is None:
            continue
        was = (previous or {}).get(f"{prefix}_utilization")
        resets = sample.get(f"{prefix}_reset")
        for level in crossed(was if was is not None else -1.0, now, levels, 1.0):
            alerts.append(UsageAlert(
                kind=UNIFIED_UTILIZATION, domain=sample["domain"],
                account_id=account.account_id, level=str(level), window=window,
                used_percent=round(now * 100, 2), tokens=None, limit=None, resets_at=resets,
                request_id=sample.get("request_id"),
                key=f"{UNIFIED_UTILIZATION}|{account.name}|{window}|{level}|{_name(resets)}"))
    status = alert_level(sample, previous)
    if status is not None:
        window = "7d" if sample.get("unified_representative_claim") == "seven_day" else "5h"
        resets = sample.get(f"unified_{window}_reset")
        alerts.append(UsageAlert(
            kind=UNIFIED_STATUS, domain=sample["domain"], account_id=account.account_id,
            level=status, window=window,
            used_percent=_percent(sample.get(f"unified_{window}_utilization")), tokens=None,
            limit=None, resets_at=resets, request_id=sample.get("request_id"),
            key=f"{UNIFIED_STATUS}|{account.name}|{status}|{_name(resets)}"))
    return alerts


def _name(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else "-"


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else round(fraction * 100, 2)
