"""Exact limiters of every model, deciding requests one at a time: what a cluster enforcing a spec would do.

The verdict uses them to ask whether a run could have told the declared limit from twice it: it replays the run's
own requests through a cluster of two nodes that each enforce the limit alone, and checks that the replay would
have caught it (``rlsuite.verdict``).
"""

from __future__ import annotations

import math
from collections import deque

from rlsuite.models import (
    FIRST_REQUEST,
    FIXED_WINDOW,
    LEAKY_BUCKET,
    SLIDING_LOG,
    SLIDING_WINDOW_COUNTER,
    TOKEN_BUCKET,
    Spec,
)


class Limiter:
    def hit(self, t: float, cost: int = 1) -> bool:
        """Decide a request at ``t`` that spends ``cost`` units: admitted only if all of them fit."""
        raise NotImplementedError


class TokenBucket(Limiter):
    __slots__ = ("at", "capacity", "counts_rejected", "level", "rate")

    def __init__(self, capacity: float, rate: float, counts_rejected: bool) -> None:
        self.capacity, self.rate, self.counts_rejected = capacity, rate, counts_rejected
        self.level, self.at = capacity, None

    def hit(self, t: float, cost: int = 1) -> bool:
        if self.at is not None:
            self.level = min(self.capacity, self.level + self.rate * max(0.0, t - self.at))
        self.at = t
        if self.level >= cost:
            self.level -= cost
            return True
        if self.counts_rejected:
            self.level = max(-self.capacity, self.level - cost)
        return False


class FixedWindow(Limiter):
    __slots__ = ("count", "epoch", "limit", "start", "window")

    def __init__(self, limit: int, window: float, epoch: bool) -> None:
        self.limit, self.window, self.epoch = limit, window, epoch
        self.start: float | None = None
        self.count = 0

    def hit(self, t: float, cost: int = 1) -> bool:
        if self.epoch:
            start = math.floor(t / self.window) * self.window
            if start != self.start:
                self.start, self.count = start, 0
        elif self.start is None or t >= self.start + self.window:
            self.start, self.count = t, 0
        if self.count + cost > self.limit:
            return False  # counted or not, a rejection changes no admission of a fixed window
        self.count += cost
        return True


class SlidingLog(Limiter):
    __slots__ = ("counts_rejected", "limit", "log", "window")

    def __init__(self, limit: int, window: float, counts_rejected: bool) -> None:
        self.limit, self.window, self.counts_rejected = limit, window, counts_rejected
        self.log: deque[float] = deque()

    def hit(self, t: float, cost: int = 1) -> bool:
        log = self.log
        while log and log[0] <= t - self.window:
            log.popleft()
        ok = len(log) + cost <= self.limit
        if ok or self.counts_rejected:
            log.extend((t,) * cost)  # one entry per unit
            while len(log) > self.limit:  # only the newest `limit` entries can ever matter
                log.popleft()
        return ok


class SlidingWindowCounter(Limiter):
    __slots__ = ("counts_rejected", "current", "index", "limit", "previous", "window")

    def __init__(self, limit: int, window: float, counts_rejected: bool) -> None:
        self.limit, self.window, self.counts_rejected = limit, window, counts_rejected
        self.index: int | None = None
        self.current = self.previous = 0

    def hit(self, t: float, cost: int = 1) -> bool:
        index = math.floor(t / self.window)
        if index != self.index:
            self.previous = self.current if self.index == index - 1 else 0
            self.current, self.index = 0, index
        elapsed = t - index * self.window
        ok = self.current + math.floor(self.previous * (self.window - elapsed) / self.window) + cost <= self.limit
        if ok or self.counts_rejected:
            self.current += cost
        return ok


def build(spec: Spec) -> Limiter:
    """A limiter enforcing ``spec`` for one partition (fixed windows of unknown alignment: epoch-aligned)."""
    a = spec.algorithm
    if a in (TOKEN_BUCKET, LEAKY_BUCKET):
        return TokenBucket(spec.capacity, spec.rate, spec.counts_rejected)
    if a == FIXED_WINDOW:
        return FixedWindow(spec.limit, spec.window, epoch=spec.alignment != FIRST_REQUEST)
    if a == SLIDING_LOG:
        return SlidingLog(spec.limit, spec.window, spec.counts_rejected)
    if a == SLIDING_WINDOW_COUNTER:
        return SlidingWindowCounter(spec.limit, spec.window, spec.counts_rejected)
    raise ValueError(a)
