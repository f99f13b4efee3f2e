"""A sample's stream: its raw events with every secret masked, including the secrets a stream
splits across events (the masking is the writer's, app/redact_events.py). Pure: no Flask.
"""

from __future__ import annotations

from collections.abc import Iterable

from app.redact_events import mask_events, spread_masked

__all__ = ["masked_events", "spread_masked"]


def masked_events(chunks: Iterable[tuple[float, bytes]]) -> list[dict]:
    """`[{offset_ms, raw}]` of a stream's events, every secret masked."""
    pairs = list(chunks)
    texts = mask_events([raw.decode("utf-8", "replace") for _, raw in pairs])
    return [{"offset_ms": at_ms, "raw": text} for (at_ms, _), text in zip(pairs, texts,
                                                                          strict=True)]
