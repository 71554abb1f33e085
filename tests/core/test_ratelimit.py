"""Token buckets: bursts, refill, and bounded memory."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.core import ratelimit
from gateway.core.ratelimit import RateLimiter


def test_burst_then_refill() -> None:
    limiter = RateLimiter(rate=2.0, burst=3)
    assert [limiter.acquire("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.acquire("a", 0.0)
    assert wait == 0.5
    assert limiter.acquire("b", 0.0) == 0.0, "keys are independent"
    assert limiter.acquire("a", 0.5) == 0.0


@given(st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=200))
def test_never_more_than_burst_plus_rate_times_elapsed(gaps: list[float]) -> None:
    limiter = RateLimiter(rate=10.0, burst=5)
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        if limiter.acquire("k", now) == 0.0:
            allowed += 1
    assert allowed <= 5 + 10.0 * now + 1e-6


def test_memory_is_bounded(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(ratelimit, "MAX_KEYS", 100)
    limiter = RateLimiter(rate=1000.0, burst=1)
    for i in range(1000):
        limiter.acquire(f"addr-{i}", float(i))
    assert len(limiter._buckets) <= 101
