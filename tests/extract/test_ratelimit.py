"""The token bucket, on a fake clock: a burst, then the steady rate."""

from __future__ import annotations

import pytest

from extract.ratelimit import TokenBucket


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_full_bucket_allows_the_burst_at_once_then_refuses_and_says_how_long() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=15, clock=clock, sleep=clock.sleep)
    assert all(bucket.try_acquire()[0] for _ in range(15))
    ok, wait = bucket.try_acquire()
    assert not ok and wait == pytest.approx(0.1)
    clock.now += 0.05
    ok, wait = bucket.try_acquire()
    assert not ok and wait == pytest.approx(0.05)


def test_acquire_paces_requests_at_the_rate_after_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=15, clock=clock, sleep=clock.sleep)
    for _ in range(61):
        bucket.acquire()
    # 61 requests: 15 from the burst, 46 more at 10/s
    assert clock.now == pytest.approx(4.6)


def test_tokens_refill_lazily_but_never_beyond_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=3, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        bucket.acquire()
    clock.now += 100.0
    for _ in range(3):
        assert bucket.acquire() == 0.0
    assert bucket.acquire() == pytest.approx(0.1)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0)])
def test_nonsense_limits_are_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError):
        TokenBucket(rate=rate, burst=burst)
