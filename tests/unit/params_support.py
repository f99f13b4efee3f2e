"""Helpers of the query-string parameter tests."""

from __future__ import annotations

import pytest

from app.errors import InvalidRequest


def args(**given) -> dict[str, list[str]]:
    """A query string as Flask's `to_dict(flat=False)` gives it (a list is a repeated name)."""
    return {name: value if isinstance(value, list) else [value] for name, value in given.items()}


def refused(call, *words: str) -> str:
    """The 400 message of `call()`, which must name each of `words`."""
    with pytest.raises(InvalidRequest) as caught:
        call()
    for word in words:
        assert word in caught.value.message, caught.value.message
    return caught.value.message
