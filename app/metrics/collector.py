"""Metrics read when scraped: the state the background owners keep (writer, spool, notifier,
live feed), the database check, the build and the uptime.

Each source is read on its own: one that fails (or is absent, in an app built without it) is
left out of the scrape instead of failing it. The writer's and notifier's totals are counters
(they only grow while the process lives); queue depths and the like are gauges.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from flask import Flask
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.version import __version__

log = logging.getLogger(__name__)

WRITER_TOTALS = (
    ("rows_written", "Exchanges written to the database (replayed ones included)."),
    ("rows_replayed", "Exchanges written to the database from the spool."),
    ("rows_spooled", "Exchanges appended to the spool (database failing or queue full)."),
    ("rows_dropped", "Exchanges lost: neither the database nor the spool took them."),
    ("rows_rejected", "Exchanges the database refused, kept aside in rejected-*.jsonl files."),
)
NOTIFICATION_RESULTS = ("sent", "failed", "dropped", "deduplicated", "skipped")


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


class StateCollector(Collector):
    """Reads the app's owners at scrape time; registered in the app's metrics registry."""

    def __init__(self, app: Flask):
        self.app = app

    def describe(self) -> list[Metric]:
        return []  # no names to reserve; and registering must not run a scrape

    def collect(self) -> Iterator[Metric]:
        for source in (self._process, self._writer, self._database, self._notifications,
                       self._live, self._samples):
            try:
                yield from source()
            except Exception:  # one broken source must not cost the whole scrape
                log.exception("metrics: reading %s failed", source.__name__.lstrip("_"))

    def _extension(self, name: str) -> object | None:
        return self.app.extensions.get(name)

    def _process(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("nexus_build_info", "The proxy's version (value always 1).",
                                 labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        health = self._extension("nexus.health")
        if health is not None:
            yield _gauge("nexus_uptime_seconds", "Seconds since this process built its app.",
                         round(health.uptime_s(), 3))

    def _writer(self) -> Iterator[Metric]:
        writer = self._extension("nexus.writer")
        if writer is None:
            return
        figures = writer.metrics()
        yield _gauge("nexus_writer_queue_depth", "Exchanges waiting for the batch writer.",
                     figures["queue_depth"])
        yield _gauge("nexus_spool_pending_rows", "Exchanges in the spool folder, not yet "
                     "replayed into the database.", figures["spooled_rows_pending"])
        yield _gauge("nexus_writer_degraded", "1 while the database fails, the spool cannot "
                     "be written or rows wait in the spool.", int(bool(figures["degraded"])))
        for key, doc in WRITER_TOTALS:
            yield _counter(f"nexus_writer_{key}", doc, figures[key])
        from app.storage.checks import spool_report

        spool = spool_report(writer.spool.folder, writer.spool.pending,
                             writer.spooler.failing)
        yield _gauge("nexus_spool_files", "Spool files (.part and .jsonl) in SPOOL_DIR.",
                     spool["files"])
        yield _gauge("nexus_spool_bytes", "Bytes of the spool files in SPOOL_DIR.",
                     spool["bytes"])
        yield _gauge("nexus_spool_writable", "1 when SPOOL_DIR can be written.",
                     int(spool["writable"]))

    def _database(self) -> Iterator[Metric]:
        health = self._extension("nexus.health")
        if health is None or self._extension("nexus.db") is None:
            return
        check = health.database()  # cached for a few seconds, bounded to ~2 s
        yield _gauge("nexus_database_up", "1 when the database answered its last check.",
                     int(check["reachable"]))
        if check["schema"] is not None:
            yield _gauge("nexus_schema_migrations_pending", "Migrations not applied yet.",
                         check["schema"]["pending"])

    def _notifications(self) -> Iterator[Metric]:
        notifier = self._extension("nexus.notifier")
        if notifier is None:
            return
        figures = notifier.metrics()
        yield _gauge("nexus_notifications_queued", "Slack messages waiting to be sent.",
                     figures["queued"])
        results = CounterMetricFamily(
            "nexus_notifications", "Slack messages by result: sent, failed (refused), dropped "
            "(queue full), deduplicated (held back as repeats), skipped (no target).",
            labels=["result"])
        for result in NOTIFICATION_RESULTS:
            results.add_metric([result], figures[result])
        yield results
        yield _counter("nexus_notification_retries", "Slack sends retried.",
                       figures["retries"])

    def _live(self) -> Iterator[Metric]:
        feed = self._extension("nexus.live")
        if feed is None:
            return
        figures = feed.metrics()
        yield _gauge("nexus_live_clients", "Dashboard live-feed streams open.",
                     figures["clients"])
        yield _counter("nexus_live_notices", "Stored-request notices fanned out to the live "
                       "feed.", figures["notices"])
        yield _counter("nexus_live_refused", "Live-feed streams refused (too many open).",
                       figures["refused"])

    def _samples(self) -> Iterator[Metric]:
        collector = self._extension("nexus.samples")
        if collector is None:
            return  # COLLECT_TEST_SAMPLES is off
        figures = collector.metrics()
        results = CounterMetricFamily(
            "nexus_test_samples", "Test samples by result: written, dropped (queue full or "
            "stopped), failed (could not be written).", labels=["result"])
        for result in ("written", "dropped", "failed"):
            results.add_metric([result], figures[result])
        yield results
