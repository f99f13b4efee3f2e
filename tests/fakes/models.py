"""The models the fake upstream lists on ``GET /v1/models`` and retrieves by id."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# (id, display_name, created, max_input_tokens, max_tokens, deprecated), newest
# first like the API. The 4.5 Sonnet/Opus snapshots are deprecated per SDK 2.14's table.
_1M = 1_000_000
MODELS = (
    ("claude-opus-4-7", "Claude Opus 4.7", "2026-04-16", _1M, 128_000, None),
    ("claude-opus-4-6", "Claude Opus 4.6", "2026-02-05", _1M, 128_000, None),
    ("claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-17", _1M, 64_000, None),
    ("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-15", 200_000, 64_000, None),
    ("claude-opus-4-5-20251101", "Claude Opus 4.5", "2025-11-24", 200_000, 64_000, "2026-07-22"),
    ("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29", _1M, 64_000, "2026-05-29"),
)


def models_page(query: Mapping[str, str]) -> dict[str, Any]:
    """The ``GET /v1/models`` page for parsed query params; ValueError on a bad limit."""
    models = [_model_dict(row) for row in MODELS]
    try:
        limit = int(query.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 1000:
        raise ValueError("limit: Input should be an integer between 1 and 1000")
    ids = [m["id"] for m in models]
    if query.get("after_id"):
        start = ids.index(query["after_id"]) + 1 if query["after_id"] in ids else len(ids)
        page, has_more = models[start : start + limit], start + limit < len(ids)
    elif query.get("before_id"):
        end = ids.index(query["before_id"]) if query["before_id"] in ids else 0
        page, has_more = models[max(0, end - limit) : end], end - limit > 0
    else:
        page, has_more = models[:limit], limit < len(ids)
    return {
        "data": page,
        "has_more": has_more,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }


def model_info(model_id: str) -> dict[str, Any] | None:
    return next((_model_dict(row) for row in MODELS if row[0] == model_id), None)


def _model_dict(row: tuple[str, str, str, int, int, str | None]) -> dict[str, Any]:
    model_id, name, created, max_input, max_tokens, deprecated_at = row
    return {
        "type": "model",
        "id": model_id,
        "display_name": name,
        "created_at": f"{created}T00:00:00Z",
        "lifecycle": "deprecated" if deprecated_at else "active",
        "deprecated_at": f"{deprecated_at}T00:00:00Z" if deprecated_at else None,
        "max_input_tokens": max_input,
        "max_tokens": max_tokens,
    }
