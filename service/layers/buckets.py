"""Token buckets keyed by who is calling, bounded in memory, for rate limits and failed-auth slow-downs."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class Buckets:
    """One token bucket per key: ``rate`` tokens a second up to ``burst``; the least recently used
    keys are forgotten beyond ``max_keys`` (a forgotten key starts again with a full bucket)."""

    def __init__(
        self, rate: float, burst: float, max_keys: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate, self._burst, self._max_keys, self._clock = rate, burst, max_keys, clock
        # key -> (tokens, when); empty until somebody takes a token.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        """How many keys have a bucket: none until a first token is taken."""
        return len(self._buckets)

    def _level(self, key: str, now: float) -> float:
        tokens, when = self._buckets.get(key, (self._burst, now))
        return min(self._burst, tokens + (now - when) * self._rate)

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 when there was one, else the seconds until there will be."""
        now = self._clock()
        tokens = self._level(key, now)
        if tokens >= 1:
            self._store(key, tokens - 1, now)
            return 0.0
        self._store(key, tokens, now)
        return (1 - tokens) / self._rate

    def _store(self, key: str, tokens: float, now: float) -> None:
        self._buckets[key] = (tokens, now)
        self._buckets.move_to_end(key)
        if len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
