"""Price table and cost of one response (SPEC §6.3). Standard library only, no I/O but the load.

Prices live in `prices.json` (USD per million tokens) so they can be corrected without a
release; this module only reads that file and does the arithmetic, in Decimal so a sum of many
small costs does not drift the way floats would.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation, localcontext
from pathlib import Path
from typing import Any

RATE_KEYS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
_ENTRY_KEYS = {*RATE_KEYS, "long_context", "aliases", "note"}
_MILLION = Decimal(1_000_000)
_MICRODOLLAR = Decimal("0.000001")
# Provider decorations around an Anthropic id: Bedrock's `us.anthropic.` prefix and `-v1:0`
# suffix, Vertex's `@20250929` date, the API's `-20250929` date and `-latest` alias.
_PREFIX = re.compile(r"^(?:[a-z]{2,6}\.)?anthropic\.")
_VERSION = re.compile(r"-v\d+(?::\d+)?$")
_DATED = re.compile(r"[-@](?:\d{8}|latest)$")


@dataclass(frozen=True)
class LongContext:
    """Rates for the whole request once its prompt exceeds `threshold_tokens`."""

    threshold_tokens: int
    price: Price


@dataclass(frozen=True)
class Price:
    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal
    long_context: LongContext | None = None


@dataclass(frozen=True)
class PriceTable:
    models: dict[str, Price]
    families: dict[str, Price]
    source: str = ""
    as_of: str = ""
    aliases: dict[str, str] = field(default_factory=dict)  # listed alias -> model id
    undated: dict[str, str] = field(default_factory=dict)  # base id -> model id

    def price_for(self, model: str | None) -> tuple[Price | None, bool]:
        """(price, flagged): flagged when priced by family, or not priced at all."""
        if not isinstance(model, str) or not model.strip():
            return None, True
        name = model.strip().lower()
        if name in self.models:
            return self.models[name], False
        if name in self.aliases:
            return self.models[self.aliases[name]], False
        # A dated snapshot and its undated alias are the same model at the same price.
        base = _base_id(name)
        if base in self.undated:
            return self.models[self.undated[base]], False
        if base in self.aliases:
            return self.models[self.aliases[base]], False
        # Family fallback only for Claude ids, so another vendor's "opus" is not billed as ours.
        if "claude" in name or name in self.families:
            for family, price in self.families.items():
                if family in name:
                    return price, True
        return None, True


def bundled_path() -> Path:
    """`prices.json` beside this module, or inside the PyInstaller bundle when frozen."""
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "app" / "usage" / "prices.json"
    return Path(__file__).resolve().with_name("prices.json")


def load_prices(path: str | Path | None = None) -> PriceTable:
    """Read and check a price file; any defect is a ValueError naming the file and the entry."""
    path = Path(path) if path is not None else bundled_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be an object")
    for key in ("source", "as_of"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise ValueError(f"{path}: '{key}' must say where and when the prices come from")
    models = _entries(path, data, "models")
    families = _entries(path, data, "families")
    if not families:
        raise ValueError(f"{path}: 'families' must price at least one family")
    aliases: dict[str, str] = {}
    undated: dict[str, str] = {}
    for model_id, entry in data["models"].items():
        for alias in entry.get("aliases", ()):
            if not isinstance(alias, str) or alias.lower() in models or alias.lower() in aliases:
                raise ValueError(f"{path}: models.{model_id}: alias {alias!r} is not unique")
            aliases[alias.lower()] = model_id.lower()
        base = _base_id(model_id.lower())
        if undated.setdefault(base, model_id.lower()) != model_id.lower():
            raise ValueError(f"{path}: models.{model_id}: same undated id as {undated[base]}")
    return PriceTable(models, families, data["source"], data["as_of"], aliases, undated)


def cost_usd(usage: dict | None, model: str | None,
             table: PriceTable) -> tuple[Decimal | None, bool]:
    """(USD rounded to 6 places, flagged) for an Anthropic `usage` object; None when unpriced."""
    price, flagged = table.price_for(model)
    if price is None or not isinstance(usage, dict):
        return None, flagged
    fresh = _tokens(usage, "input_tokens")
    output = _tokens(usage, "output_tokens")
    read = _tokens(usage, "cache_read_input_tokens")
    written = _tokens(usage, "cache_creation_input_tokens")
    split = usage.get("cache_creation")
    if isinstance(split, dict) and split:
        write_1h = _tokens(split, "ephemeral_1h_input_tokens")
        write_5m = _tokens(split, "ephemeral_5m_input_tokens")
        # Tokens the split does not account for were written at the default TTL, 5 minutes.
        write_5m += max(written - write_5m - write_1h, 0)
    else:
        write_5m, write_1h = written, 0  # before the 1h TTL existed, every write was 5m
    rates = price
    # The long-context tier is chosen by the whole prompt, cached parts included, and then
    # applies to every token of the request, output too.
    prompt = fresh + read + write_5m + write_1h
    if price.long_context and prompt > price.long_context.threshold_tokens:
        rates = price.long_context.price
    with localcontext() as ctx:
        ctx.prec = 28  # whatever the caller's context, the same usage gives the same cost
        total = (fresh * rates.input + output * rates.output + read * rates.cache_read
                 + write_5m * rates.cache_write_5m + write_1h * rates.cache_write_1h)
        return (total / _MILLION).quantize(_MICRODOLLAR, rounding=ROUND_HALF_EVEN), flagged


def _base_id(name: str) -> str:
    return _DATED.sub("", _VERSION.sub("", _PREFIX.sub("", name)))


def _tokens(obj: dict, key: str) -> int:
    # Anthropic sends null for counts that do not apply; a count that is not a count is none.
    value = obj.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _entries(path: Path, data: dict, section: str) -> dict[str, Price]:
    block = data.get(section)
    if not isinstance(block, dict):
        raise ValueError(f"{path}: '{section}' must be an object of id -> prices")
    return {name.lower(): _price(path, f"{section}.{name}", entry, _ENTRY_KEYS)
            for name, entry in block.items()}


def _price(path: Path, where: str, entry: Any, allowed: set[str]) -> Price:
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: {where}: must be an object of prices")
    unknown = sorted(set(entry) - allowed)
    if unknown:  # a misspelt key would otherwise leave a price silently at its default
        raise ValueError(f"{path}: {where}: unknown key(s) {', '.join(unknown)}")
    rates = [_rate(path, where, entry, key) for key in RATE_KEYS]
    if "aliases" in entry and not isinstance(entry["aliases"], list):
        raise ValueError(f"{path}: {where}: 'aliases' must be a list of model ids")
    long_context = None
    if "long_context" in entry:
        block, inner = entry["long_context"], f"{where}.long_context"
        threshold = block.get("threshold_tokens") if isinstance(block, dict) else None
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold <= 0:
            raise ValueError(f"{path}: {inner}: 'threshold_tokens' must be a positive integer")
        tier = _price(path, inner, block, {*RATE_KEYS, "threshold_tokens"})
        long_context = LongContext(threshold, tier)
    return Price(*rates, long_context=long_context)


def _rate(path: Path, where: str, entry: dict, key: str) -> Decimal:
    if key not in entry:
        raise ValueError(f"{path}: {where}: missing '{key}'")
    value = entry[key]
    try:
        if isinstance(value, bool) or not isinstance(value, (int, Decimal, str)):
            raise InvalidOperation
        rate = Decimal(value)
    except (InvalidOperation, ValueError):
        raise ValueError(f"{path}: {where}: '{key}' must be a number, got {value!r}") from None
    if not rate.is_finite() or rate < 0:
        raise ValueError(f"{path}: {where}: '{key}' must be a finite price >= 0, got {value!r}")
    return rate
