"""Rate-limit algorithms: pure, keyed, with an injected clock so tests need no sleeps.

Every algorithm keeps one small list of floats per key and splits a request in two steps, so the deliberately
racy mode can run them apart: ``step(state, now)`` decides and updates a state list in place, and the caller
stores it. ``hit`` does both at once (the correct, atomic path); ``read`` hands out a private copy of a key's
state for ``step``, and ``write`` stores it back later, overwriting whatever happened in between (``--race``).

A request may cost several units (``cost``, from --cost-header): it is admitted only when all of them fit, and then
spends them all (a token bucket takes ``cost`` tokens, a window counts ``cost``, a sliding log logs ``cost`` entries).

All answers are ``Verdict``s in seconds (floats); rounding to header integers happens in ``headers``.
The redis backend runs the same arithmetic in Lua (see ``redis_backend``); keep the two in step.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, MutableSequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .config import Settings

Clock = Callable[[], float]
State = MutableSequence[float]  # a list; a deque for the sliding log

# Float arithmetic drifts by ulps (e.g. 2.9999999999 tokens); this keeps decisions and headers stable across it.
EPS = 1e-9


class Verdict(NamedTuple):
    allowed: bool
    remaining: int  # requests still admissible right now (>= 0)
    reset: float  # seconds until remaining grows (no further requests assumed)
    retry_after: float  # seconds until a request would be admitted; 0.0 when allowed
    delay: float = 0.0  # seconds to hold an admitted request before answering it (leaky bucket without nodelay)


class Algorithm:
    """Per-key state in a dict, pruned (amortised O(1) per new key) of states equal to a fresh key's."""

    name = ""

    def __init__(
        self,
        limit: int,
        window: float,
        burst: int | None = None,
        clock: Clock = time.time,
        *,
        counts_rejected: bool = False,
        max_keys: int = 100_000,
    ) -> None:
        self.limit = limit
        self.window = window
        self.burst = burst
        self.rate = limit / window
        self.clock = clock
        self.counts_rejected = counts_rejected
        self.max_keys = max_keys
        self.prune_at = max_keys
        self.state: dict[bytes, State] = {}

    def fresh(self, now: float) -> State:
        """The state of a key never seen (or forgotten)."""
        raise NotImplementedError

    def load(self, values: list[float]) -> State:
        """A state from its numbers, e.g. as stored in redis by --race."""
        return values

    def step(self, st: State, now: float, cost: int = 1) -> Verdict:
        """Decide one request of ``cost`` units at ``now`` and update ``st`` in place."""
        raise NotImplementedError

    def idle(self, st: State, now: float) -> bool:
        """Whether ``st`` now decides like a fresh key's state (so it can be forgotten)."""
        raise NotImplementedError

    def hit(self, key: bytes, now: float | None = None, cost: int = 1) -> Verdict:
        if now is None:
            now = self.clock()
        st = self.state.get(key)
        if st is None:
            if len(self.state) >= self.prune_at:
                self.prune(now)
            st = self.state[key] = self.fresh(now)
        return self.step(st, now, cost)

    def read(self, key: bytes) -> tuple[float, State]:
        """The time and a private copy of ``key``'s state: ``step`` it, then ``write`` it (racy mode)."""
        now = self.clock()
        st = self.state.get(key)
        return now, (self.fresh(now) if st is None else st.copy())  # type: ignore[attr-defined]

    def write(self, key: bytes, st: State) -> None:
        if key not in self.state and len(self.state) >= self.prune_at:
            self.prune(self.clock())
        self.state[key] = st

    def prune(self, now: float) -> None:
        idle = self.idle
        self.state = {k: v for k, v in self.state.items() if not idle(v, now)}
        # Many live keys: raise the bar so pruning stays amortised O(1) per new key instead of O(keys).
        self.prune_at = max(self.max_keys, 2 * len(self.state))


