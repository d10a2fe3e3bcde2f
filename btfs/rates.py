"""Rates: a meter of bytes per second, and a token bucket to cap them. Pure: time is passed in."""

from __future__ import annotations

import math


class RateMeter:
    """Bytes per second, smoothed exponentially over about `window` seconds."""

    def __init__(self, window: float = 5.0) -> None:
        self.window = window
        self.rate = 0.0
        self.total = 0
        self._pending = 0
        self._last: float | None = None

    def add(self, n: int, now: float) -> None:
        self._advance(now)
        self._pending += n
        self.total += n

    def value(self, now: float) -> float:
        self._advance(now)
        return self.rate

    def _advance(self, now: float) -> None:
        if self._last is None:
            self._last = now
            return
        elapsed = now - self._last
        if elapsed <= 0:
            return
        instant = self._pending / elapsed
        weight = 1 - math.exp(-elapsed / self.window)
        self.rate += (instant - self.rate) * weight
        self._pending = 0
        self._last = now


class TokenBucket:
    """Allows `rate` bytes per second on average with bursts up to `burst` bytes.

    A rate of 0 means unlimited. `delay(n, now)` says how long to wait before sending
    `n` bytes and takes them; the caller sleeps that long (the trio shell).
    """

    def __init__(self, rate: int, burst: int | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 64 * 1024)
        self.tokens = float(self.burst)
        self._last: float | None = None

    def delay(self, n: int, now: float) -> float:
        if self.rate <= 0:
            return 0.0
        if self._last is not None:
            self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
        self._last = now
        self.tokens -= n
        if self.tokens >= 0:
            return 0.0
        return -self.tokens / self.rate
