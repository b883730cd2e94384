"""Rate-limit response fields: draft-ietf-httpapi-ratelimit-headers (-09 onward) and Retry-After."""

from __future__ import annotations

import math

POLICY_NAME = "default"
# Sub-microsecond excess is float noise (1.0000000002 s must read as 1, not 2).
SLACK = 1e-6


def ceil_seconds(seconds: float) -> int:
    """Whole seconds rounded up, never below 1: a client told 0 would retry at once and be limited again."""
    return max(1, math.ceil(seconds - SLACK))


def format_window(window: float) -> str:
    """Integer when whole (``60``), shortest decimal otherwise (``0.5``)."""
    return str(int(window)) if float(window).is_integer() else repr(float(window))


def policy(limit: int, window: float) -> str:
    """``RateLimit-Policy`` value: the quota (q) per window (w seconds)."""
    return f'"{POLICY_NAME}";q={limit};w={format_window(window)}'


def ratelimit(remaining: int, reset: int) -> str:
    """``RateLimit`` value: remaining quota (r) and whole seconds until it grows (t)."""
    return f'"{POLICY_NAME}";r={max(0, remaining)};t={reset}'


_RATELIMIT = b'RateLimit: "' + POLICY_NAME.encode() + b'";r=%d;t=%d\r\n'


def ratelimit_line(remaining: int, reset: int) -> bytes:
    """The full ``RateLimit`` header line, as the hot path writes it."""
    return _RATELIMIT % (max(0, remaining), reset)


def policy_line(limit: int, window: float) -> bytes:
    return f"RateLimit-Policy: {policy(limit, window)}\r\n".encode()


def retry_after_line(seconds: int) -> bytes:
    """``Retry-After`` in delay-seconds form; callers pass ``ceil_seconds`` output."""
    return b"Retry-After: %d\r\n" % seconds
