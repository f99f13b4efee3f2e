"""The reliability suite's account: what each fault test sent, what came back, what was stored.

A `Ledger` belongs to one fault test. Every request it sends carries a tag in its
`User-Agent` (`reliability/<tag>`), which the proxy stores in `requests.user_agent` even for an
exchange whose body never arrived, so the rows of a test are found without trusting anything
the proxy says about them. `Ledger.audit` reads the `requests` table, counts rows per tag and
per id, adds the figures to the session's `Tally` and returns the rows for the test's own
checks. The tally is written at the end of the session (see conftest.py).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

from tests.databases import opened

AGENT_PREFIX = "reliability/"
FIGURES = ("sent", "answered", "recorded", "lost", "declared_lost", "duplicates")


@dataclass
class Sent:
    """One request as its client saw it: `status` None when no answer came (by design or not)."""

    tag: str
    status: int | None = None
    request_id: str | None = None
    body: bytes = b""


class Tally:
    """Session-wide figures, per fault and in total. Thread-safe: tests add from workers."""

    def __init__(self) -> None:
        self.faults: dict[str, Counter] = {}
        self._lock = threading.Lock()

    def add(self, fault: str, **figures: int) -> None:
        with self._lock:
            counter = self.faults.setdefault(fault, Counter({name: 0 for name in FIGURES}))
            counter.update(figures)

    def totals(self) -> dict[str, int]:
        out = Counter({name: 0 for name in FIGURES})
        for counter in self.faults.values():
            out.update(counter)
        return {name: out[name] for name in FIGURES}

    def report(self) -> dict:
        return {"totals": self.totals(),
                "faults": {name: {k: c[k] for k in FIGURES} for name, c in
                           sorted(self.faults.items())}}


@dataclass
class Audit:
    """What the `requests` table holds for a ledger's tags."""

    rows: dict[str, list[dict]]          # tag -> its rows (one, when all is well)
    lost: list[str]                      # tags without a row
    duplicates: list[str]                # tags (or ids) with more than one row

    def row(self, tag: str) -> dict:
        found = self.rows[tag]
        assert len(found) == 1, (tag, found)
        return found[0]


@dataclass
class Ledger:
    """The requests of one fault test; `audit` checks and counts them."""

    fault: str
    tally: Tally
    sent: dict[str, Sent] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _counted: dict[str, int] = field(default_factory=dict)

    def new(self) -> Sent:
        """A fresh tagged request, counted as sent."""
        entry = Sent(uuid.uuid4().hex[:16])
        with self._lock:
            self.sent[entry.tag] = entry
        return entry

    @staticmethod
    def agent(entry: Sent) -> str:
        return AGENT_PREFIX + entry.tag

    def audit(self, database_url: str, *, may_lose: int = 0, timeout: float = 30.0,
              settle: float = 0.3) -> Audit:
        """Wait (bounded) until at most `may_lose` tags lack a row, then count. `may_lose` is a
        loss the product declares (a kill -9's queued rows, rows dropped on a full disk): the
        caller waits for the writer to settle first. Duplicates always fail."""
        deadline = time.monotonic() + timeout
        while True:
            rows = self._rows(database_url)
            missing = [tag for tag in self.sent if not rows.get(tag)]
            if len(missing) <= may_lose or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        time.sleep(settle)  # a late duplicate (a replay racing a write) would show by now
        rows = self._rows(database_url)
        ids = Counter(row["id"] for found in rows.values() for row in found)
        lost = [tag for tag in self.sent if not rows.get(tag)]
        doubled = [tag for tag in self.sent if len(rows.get(tag, [])) > 1]
        doubled += [row_id for row_id, n in ids.items() if n > 1]
        answered = sum(entry.status is not None for entry in self.sent.values())
        recorded = sum(1 for tag in self.sent if rows.get(tag))
        figures = {"sent": len(self.sent), "answered": answered, "recorded": recorded,
                   "lost": max(0, len(lost) - may_lose),
                   "declared_lost": min(len(lost), may_lose), "duplicates": len(doubled)}
        # A ledger audited twice (a test checking a first phase) is counted once, as it ends.
        self.tally.add(self.fault, **{k: v - self._counted.get(k, 0) for k, v in figures.items()})
        self._counted = figures
        audit = Audit(rows={tag: rows.get(tag, []) for tag in self.sent}, lost=lost,
                      duplicates=doubled)
        assert not doubled, f"{self.fault}: recorded more than once: {doubled}"
        assert len(lost) <= may_lose, f"{self.fault}: {len(lost)} exchange(s) never recorded " \
                                      f"(at most {may_lose} allowed): {lost[:5]}"
        return audit

    def _rows(self, database_url: str) -> dict[str, list[dict]]:
        with opened(database_url) as db, db.connection_context():
            cursor = db.execute_sql(
                "SELECT id, user_agent, status, outcome, error_type, error_message, attempts, "
                "stream, response_truncated, length(response_body) AS response_bytes FROM requests "
                f"WHERE user_agent LIKE {db.param}", (AGENT_PREFIX + "%",))
            names = [column[0] for column in cursor.description]
            out: dict[str, list[dict]] = {}
            for values in cursor.fetchall():
                row = dict(zip(names, values, strict=True))
                out.setdefault(row["user_agent"][len(AGENT_PREFIX):], []).append(row)
        return out
