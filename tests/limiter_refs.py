"""Reference rate limiters for the replay's tests: small, exact, written from each algorithm's published definition
(independent of the demo limiter), fed decision times in order. A request spends ``cost`` units and is admitted only
when all of them fit."""

from __future__ import annotations

import math
from collections import deque


class TokenBucket:
    def __init__(self, capacity: float, rate: float, counts_rejected: bool = False) -> None:
        self.capacity, self.rate, self.counts_rejected = capacity, rate, counts_rejected
        self.level, self.at = capacity, None

    def hit(self, t: float, cost: int = 1) -> bool:
        if self.at is not None:
            self.level = min(self.capacity, self.level + self.rate * (t - self.at))
        self.at = t
        if self.level >= cost:
            self.level -= cost
            return True
        if self.counts_rejected:
            self.level = max(-self.capacity, self.level - cost)
        return False


class LeakyBucket:
    """nginx limit_req with nodelay: excess in requests, reject when the new excess would pass burst."""

    def __init__(self, burst: int, rate: float) -> None:
        self.burst, self.rate = burst, rate
        self.excess, self.at = 0.0, None

    def hit(self, t: float, cost: int = 1) -> bool:
        excess = 0.0 if self.at is None else max(0.0, self.excess - self.rate * (t - self.at))
        if excess + cost > self.burst + 1:
            return False  # rejected requests leave the state alone
        self.excess, self.at = excess + cost, t
        return True


class FixedWindow:
    def __init__(self, limit: int, window: float, first_request: bool = False) -> None:
        self.limit, self.window, self.first_request = limit, window, first_request
        self.start, self.count = None, 0

    def hit(self, t: float, cost: int = 1) -> bool:
        if self.first_request:
            if self.start is None or t >= self.start + self.window:
                self.start, self.count = t, 0
        else:
            start = math.floor(t / self.window) * self.window
            if start != self.start:
                self.start, self.count = start, 0
        if self.count + cost > self.limit:
            return False
        self.count += cost
        return True


class SlidingLog:
    def __init__(self, limit: int, window: float, counts_rejected: bool = False) -> None:
        self.limit, self.window, self.counts_rejected = limit, window, counts_rejected
        self.log: deque[float] = deque()

    def hit(self, t: float, cost: int = 1) -> bool:
        while self.log and self.log[0] <= t - self.window:
            self.log.popleft()
        ok = len(self.log) + cost <= self.limit
        if ok or self.counts_rejected:
            self.log.extend([t] * cost)
        return ok


class SlidingWindowCounter:
    """The `limits` / Cloudflare approximation: current + floor(previous x remaining share of the window)."""

    def __init__(self, limit: int, window: float, counts_rejected: bool = False) -> None:
        self.limit, self.window, self.counts_rejected = limit, window, counts_rejected
        self.index, self.current, self.previous = None, 0, 0

    def hit(self, t: float, cost: int = 1) -> bool:
        index = math.floor(t / self.window)
        if index != self.index:
            self.previous = self.current if self.index == index - 1 else 0
            self.current, self.index = 0, index
        elapsed = t - index * self.window
        estimate = self.current + math.floor(self.previous * (self.window - elapsed) / self.window)
        ok = estimate + cost <= self.limit
        if ok or self.counts_rejected:
            self.current += cost
        return ok