class TokenBucket(Algorithm):
    """Capacity ``burst`` (default ``limit``), refilled at ``limit / window`` tokens per second, starting full.

    State: [tokens, time of last update]. With ``counts_rejected`` a rejected request still takes a token, down
    to ``-capacity``: under sustained overload the bucket never climbs back to one token.
    """

    name = "token-bucket"

    def __init__(
        self,
        limit: int,
        window: float,
        burst: int | None = None,
        clock: Clock = time.time,
        *,
        counts_rejected: bool = False,
        max_keys: int = 100_000,
    ) -> None:
        super().__init__(limit, window, burst, clock, counts_rejected=counts_rejected, max_keys=max_keys)
        self.capacity = float(burst if burst is not None else limit)

    def fresh(self, now: float) -> State:
        return [self.capacity, now]

    def step(self, st: State, now: float, cost: int = 1) -> Verdict:
        cap = self.capacity
        rate = self.rate
        # max(0, ...) so a clock stepping backwards never removes tokens.
        tokens = min(cap, st[0] + max(0.0, now - st[1]) * rate)
        allowed = tokens >= cost - EPS
        if allowed:
            tokens = max(0.0, tokens - cost)
        elif self.counts_rejected:
            tokens = max(-cap, tokens - cost)
        st[0] = tokens
        st[1] = now
        whole = max(0, math.floor(tokens + EPS))
        reset = 0.0 if tokens >= cap - EPS else (whole + 1 - tokens) / rate
        return Verdict(allowed, whole, reset, 0.0 if allowed else (cost - tokens) / rate)

    def idle(self, st: State, now: float) -> bool:
        return now - st[1] >= (self.capacity - st[0]) / self.rate


class FixedWindow(Algorithm):
    """At most ``limit`` admissions per key per window.

    ``alignment="epoch"``: windows are [k * window, (k + 1) * window) of Unix time, the same for every key; state
    [k, count]. ``alignment="first-request"``: a key's window opens at its first request after the previous window
    ended and lasts ``window`` (the INCR + EXPIRE-on-first-hit pattern); state [window start, count].
    With ``counts_rejected`` every request increments the count (INCR before the check); admissions are unchanged.
    """

    name = "fixed-window"

    def __init__(
        self,
        limit: int,
        window: float,
        burst: int | None = None,
        clock: Clock = time.time,
        *,
        counts_rejected: bool = False,
        alignment: str = "epoch",
        max_keys: int = 100_000,
    ) -> None:
        del burst  # a fixed window has no burst beyond its limit
        super().__init__(limit, window, None, clock, counts_rejected=counts_rejected, max_keys=max_keys)
        if alignment not in ("epoch", "first-request"):
            raise ValueError(f"alignment {alignment!r}")
        self.first_request = alignment == "first-request"

    def fresh(self, now: float) -> State:
        return [now, 0.0] if self.first_request else [math.floor(now / self.window), 0.0]

    def step(self, st: State, now: float, cost: int = 1) -> Verdict:
        window = self.window
        if self.first_request:
            if now >= st[0] + window:
                st[0] = now
                st[1] = 0.0
            end = st[0] + window
        else:
            index = math.floor(now / window)
            if st[0] != index:
                st[0] = index
                st[1] = 0.0
            end = (index + 1) * window
        count = st[1]
        allowed = count + cost <= self.limit
        if allowed or self.counts_rejected:
            count = st[1] = count + cost
        reset = end - now
        return Verdict(allowed, max(0, self.limit - int(count)), reset, 0.0 if allowed else reset)

    def idle(self, st: State, now: float) -> bool:
        if self.first_request:
            return now >= st[0] + self.window
        return st[0] != math.floor(now / self.window)


class SlidingLog(Algorithm):
    """At most ``limit`` admissions in any ``window``-long span: admit iff fewer than ``limit`` logged times lie in
    (now - window, now].

    State: the logged times, oldest first. Only the newest ``limit`` entries can ever matter, so the log is capped
    there; with ``counts_rejected`` rejected requests are logged too (and then the log is exactly that cap).
    """

    name = "sliding-log"

    def fresh(self, now: float) -> State:
        return deque()

    def load(self, values: list[float]) -> State:
        return deque(values)

    def step(self, st: State, now: float, cost: int = 1) -> Verdict:
        log: deque[float] = st  # type: ignore[assignment]
        cutoff = now - self.window
        while log and log[0] <= cutoff:
            log.popleft()
        n = len(log)
        allowed = n + cost <= self.limit
        if allowed or self.counts_rejected:
            if cost == 1:
                log.append(now)
            else:
                log.extend((now,) * cost)  # one entry per unit
            n += cost
            while n > self.limit:
                log.popleft()
                n -= 1
        # Remaining grows when the oldest logged time leaves the window; when rejected the log holds exactly
        # ``limit`` entries, so that is also when a request would be admitted.
        reset = log[0] + self.window - now if n else 0.0
        return Verdict(allowed, self.limit - n, reset, 0.0 if allowed else reset)

    def idle(self, st: State, now: float) -> bool:
        return not st or st[-1] <= now - self.window


