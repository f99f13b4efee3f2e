"""The checked-in fixtures of `tests/data/samples/` (made by `samples export` from exchanges
collected through the proxy): the fake upstream answers exactly the fixture's response, and the
client gets it byte for byte while the proxy records what the fixture expects.

Regenerate them with `.venv/bin/python -m tests.integration.sample_support tests/data/samples`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.sample_support import SECRETS, replay

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
FIXTURES = sorted(SAMPLES.glob("*.json"))


def test_there_are_fixtures_of_both_kinds():
    kinds = {json.loads(path.read_text())["response"]["stream"] for path in FIXTURES}
    assert kinds == {True, False}


@pytest.mark.parametrize("path", FIXTURES, ids=[path.stem for path in FIXTURES])
def test_fixture_replays_through_the_proxy(proxy, upstream, path):
    text = path.read_text()
    assert not [secret for secret in SECRETS if secret in text]
    fixture = json.loads(text)
    assert fixture["name"] == path.stem
    replay(proxy, upstream, fixture)
