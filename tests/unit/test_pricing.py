"""Price table and cost function (SPEC §6.3). Expected costs are worked out by hand in the
comments, in USD per million tokens, so a wrong rate in the code cannot agree with itself."""

import json
from decimal import Decimal

import pytest

from app.usage import pricing
from app.usage.pricing import RATE_KEYS, bundled_path, cost_usd, load_prices


@pytest.fixture(scope="module")
def table():
    return load_prices()


def write(tmp_path, data, name="prices.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
    return path


def minimal(**models):
    rates = {"input": 1, "output": 2, "cache_write_5m": 1.25, "cache_write_1h": 2,
             "cache_read": 0.1}
    return {"source": "test", "as_of": "2026-11-29",
            "models": models or {"claude-test-1-20260101": dict(rates)},
            "families": {"opus": dict(rates)}}


# --- exact costs -------------------------------------------------------------------------

def test_plain_input_and_output(table):
    # 1000 * $3 + 500 * $15 = 10,500 per million
    usage = {"input_tokens": 1000, "output_tokens": 500}
    assert cost_usd(usage, "claude-sonnet-4-5-20250929", table) == (Decimal("0.010500"), False)


def test_small_haiku_request(table):
    # 123 * $1 + 45 * $5 = 348 per million
    usage = {"input_tokens": 123, "output_tokens": 45}
    assert cost_usd(usage, "claude-haiku-4-5-20251001", table) == (Decimal("0.000348"), False)


def test_cache_read_and_split_writes(table):
    # 2000*$5 + 1000*$25 + 10000*$0.50 + 3000*$6.25 + 1000*$10
    # = 10,000 + 25,000 + 5,000 + 18,750 + 10,000 = 68,750 per million
    usage = {"input_tokens": 2000, "output_tokens": 1000, "cache_read_input_tokens": 10000,
             "cache_creation_input_tokens": 4000,
             "cache_creation": {"ephemeral_5m_input_tokens": 3000,
                                "ephemeral_1h_input_tokens": 1000}}
    assert cost_usd(usage, "claude-opus-4-8", table) == (Decimal("0.068750"), False)


def test_cache_writes_without_split_are_5m(table):
    # 2000*$5 + 1000*$25 + 10000*$0.50 + 4000*$6.25 = 10,000 + 25,000 + 5,000 + 25,000
    usage = {"input_tokens": 2000, "output_tokens": 1000, "cache_read_input_tokens": 10000,
             "cache_creation_input_tokens": 4000}
    assert cost_usd(usage, "claude-opus-4-8", table) == (Decimal("0.065000"), False)


def test_split_short_of_the_total_bills_the_rest_at_5m(table):
    # 5000 written, split names 1000 + 1000: the missing 3000 are 5m too
    # 4000*$6.25 + 1000*$10 = 25,000 + 10,000 = 35,000 per million
    usage = {"cache_creation_input_tokens": 5000,
             "cache_creation": {"ephemeral_5m_input_tokens": 1000,
                                "ephemeral_1h_input_tokens": 1000}}
    assert cost_usd(usage, "claude-opus-4-8", table) == (Decimal("0.035000"), False)


def test_split_only_1h(table):
    # 2000 * $6 (Sonnet 4.6 1h write) = 12,000 per million
    usage = {"cache_creation_input_tokens": 2000,
             "cache_creation": {"ephemeral_5m_input_tokens": 0,
                                "ephemeral_1h_input_tokens": 2000}}
    assert cost_usd(usage, "claude-sonnet-4-6", table) == (Decimal("0.012000"), False)


def test_rounding_is_half_even(table):
    # Haiku 3 input is $0.25: 2 tokens = 0.0000005 (to even: 0), 6 tokens = 0.0000015 (to 2)
    assert cost_usd({"input_tokens": 2}, "claude-3-haiku-20240307", table)[0] == Decimal("0")
    assert cost_usd({"input_tokens": 6}, "claude-3-haiku-20240307", table)[0] == Decimal(
        "0.000002")
    assert cost_usd({"input_tokens": 6}, "claude-3-haiku-20240307", table)[0].as_tuple()[2] == -6


# --- long context ------------------------------------------------------------------------

def test_long_context_applies_to_every_token(table):
    # prompt 150,000 + 60,000 read = 210,000 > 200,000: long-context rates throughout
    # 150000*$6 + 60000*$0.60 + 1000*$22.50 = 900,000 + 36,000 + 22,500 = 958,500 per million
    usage = {"input_tokens": 150000, "cache_read_input_tokens": 60000, "output_tokens": 1000}
    assert cost_usd(usage, "claude-sonnet-4-5", table) == (Decimal("0.958500"), False)


def test_long_context_threshold_is_exclusive(table):
    # exactly 200,000 is not over: 200000 * $3 = 600,000 per million
    usage = {"input_tokens": 200000}
    assert cost_usd(usage, "claude-sonnet-4-20250514", table) == (Decimal("0.600000"), False)


def test_cache_writes_count_towards_the_threshold(table):
    # 100,000 fresh + 100,001 written = 200,001: 100000*$6 + 100001*$7.50 = 1,350,007.5
    usage = {"input_tokens": 100000, "cache_creation_input_tokens": 100001}
    assert cost_usd(usage, "claude-sonnet-4-5", table) == (Decimal("1.350008"), False)


def test_haiku_5_5_prompt_tier(table):
    # up to 100,000: 100000 * $0.10 = 10,000 per million
    assert cost_usd({"input_tokens": 100000}, "claude-haiku-5-5", table)[0] == Decimal("0.01")
    # over: 100001*$0.50 + 10*$2.50 = 50,000.5 + 25 = 50,025.5 per million -> 0.0500255 -> even
    usage = {"input_tokens": 100001, "output_tokens": 10}
    assert cost_usd(usage, "claude-haiku-5-5", table)[0] == Decimal("0.050026")


def test_models_without_surcharge_stay_flat(table):
    # Opus 4.6 serves 1M at standard rates: 500000 * $5 = 2,500,000 per million
    assert cost_usd({"input_tokens": 500000}, "claude-opus-4-6", table)[0] == Decimal("2.5")


# --- lookup ------------------------------------------------------------------------------

@pytest.mark.parametrize("asked, listed", [
    ("claude-sonnet-4-5", "claude-sonnet-4-5-20250929"),
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5-20250929"),
    ("claude-opus-4-6-20260205", "claude-opus-4-6"),
    ("claude-opus-4-5", "claude-opus-4-5-20251101"),
    ("claude-opus-4-0", "claude-opus-4-20250514"),
    ("claude-3-5-haiku-latest", "claude-3-5-haiku-20241022"),
    ("Claude-Haiku-4-5", "claude-haiku-4-5-20251001"),
    ("anthropic.claude-3-5-haiku-20241022-v1:0", "claude-3-5-haiku-20241022"),
    ("us.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4-20250514"),
    ("claude-sonnet-4-5@20250929", "claude-sonnet-4-5-20250929"),
])
def test_aliases_of_listed_models_are_not_flagged(table, asked, listed):
    assert table.price_for(asked) == (table.models[listed], False)


def test_family_fallback_is_flagged(table):
    price, flagged = table.price_for("claude-opus-9-20300101")
    assert flagged and price is table.families["opus"]
    # Opus family is priced as Opus 5.5: 1000*$4 + 100*$20 = 6,000 per million
    usage = {"input_tokens": 1000, "output_tokens": 100}
    assert cost_usd(usage, "claude-opus-9", table) == (Decimal("0.006000"), True)
    assert table.price_for("claude-sonnet-7")[0] is table.families["sonnet"]
    assert table.price_for("claude-haiku-6")[0] is table.families["haiku"]
    assert table.price_for("sonnet") == (table.families["sonnet"], True)


@pytest.mark.parametrize("model", ["gpt-4o", "magnum-opus-72b", "", "   ", None, 42])
def test_unknown_models_are_unpriced_and_flagged(table, model):
    assert table.price_for(model) == (None, True)
    assert cost_usd({"input_tokens": 10}, model, table) == (None, True)


# --- usage shapes ------------------------------------------------------------------------

def test_missing_and_null_fields_count_as_zero(table):
    # 10 * $15 = 150 per million
    usage = {"output_tokens": 10, "cache_read_input_tokens": None,
             "cache_creation_input_tokens": None, "cache_creation": None}
    assert cost_usd(usage, "claude-sonnet-4-5", table) == (Decimal("0.000150"), False)
    assert cost_usd({}, "claude-sonnet-4-5", table) == (Decimal("0"), False)


def test_junk_counts_count_as_zero(table):
    usage = {"input_tokens": "1000", "output_tokens": True, "cache_read_input_tokens": -5}
    assert cost_usd(usage, "claude-sonnet-4-5", table) == (Decimal("0"), False)


def test_no_usage_is_no_cost(table):
    assert cost_usd(None, "claude-sonnet-4-5", table) == (None, False)
    assert cost_usd(None, "claude-opus-9", table) == (None, True)


# --- the file ----------------------------------------------------------------------------

def test_bundled_file_prices_everything(table):
    assert {"opus", "sonnet", "haiku"} <= set(table.families)
    assert table.source.startswith("https://") and table.as_of
    entries = list(table.models.items()) + list(table.families.items())
    assert len(entries) >= 15
    for name, price in entries:
        tiers = [price] + ([price.long_context.price] if price.long_context else [])
        for tier in tiers:
            for key in RATE_KEYS:
                assert getattr(tier, key) > 0, f"{name}.{key}"


def test_current_models_use_the_standard_cache_multipliers(table):
    # Written out in the file, but for these models they must still be 1.25x, 2x and 0.1x.
    for name in ("claude-opus-4-8", "claude-sonnet-4-6", "claude-haiku-4-5-20251001"):
        price = table.models[name]
        assert price.cache_write_5m == price.input * Decimal("1.25")
        assert price.cache_write_1h == price.input * 2
        assert price.cache_read == price.input * Decimal("0.1")


def test_frozen_bundle_path(monkeypatch, tmp_path):
    monkeypatch.setattr(pricing.sys, "_MEIPASS", str(tmp_path), raising=False)
    assert bundled_path() == tmp_path / "app" / "usage" / "prices.json"


def test_explicit_path(tmp_path):
    table = load_prices(write(tmp_path, minimal()))
    assert table.price_for("claude-test-1") == (table.models["claude-test-1-20260101"], False)
    # 1000*$1 + 1000*$2 = 3,000 per million
    usage = {"input_tokens": 1000, "output_tokens": 1000}
    assert cost_usd(usage, "claude-test-1", table) == (Decimal("0.003"), False)


def bad_entry(**overrides):
    data = minimal()
    entry = data["models"]["claude-test-1-20260101"]
    for key, value in overrides.items():
        if value is None:
            del entry[key]
        else:
            entry[key] = value
    return data


@pytest.mark.parametrize("data, message", [
    ("{not json", "not valid JSON"),
    ([], "top level must be an object"),
    ({**minimal(), "source": ""}, "'source'"),
    ({k: v for k, v in minimal().items() if k != "as_of"}, "'as_of'"),
    ({**minimal(), "models": []}, "'models' must be an object"),
    ({**minimal(), "families": {}}, "at least one family"),
    ({**minimal(), "families": {"opus": 3}}, "families.opus: must be an object"),
    (bad_entry(output=None), "models.claude-test-1-20260101: missing 'output'"),
    (bad_entry(input=-1), "models.claude-test-1-20260101: 'input' must be a finite price"),
    (bad_entry(input="cheap"), "'input' must be a number, got 'cheap'"),
    (bad_entry(input=True), "'input' must be a number"),
    (bad_entry(input=None, input_price=1), "unknown key(s) input_price"),
    (bad_entry(aliases="claude-x"), "'aliases' must be a list"),
    (bad_entry(long_context={"input": 1}), "long_context: 'threshold_tokens'"),
    (bad_entry(long_context={"threshold_tokens": 10, "input": 1, "output": 2,
                             "cache_write_5m": 1, "cache_write_1h": 2}),
     "models.claude-test-1-20260101.long_context: missing 'cache_read'"),
    (minimal(**{"claude-a-20250101": minimal()["families"]["opus"],
                "claude-a-20250601": minimal()["families"]["opus"]}),
     "models.claude-a-20250601: same undated id as claude-a-20250101"),
])
def test_malformed_files_name_file_and_entry(tmp_path, data, message):
    path = write(tmp_path, data)
    with pytest.raises(ValueError) as excinfo:
        load_prices(path)
    assert str(path) in str(excinfo.value)
    assert message in str(excinfo.value)


def test_string_prices_are_accepted(tmp_path):
    table = load_prices(write(tmp_path, bad_entry(input="0.125")))
    assert table.models["claude-test-1-20260101"].input == Decimal("0.125")


def test_prices_file_setting_replaces_the_bundled_table(tmp_path):
    from app import create_app
    from app.config import ConfigError

    def app_with(path):
        return create_app({"PRICES_FILE": str(path), "DATABASE_URL": f"sqlite:///{tmp_path}/d.db",
                           "CREDENTIALS_DIR": str(tmp_path)}, env_file=None)

    prices = app_with(write(tmp_path, minimal())).extensions["nexus.writer"].prices
    assert prices.price_for("claude-test-1-20260101")[0].cache_write_1h == Decimal(2)
    assert prices.price_for("claude-sonnet-4-5") == (None, True)  # only the file's models
    with pytest.raises(ConfigError, match=r"^PRICES_FILE: .*bad\.json: not valid JSON"):
        app_with(write(tmp_path, "{", "bad.json"))
    with pytest.raises(ConfigError, match="PRICES_FILE.*no such file"):
        app_with(tmp_path / "missing.json")
