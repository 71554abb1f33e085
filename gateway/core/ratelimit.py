"""Token-bucket rate limiting per key (sans-I/O: the caller passes a monotonic `now`)."""

from __future__ import annotations

from typing import Final

#: Beyond this many tracked keys the limiter forgets keys whose buckets are full (they carry no state).
MAX_KEYS: Final = 100_000


class RateLimiter:
    """Allows `rate` events per second per key with bursts up to `burst`."""

    __slots__ = ("_buckets", "_burst", "_rate")

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}

    def acquire(self, key: str, now: float) -> float:
        """Take one token. Returns 0.0 when allowed, else the seconds until a token is available."""
        tokens, last = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - last) * self._rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > MAX_KEYS:
                self._prune(now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self._rate

    def _prune(self, now: float) -> None:
        full = [k for k, (t, last) in self._buckets.items() if t + (now - last) * self._rate >= self._burst]
        for k in full:
            del self._buckets[k]