class SlidingWindowCounter(Algorithm):
    """The two-counter approximation of a sliding window (Cloudflare, the ``limits`` library).

    Windows are epoch-aligned; with ``elapsed`` seconds into the current one, the estimate is
    ``current + floor(previous * (window - elapsed) / window)`` and a request is admitted iff it is below ``limit``
    (then ``current`` is incremented; with ``counts_rejected``, always). State: [window index, current, previous].
    """

    name = "sliding-window-counter"

    def fresh(self, now: float) -> State:
        return [math.floor(now / self.window), 0.0, 0.0]

    def step(self, st: State, now: float, cost: int = 1) -> Verdict:
        window = self.window
        index = math.floor(now / window)
        if st[0] != index:
            st[2] = st[1] if st[0] == index - 1 else 0.0
            st[1] = 0.0
            st[0] = index
        cur = st[1]
        prev = st[2]
        elapsed = now - index * window
        weighted = math.floor(prev * (window - elapsed) / window + EPS)
        allowed = cur + weighted + cost <= self.limit
        if allowed or self.counts_rejected:
            cur = st[1] = cur + cost
        estimate = cur + weighted
        remaining = max(0, self.limit - int(estimate))
        reset = 0.0 if estimate == 0 else self.until_below(min(estimate, self.limit), cur, prev, weighted, elapsed)
        retry = 0.0 if allowed else self.until_below(self.limit, cur, prev, weighted, elapsed)
        return Verdict(allowed, remaining, reset, retry)

    def until_below(self, target: float, cur: float, prev: float, weighted: float, elapsed: float) -> float:
        """Seconds until the estimate drops below ``target`` if no more requests come."""
        window = self.window
        if cur + weighted < target:
            return 0.0
        if cur < target:  # still in this window, as the previous window's weight fades
            return max(0.0, window * (1 - (target - cur) / prev) - elapsed)
        # Next window: the estimate is floor(cur * (window - t) / window), below target once t > window(1 - target/cur).
        return window - elapsed + window * (1 - target / cur)

    def idle(self, st: State, now: float) -> bool:
        return st[0] < math.floor(now / self.window) - 1


class LeakyBucket(Algorithm):
    """nginx ``limit_req``: ``excess`` leaks at ``limit / window`` requests per second; ``burst`` is nginx's burst.

    A request sets excess = max(0, excess - rate * elapsed) + 1; above burst + 1 it is rejected and the state is
    left alone (with ``counts_rejected`` it is kept, capped at 2 * (burst + 1)). An admitted request with excess
    above 1 waits (excess - 1) / rate seconds before its answer, unless ``nodelay``. State: [excess, last time].
    """

    name = "leaky-bucket"

    def __init__(
        self,
        limit: int,
        window: float,
        burst: int | None = None,
        clock: Clock = time.time,
        *,
        counts_rejected: bool = False,
        nodelay: bool = False,
        max_keys: int = 100_000,
    ) -> None:
        super().__init__(limit, window, burst, clock, counts_rejected=counts_rejected, max_keys=max_keys)
        self.burst = burst or 0
        self.nodelay = nodelay

    def fresh(self, now: float) -> State:
        return [0.0, now]

    def step(self, st: State, now: float, cost: int = 1) -> Verdict:
        rate = self.rate
        burst = self.burst
        excess = max(0.0, st[0] - max(0.0, now - st[1]) * rate) + cost
        delay = 0.0
        if excess > burst + 1 + EPS:
            allowed = False
            if self.counts_rejected:
                excess = min(excess, 2.0 * (burst + 1))
                st[0] = excess
                st[1] = now
            else:
                excess -= cost  # the level now; nginx keeps the stored state as it was
        else:
            allowed = True
            st[0] = excess
            st[1] = now
            if not self.nodelay and excess > 1 + EPS:
                delay = (excess - 1.0) / rate
        remaining = max(0, math.floor(burst + 1 - excess + EPS))
        reset = max(0.0, (excess - (burst - remaining)) / rate)
        return Verdict(allowed, remaining, reset, 0.0 if allowed else (excess - burst) / rate, delay)

    def idle(self, st: State, now: float) -> bool:
        return now - st[1] >= st[0] / self.rate


ALGORITHMS: dict[str, type[Algorithm]] = {
    cls.name: cls for cls in (TokenBucket, FixedWindow, SlidingLog, SlidingWindowCounter, LeakyBucket)
}


def create(settings: Settings, clock: Clock | None = None) -> Algorithm:
    """The algorithm object these settings describe (state empty)."""
    kwargs: dict[str, object] = {"counts_rejected": settings.counts_rejected}
    if clock is not None:
        kwargs["clock"] = clock
    if settings.algorithm == FixedWindow.name:
        kwargs["alignment"] = settings.window_alignment
    elif settings.algorithm == LeakyBucket.name:
        kwargs["nodelay"] = settings.nodelay
    return ALGORITHMS[settings.algorithm](settings.limit, settings.window, settings.burst, **kwargs)  # type: ignore[arg-type]
