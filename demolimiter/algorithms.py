"""Rate-limit algorithms: pure, keyed, with an injected clock so tests need no sleeps.

Both algorithms return a ``Verdict`` in seconds (floats); rounding to header integers happens in ``headers``.
The redis backend runs the same arithmetic in Lua (see ``redis_backend``); keep the two in step.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import NamedTuple

Clock = Callable[[], float]

# Float refills drift by ulps (e.g. 2.9999999999 tokens); this keeps remaining/reset stable across such noise.
EPS = 1e-9


class Verdict(NamedTuple):
    allowed: bool
    remaining: int  # requests still admissible right now (>= 0)
    reset: float  # seconds until remaining grows: next token (token bucket) or window end (fixed window)
    retry_after: float  # seconds until a request would be admitted; 0.0 when allowed


class TokenBucket:
    """Token bucket per key: capacity ``burst``, refilled at ``limit / window`` tokens per second."""

    name = "token-bucket"

    def __init__(
        self, limit: int, window: float, burst: int | None = None, clock: Clock = time.time, max_keys: int = 100_000
    ) -> None:
        self.limit = limit
        self.window = window
        self.capacity = float(burst if burst is not None else limit)
        self.rate = limit / window
        self.clock = clock
        self.max_keys = max_keys
        self.prune_at = max_keys
        self.state: dict[bytes, list[float]] = {}  # key -> [tokens, last refill time]

    def hit(self, key: bytes) -> Verdict:
        now = self.clock()
        st = self.state.get(key)
        cap = self.capacity
        if st is None:
            if len(self.state) >= self.prune_at:
                self.prune(now)
            st = self.state[key] = [cap, now]
            tokens = cap
        else:
            # max(0, ...) so a clock stepping backwards never removes tokens.
            tokens = min(cap, st[0] + max(0.0, now - st[1]) * self.rate)
        allowed = tokens >= 1.0 - EPS
        if allowed:
            tokens = max(0.0, tokens - 1.0)
        st[0] = tokens
        st[1] = now
        whole = math.floor(tokens + EPS)
        reset = 0.0 if tokens >= cap - EPS else (whole + 1 - tokens) / self.rate
        return Verdict(allowed, whole, reset, 0.0 if allowed else (1.0 - tokens) / self.rate)

    def prune(self, now: float) -> None:
        """Drop keys whose bucket is full again: they are indistinguishable from unseen keys."""
        full = self.capacity / self.rate
        self.state = {k: v for k, v in self.state.items() if now - v[1] < full}
        # Many live keys: raise the bar so pruning stays amortised O(1) per new key instead of O(keys).
        self.prune_at = max(self.max_keys, 2 * len(self.state))


class FixedWindow:
    """At most ``limit`` admissions per key per window; windows are aligned to the Unix epoch."""

    name = "fixed-window"

    def __init__(self, limit: int, window: float, burst: int | None = None, clock: Clock = time.time) -> None:
        del burst  # a fixed window has no burst beyond its limit
        self.limit = limit
        self.window = window
        self.clock = clock
        self.index = -1.0
        self.counts: dict[bytes, int] = {}

    def hit(self, key: bytes) -> Verdict:
        now = self.clock()
        index = math.floor(now / self.window)
        if index != self.index:
            # Every key shares the epoch-aligned window, so a new window resets all counts at once (no sweeping).
            self.index = index
            self.counts = {}
        reset = (index + 1) * self.window - now
        count = self.counts.get(key, 0)
        if count < self.limit:
            self.counts[key] = count + 1
            return Verdict(True, self.limit - count - 1, reset, 0.0)
        return Verdict(False, 0, reset, reset)


ALGORITHMS: dict[str, type[TokenBucket] | type[FixedWindow]] = {
    TokenBucket.name: TokenBucket,
    FixedWindow.name: FixedWindow,
}
