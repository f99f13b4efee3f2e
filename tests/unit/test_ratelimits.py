from datetime import UTC, datetime

import pytest

from app.usage.ratelimits import alert_level, parse_ratelimit_headers
from tests.fakes.api_headers import common_headers, ratelimit_headers, unified_headers

COLUMNS = {
    "headers", "unified_status", "unified_5h_utilization", "unified_5h_reset",
    "unified_7d_utilization", "unified_7d_reset", "unified_representative_claim",
    "unified_fallback_percentage", "unified_overage_status", "requests_remaining",
    "requests_limit", "tokens_remaining", "tokens_limit",
}
UNIFIED_COLUMNS = {c for c in COLUMNS if c.startswith("unified_")}
STANDARD_COLUMNS = {"requests_remaining", "requests_limit", "tokens_remaining", "tokens_limit"}

# An API-key answer as the real API sends it (values from a recorded api.anthropic.com reply).
API_KEY_ANSWER = [
    ("date", "Thu, 21 Aug 2025 12:41:00 GMT"),
    ("content-type", "application/json"),
    ("anthropic-ratelimit-input-tokens-limit", "80000"),
    ("anthropic-ratelimit-input-tokens-remaining", "80000"),
    ("anthropic-ratelimit-input-tokens-reset", "2025-08-21T12:40:59Z"),
    ("anthropic-ratelimit-output-tokens-limit", "16000"),
    ("anthropic-ratelimit-output-tokens-remaining", "16000"),
    ("anthropic-ratelimit-output-tokens-reset", "2025-08-21T12:41:00Z"),
    ("anthropic-ratelimit-requests-limit", "1000"),
    ("anthropic-ratelimit-requests-remaining", "999"),
    ("anthropic-ratelimit-requests-reset", "2025-08-21T12:40:59Z"),
    ("anthropic-ratelimit-tokens-limit", "96000"),
    ("anthropic-ratelimit-tokens-remaining", "96000"),
    ("anthropic-ratelimit-tokens-reset", "2025-08-21T12:40:59Z"),
    ("request-id", "req_011CSLsW7mFqvHHnzrKdKjAE"),
]

# A subscription answer near its weekly cap, with the threshold header Claude Code reads.
SUBSCRIPTION_WARNING = [
    ("anthropic-ratelimit-unified-status", "allowed_warning"),
    ("anthropic-ratelimit-unified-5h-status", "allowed"),
    ("anthropic-ratelimit-unified-5h-reset", "1760004000"),
    ("anthropic-ratelimit-unified-5h-utilization", "0.35"),
    ("anthropic-ratelimit-unified-7d-status", "allowed_warning"),
    ("anthropic-ratelimit-unified-7d-reset", "1760400000"),
    ("anthropic-ratelimit-unified-7d-utilization", "0.85"),
    ("anthropic-ratelimit-unified-7d-surpassed-threshold", "0.75"),
    ("anthropic-ratelimit-unified-representative-claim", "seven_day"),
    ("anthropic-ratelimit-unified-fallback-percentage", "0.5"),
    ("anthropic-ratelimit-unified-reset", "1760400000"),
    ("anthropic-ratelimit-unified-overage-status", "rejected"),
    ("anthropic-ratelimit-unified-overage-disabled-reason", "org_level_disabled"),
]


