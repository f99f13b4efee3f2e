"""Number and time formats shared by the request list and detail (`fmt` in templates)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from app.api import serialise
from app.dashboard.chat import byte_size, mend


class Formats:
    """Number and time formats shared by the list and the detail (`fmt` in templates)."""

    @staticmethod
    def tokens(value: int | None) -> str:
        return "—" if value is None else f"{value:,}"

    @staticmethod
    def ms(value: float | None) -> str:
        if value is None:
            return "—"
        if value < 1000:
            return f"{value:.0f} ms"
        if value < 60_000:
            return f"{value / 1000:.2f} s"
        minutes, seconds = divmod(value / 1000, 60)
        return f"{minutes:.0f}m {seconds:02.0f}s"

    @staticmethod
    def cost(value: Decimal | float | None, places: int = 4) -> str:
        if value is None:
            return "—"
        return f"${float(value):,.{places}f}"

    @staticmethod
    def time(value: datetime | None) -> str:
        return "—" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")

    @staticmethod
    def iso(value: datetime | None) -> str:
        return serialise.timestamp(value) or ""

    size = staticmethod(byte_size)
    # Text parsed out of stored JSON at render time (event previews) may hold a lone surrogate.
    text = staticmethod(mend)

    @staticmethod
    def status_class(status: str | None) -> str:
        """`s2`…`s5` for HTTP codes, `sc` for a hang-up (see app.css)."""
        if not status:
            return ""
        return "s" + status[0] if status[0].isdigit() else "sc"


FORMAT = Formats()
