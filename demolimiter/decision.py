"""What a limiter tells the HTTP layer: an outcome plus the integers the response headers need."""

from __future__ import annotations

from typing import NamedTuple

from .algorithms import Verdict
from .headers import ceil_seconds

# Outcome codes index the per-node counters in ``metrics``; their names are the ``decision`` label values.
ADMITTED = 0
LIMITED = 1
REDIS_ERROR_OPEN = 2  # backend unreachable, request admitted by --redis-failure open
REDIS_ERROR_CLOSED = 3  # backend unreachable, request rejected (503) by --redis-failure closed
NAMES = ("admitted", "limited", "redis_error_open", "redis_error_closed")


class Decision(NamedTuple):
    outcome: int
    remaining: int = 0  # RateLimit r
    reset: int = 0  # RateLimit t, whole seconds
    retry_after: int = 0  # Retry-After, whole seconds (>= 1 when limited)


OPEN = Decision(REDIS_ERROR_OPEN)
CLOSED = Decision(REDIS_ERROR_CLOSED, retry_after=1)


def from_verdict(v: Verdict) -> Decision:
    if v.allowed:
        return Decision(ADMITTED, v.remaining, ceil_seconds(v.reset))
    return Decision(LIMITED, v.remaining, ceil_seconds(v.reset), ceil_seconds(v.retry_after))


def from_micros(allowed: int, remaining: int, reset_us: int, retry_us: int) -> Decision:
    """Decision from the redis script's integer reply (durations in microseconds)."""
    if allowed:
        return Decision(ADMITTED, remaining, ceil_seconds(reset_us / 1e6))
    return Decision(LIMITED, remaining, ceil_seconds(reset_us / 1e6), ceil_seconds(retry_us / 1e6))
