"""A serving process tunes the interpreter once start-up is done (app/serve.py)."""

from __future__ import annotations

import gc
import sys

import pytest

from app.serve import SWITCH_INTERVAL_S, settle_runtime


def test_start_up_objects_are_frozen_and_the_gil_changes_hands_sooner():
    interval = sys.getswitchinterval()
    try:
        settle_runtime()
        assert gc.get_freeze_count() > 0  # out of every later collection's walk
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S)  # microseconds
        assert SWITCH_INTERVAL_S < interval
    finally:
        gc.unfreeze()
        sys.setswitchinterval(interval)