def epoch(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def test_api_key_answer_fills_the_standard_columns_only():
    sample = parse_ratelimit_headers(API_KEY_ANSWER)
    assert set(sample) == COLUMNS
    assert (sample["requests_remaining"], sample["requests_limit"]) == (999, 1000)
    assert (sample["tokens_remaining"], sample["tokens_limit"]) == (96000, 96000)
    assert all(sample[c] is None for c in UNIFIED_COLUMNS)
    # Every rate-limit pair is kept in order (the input/output families only live there);
    # the other headers of the answer are not.
    assert sample["headers"] == [[n, v] for n, v in API_KEY_ANSWER[2:-1]]


def test_fake_upstream_standard_headers():
    headers = common_headers("req_1", json_body=True) + ratelimit_headers(1200, 300)
    sample = parse_ratelimit_headers(headers)
    assert sample["requests_limit"] == 4000 and sample["requests_remaining"] == 3999
    assert sample["tokens_limit"] == 2_400_000
    assert sample["tokens_remaining"] == 2_398_000          # rounded to the thousand
    assert len(sample["headers"]) == 12
    exhausted = parse_ratelimit_headers(ratelimit_headers(exhausted=True))
    assert exhausted["requests_remaining"] == 0 and exhausted["tokens_remaining"] == 0


def test_subscription_answer_fills_the_unified_columns():
    sample = parse_ratelimit_headers(SUBSCRIPTION_WARNING)
    assert sample == {
        "headers": [[n, v] for n, v in SUBSCRIPTION_WARNING],
        "unified_status": "allowed_warning",
        "unified_5h_utilization": 0.35,
        "unified_5h_reset": epoch(1760004000),
        "unified_7d_utilization": 0.85,
        "unified_7d_reset": epoch(1760400000),
        "unified_representative_claim": "seven_day",
        "unified_fallback_percentage": 0.5,
        "unified_overage_status": "rejected",
        "requests_remaining": None, "requests_limit": None,
        "tokens_remaining": None, "tokens_limit": None,
    }
    assert sample["unified_5h_reset"].tzinfo is UTC


def test_fake_upstream_unified_headers():
    sample = parse_ratelimit_headers(unified_headers())
    assert sample["unified_status"] == "allowed"
    assert sample["unified_5h_utilization"] == 0.12
    assert sample["unified_7d_utilization"] == 0.34
    assert sample["unified_representative_claim"] == "five_hour"
    assert sample["unified_fallback_percentage"] == 0.5
    assert sample["unified_overage_status"] == "rejected"
    now = datetime.now(UTC)
    assert now < sample["unified_5h_reset"] < sample["unified_7d_reset"]
    assert all(sample[c] is None for c in STANDARD_COLUMNS)
    rejected = parse_ratelimit_headers(
        unified_headers({"status": "rejected", "5h-status": "rejected", "5h-utilization": "1.0"}))
    assert rejected["unified_status"] == "rejected"
    assert rejected["unified_5h_utilization"] == 1.0


def test_both_families_on_one_answer():
    sample = parse_ratelimit_headers(ratelimit_headers(10, 5) + unified_headers())
    assert sample["requests_limit"] == 4000 and sample["unified_status"] == "allowed"
    assert len(sample["headers"]) == 12 + 12
    assert all(sample[c] is not None for c in COLUMNS)


@pytest.mark.parametrize("headers", [
    [], common_headers("req_1", json_body=False),
    [("retry-after", "30"), ("x-should-retry", "true")],
    # Look-alikes: the prefix must start the name.
    [("x-anthropic-ratelimit-requests-limit", "1"), ("anthropic-priority-input-tokens-limit", "1")],
])
def test_no_ratelimit_header_is_no_sample(headers):
    assert parse_ratelimit_headers(headers) is None
    assert parse_ratelimit_headers(iter(headers)) is None


def test_an_unknown_ratelimit_header_alone_still_makes_a_sample():
    sample = parse_ratelimit_headers([("anthropic-ratelimit-unified-7d_oi-status", "allowed")])
    assert sample["headers"] == [["anthropic-ratelimit-unified-7d_oi-status", "allowed"]]
    assert all(sample[c] is None for c in COLUMNS - {"headers"})


def test_names_are_case_insensitive_and_enums_normalised():
    headers = [("Anthropic-Ratelimit-Unified-Status", " Rejected "),
               ("ANTHROPIC-RATELIMIT-UNIFIED-5H-UTILIZATION", "0.99"),
               ("Anthropic-RateLimit-Requests-Remaining", "49"),
               ("Anthropic-Ratelimit-Unified-Representative-Claim", "FIVE_HOUR")]
    sample = parse_ratelimit_headers(headers)
    assert sample["unified_status"] == "rejected"
    assert sample["unified_5h_utilization"] == 0.99
    assert sample["requests_remaining"] == 49
    assert sample["unified_representative_claim"] == "five_hour"
    # Names lower-cased, values exactly as received.
    assert sample["headers"][0] == ["anthropic-ratelimit-unified-status", " Rejected "]


@pytest.mark.parametrize(("name", "value"), [
    ("requests-remaining", "abc"), ("requests-remaining", "-1"), ("requests-remaining", "1.5"),
    ("requests-remaining", "1_000"), ("requests-remaining", "١٢"), ("requests-limit", ""),
    ("tokens-limit", str(2**63)), ("tokens-remaining", "1e3"),
    ("unified-5h-utilization", "high"), ("unified-5h-utilization", "nan"),
    ("unified-5h-utilization", "inf"), ("unified-5h-utilization", "-0.2"),
    ("unified-7d-utilization", "0.1_0"), ("unified-fallback-percentage", "50%"),
    ("unified-5h-reset", "soon"), ("unified-5h-reset", "0"), ("unified-5h-reset", "-5"),
    ("unified-7d-reset", "1e300"), ("unified-7d-reset", "2025-13-45T00:00:00Z"),
    ("unified-status", "   "),
])
def test_a_malformed_value_only_empties_its_column(name, value):
    headers = [(f"anthropic-ratelimit-{name}", value), ("anthropic-ratelimit-requests-limit", "50")]
    if name == "requests-limit":
        headers = headers[:1]
    sample = parse_ratelimit_headers(headers)
    assert sample[name.replace("-", "_")] is None
    assert sample["headers"][0] == [f"anthropic-ratelimit-{name}", value]
    if name != "requests-limit":
        assert sample["requests_limit"] == 50


def test_percentages_are_kept_as_reported():
    sample = parse_ratelimit_headers([("anthropic-ratelimit-unified-5h-utilization", "35"),
                                      ("anthropic-ratelimit-unified-7d-utilization", "1.02"),
                                      ("anthropic-ratelimit-unified-fallback-percentage", "50")])
    assert sample["unified_5h_utilization"] == 35.0
    assert sample["unified_7d_utilization"] == 1.02
    assert sample["unified_fallback_percentage"] == 50.0


def test_reset_formats_tolerated():
    def reset(value):
        return parse_ratelimit_headers(
            [("anthropic-ratelimit-unified-5h-reset", value)])["unified_5h_reset"]

    moment = epoch(1760004000)
    assert reset("1760004000") == moment
    assert reset(" 1760004000 ") == moment
    assert reset("1760004000.0") == moment
    assert reset("1760004000000") == moment                  # milliseconds
    assert reset("2025-10-09T10:00:00Z") == moment           # RFC 3339, like the standard family
    assert reset("2025-10-09T12:00:00+02:00") == moment
    assert reset("2025-10-09T12:00:00+02:00").tzinfo is UTC
    assert reset("2025-10-09T10:00:00") == moment            # naive: taken as UTC


def test_first_of_repeated_headers_wins_but_all_are_kept():
    sample = parse_ratelimit_headers([("anthropic-ratelimit-requests-remaining", "10"),
                                      ("Anthropic-Ratelimit-Requests-Remaining", "9")])
    assert sample["requests_remaining"] == 10
    assert len(sample["headers"]) == 2


def test_bytes_and_odd_pairs():
    sample = parse_ratelimit_headers([(b"anthropic-ratelimit-unified-status", b"allowed"),
                                      (None, "x"), ("anthropic-ratelimit-requests-limit", None)])
    assert sample["unified_status"] == "allowed"
    assert sample["headers"] == [["anthropic-ratelimit-unified-status", "allowed"]]


def test_never_raises_on_junk():
    junk = [("anthropic-ratelimit-" + s, v) for s in ("unified-5h-reset", "unified-status",
                                                      "requests-limit", "unified-7d-utilization")
            for v in ("\x00", "９９", "1" * 400, "--", "0x10", "True", "1e-400")]
    sample = parse_ratelimit_headers(junk)
    assert sample["requests_limit"] is None
    assert len(sample["headers"]) == len(junk)


# ----------------------------------------------------------------------------- alerts


def sample_with(status):
    return parse_ratelimit_headers(unified_headers({"status": status}))


@pytest.mark.parametrize(("previous", "current", "expected"), [
    ("allowed", "allowed_warning", "allowed_warning"),
    ("allowed", "rejected", "rejected"),
    ("allowed_warning", "rejected", "rejected"),
    ("rejected", "allowed_warning", "allowed_warning"),
    ("allowed_warning", "allowed_warning", None),         # still warning: no second alert
    ("rejected", "rejected", None),
    ("rejected", "allowed", None),                         # recovering is not an alert
    ("allowed", "allowed", None),
])
def test_alert_on_transitions(previous, current, expected):
    assert alert_level(sample_with(current), sample_with(previous)) == expected


def test_alert_without_previous_sample():
    assert alert_level(sample_with("rejected"), None) == "rejected"
    assert alert_level(sample_with("allowed_warning")) == "allowed_warning"
    assert alert_level(sample_with("allowed"), None) is None


def test_alert_when_previous_had_no_unified_status():
    api_key = parse_ratelimit_headers(API_KEY_ANSWER)
    assert alert_level(sample_with("allowed_warning"), api_key) == "allowed_warning"
    assert alert_level(api_key, sample_with("rejected")) is None
    assert alert_level(None, None) is None
    assert alert_level({}, {"unified_status": 3}) is None


def test_alert_reads_model_rows_and_raw_case():
    class Row:
        unified_status = "Allowed_Warning"

    assert alert_level({"unified_status": "allowed_warning"}, Row()) is None
    assert alert_level({"unified_status": "REJECTED"}, Row()) == "rejected"
