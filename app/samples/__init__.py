"""Test samples (SPEC §9.2): with COLLECT_TEST_SAMPLES=true each ended exchange is written to
TEST_SAMPLES_DIR as one JSON file, secrets masked, and `samples export` turns samples into
test fixtures.

    sample.py     an ended Exchange as a sample document (pure; masking)
    stream.py     a stream's raw events masked, secrets split across events included
    fixture.py    a sample as a test fixture (pure)
    files.py      the samples folder: atomic writes, listing, finding, reading
    collector.py  the owner: bounded queue and the worker that writes the files
    commands.py   the `samples` CLI group (list, show, export)

The collector is built (not started) with the app only when collection is on; the server starts
it with the other owners and stops it (writing what is queued) at shutdown.
"""

from __future__ import annotations

from flask import Flask

from app.samples.collector import SampleCollector
from app.samples.commands import samples


def init_app(app: Flask) -> None:
    """Register the `samples` commands; with COLLECT_TEST_SAMPLES, create the collector and
    subscribe it to the event bus."""
    settings = app.config["NEXUS_SETTINGS"]
    app.cli.add_command(samples)
    if settings.collect_test_samples:
        collector = SampleCollector(settings.test_samples_dir)
        collector.subscribe(app.extensions["nexus.events"])
        app.extensions["nexus.samples"] = collector


def start(app: Flask) -> None:
    """Start the collector, if collection is on."""
    collector = app.extensions.get("nexus.samples")
    if collector is not None:
        collector.start()


def stop(app: Flask) -> None:
    """Write what is queued (for up to 5 s), then stop the collector."""
    collector = app.extensions.get("nexus.samples")
    if collector is not None:
        collector.stop()
