import random
from datetime import UTC, datetime

from app.proxy.retry import RetryPolicy, retry_after_seconds

RNG = random.Random(7)


def test_retry_after_forms():
    assert retry_after_seconds([("retry-after", "3")]) == 3.0
    assert retry_after_seconds([("Retry-After", "0.5")]) == 0.5
    assert retry_after_seconds([("retry-after-ms", "250"), ("retry-after", "9")]) == 0.25
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds([("retry-after", "Thu, 01 Jan 2026 12:00:04 GMT")], now) == 4.0
    assert retry_after_seconds([("retry-after", "garbage")]) is None
    assert retry_after_seconds([]) is None


def test_retryable_statuses_and_transport_errors_retry_up_to_the_limit():
    policy = RetryPolicy(max_retries=2)
    for status in (429, 500, 502, 503, 504, 529, None):
        assert policy.delay_after(1, 0.0, status, rng=RNG) is not None, status
        assert policy.delay_after(2, 0.0, status, rng=RNG) is not None, status
        assert policy.delay_after(3, 0.0, status, rng=RNG) is None, status
    for status in (200, 400, 401, 403, 404, 413):
        assert policy.delay_after(1, 0.0, status, rng=RNG) is None, status


def test_upstream_hints_win():
    policy = RetryPolicy(max_retries=2)
    assert policy.delay_after(1, 0.0, 429, [("retry-after", "7")]) == 7.0
    assert policy.delay_after(1, 0.0, 529, [("x-should-retry", "false")]) is None
    assert policy.delay_after(1, 0.0, 409, [("x-should-retry", "true")], rng=RNG) is not None


def test_total_wait_is_capped():
    policy = RetryPolicy(max_retries=5, budget=60)
    assert policy.delay_after(1, 0.0, 429, [("retry-after", "61")]) is None
    assert policy.delay_after(2, 50.0, 429, [("retry-after", "10")]) == 10.0
    assert policy.delay_after(2, 50.5, 429, [("retry-after", "10")]) is None


def test_backoff_grows_with_jitter():
    policy = RetryPolicy(base_delay=0.5, max_delay=8)
    first = [policy.backoff(1, RNG) for _ in range(200)]
    third = [policy.backoff(3, RNG) for _ in range(200)]
    assert 0.375 <= min(first) and max(first) <= 0.625
    assert 1.5 <= min(third) and max(third) <= 2.5
    assert len(set(first)) > 100  # jittered, not a constant
    assert max(policy.backoff(20, RNG) for _ in range(50)) <= 8 * 1.25
