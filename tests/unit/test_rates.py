from __future__ import annotations

import pytest

from btfs.rates import RateMeter, TokenBucket


def test_meter_converges_to_steady_rate() -> None:
    meter = RateMeter(window=2.0)
    now = 0.0
    for _ in range(200):
        now += 0.1
        meter.add(10_000, now)
    assert meter.value(now) == pytest.approx(100_000, rel=0.05)
    assert meter.total == 2_000_000
    assert meter.value(now + 20) < 1000


def test_bucket_unlimited_and_limited() -> None:
    assert TokenBucket(0).delay(10**9, 0.0) == 0.0
    bucket = TokenBucket(100_000, burst=100_000)
    assert bucket.delay(100_000, 0.0) == 0.0
    assert bucket.delay(50_000, 0.0) == pytest.approx(0.5)
    # Over ten simulated seconds the average stays at the rate.
    now, sent = 0.0, 0
    for _ in range(1000):
        now += bucket.delay(16384, now)
        sent += 16384
    assert sent / now == pytest.approx(100_000, rel=0.1)
