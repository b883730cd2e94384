"""Models of rate-limiting algorithms, for replaying what a cluster decided.

Every request's decision happened at some unknown moment between its start and its end (widened by the clock-skew
allowance). A model is fed the requests of one partition in order of their earliest possible decision time ``t``
and answers two questions that hold whatever the real moments were:

- **lenient** (over-admission): could the model have admitted this request under the most lenient placement of
  every decision? ``admit(t)`` returns False only when no placement allows it. Each model is loosened by the
  uncertainty ``spread`` (the longest decision interval it is fed): a set of admissions whose earliest times lie
  within ``x`` seconds was decided within ``x + spread``. Admissions the model refuses are not charged to it
  (a token bucket or a window admits greedily, which keeps the most), so the count of refused ones is the least
  number of admissions that must go for the history to fit the model.
- **strict** (under-admission): would the model have admitted a rejected request even under the strictest
  placement? ``room(t)`` is a lower bound of the room left at ``t`` before counting the requests that started
  within ``spread`` after ``t`` (the replay subtracts those); a rejection is wrong when at least one unit is left.
  The state before the partition's first request is unknown, so the strict side starts empty (a bucket) or
  refuses to judge until a whole window of history is known (the window algorithms); ``None`` = cannot tell.

``count(t)`` feeds the strict side every request that may have counted toward the limit (admitted ones, errors
whose fate is unknown, and rejected ones for a limiter that counts rejections).

A request may spend ``cost`` units of the limit (a weighted request: a batch, an expensive route): ``admit(t, cost)``
needs that many units of room, ``count(t, cost)`` takes that many, and a rejection is wrong only when ``room``
holds the request's whole cost. Costs are whole units, as limiters charge them.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

EPS = 1e-9

TOKEN_BUCKET = "token-bucket"
LEAKY_BUCKET = "leaky-bucket"
FIXED_WINDOW = "fixed-window"
SLIDING_LOG = "sliding-log"
SLIDING_WINDOW_COUNTER = "sliding-window-counter"
AUTO = "auto"
ALGORITHMS = (TOKEN_BUCKET, LEAKY_BUCKET, FIXED_WINDOW, SLIDING_LOG, SLIDING_WINDOW_COUNTER)
ALIASES = {"sliding-window": SLIDING_LOG, "gcra": TOKEN_BUCKET}

EPOCH, FIRST_REQUEST, ANY = "epoch", "first-request", "any"
ALIGNMENTS = (EPOCH, FIRST_REQUEST, ANY)


@dataclass(frozen=True)
class Spec:
    """One model with its parameters: what the cluster is declared (or fitted) to enforce per partition."""

    algorithm: str
    limit: int  # requests per window
    window: float  # seconds
    burst: int = 0  # token bucket: capacity (0 = limit); leaky bucket: nginx's burst (queue size)
    alignment: str = ANY  # fixed window: where windows start
    counts_rejected: bool = False  # rejected requests count toward the limit too
    delay: bool = False  # leaky bucket: excess requests are delayed, not rejected (nginx without nodelay)

    @property
    def rate(self) -> float:
        """Requests per second allowed in the long run."""
        return self.limit / self.window

    @property
    def capacity(self) -> float:
        """Requests a bucket admits back to back after idling."""
        if self.algorithm == LEAKY_BUCKET:
            return self.burst + 1  # nginx: excess <= burst, so burst + 1 pass at once
        return float(self.burst or self.limit)

    def describe(self) -> str:
        w = f"{self.window:g}s"
        if self.algorithm == TOKEN_BUCKET:
            text = f"token bucket, {self.limit} per {w}, capacity {self.capacity:g}"
        elif self.algorithm == LEAKY_BUCKET:
            how = "delay" if self.delay else "nodelay"
            text = f"leaky bucket, {self.limit} per {w}, burst {self.burst} ({how})"
        elif self.algorithm == FIXED_WINDOW:
            text = f"fixed window, {self.limit} per {w}, windows aligned: {self.alignment}"
        elif self.algorithm == SLIDING_LOG:
            text = f"sliding log, {self.limit} in any {w}"
        else:
            text = f"sliding-window counter, {self.limit} per {w}"
        return text + (", rejected requests counted" if self.counts_rejected else "")

    def max_admitted(self, span: float, spread: float) -> float:
        """The most admissions the lenient side accepts from requests starting within ``span`` seconds: what a
        cluster must exceed to be caught."""
        a, r, w = self.algorithm, self.rate, self.window
        if a in (TOKEN_BUCKET, LEAKY_BUCKET):
            return self.capacity + r * (span + spread)
        if a == SLIDING_LOG:
            return self.limit * (math.floor((span + spread) / w) + 1)
        if a == SLIDING_WINDOW_COUNTER:
            return self.limit + 2 + r * (span + spread)
        if self.alignment == EPOCH:
            # requests whose decision may fall in either of two windows are not judged
            inside = max(0.0, 1 - 2 * spread / w)
            return self.limit * (math.ceil(span / w) + 1) / inside if inside > 0 else math.inf
        return 2 * self.limit + r * (span + spread)

    def build(self, spread: float) -> Model:
        a = self.algorithm
        if a in (TOKEN_BUCKET, LEAKY_BUCKET):
            return Bucket(self, spread, self.capacity, self.rate)
        if a == FIXED_WINDOW and self.alignment == EPOCH:
            return EpochWindow(self, spread)
        if a == SLIDING_LOG:
            return SlidingLog(self, spread)
        # A fixed window that starts at a key's first request (or anywhere) holds at most `limit`, and any span of
        # x seconds meets at most ceil(x / window) + 1 windows: a bucket of 2 x limit at the limit's rate. A
        # sliding-window counter admits at most limit + 2 + rate x span in any span (floor rounding included).
        capacity = 2 * self.limit if a == FIXED_WINDOW else self.limit + 2
        lookback = self.window if a == FIXED_WINDOW else 2 * self.window
        return WindowBound(self, spread, capacity, lookback)


class Model:
    """Lenient and strict state of one partition under one spec."""

    __slots__ = ("first", "spec", "spread")

    def __init__(self, spec: Spec, spread: float) -> None:
        self.spec = spec
        self.spread = spread
        self.first: float | None = None  # earliest time of the partition's first request

    def admit(self, t: float, cost: int = 1) -> bool:
        raise NotImplementedError

    def count(self, t: float, cost: int = 1) -> None:
        raise NotImplementedError

    def room(self, t: float) -> float | None:
        raise NotImplementedError

    def _start(self, t: float) -> None:
        if self.first is None:
            self.first = t


class Bucket(Model):
    """Token bucket (and GCRA, and nginx's leaky bucket with nodelay): ``capacity`` tokens, ``rate`` per second.

    Lenient: a bucket ``rate x spread`` larger, full at the start. Strict: an empty bucket at the first request
    (what came before is unknown), and ``rate x spread`` smaller: a decision placed up to ``spread`` later than its
    earliest time holds that much less refill.
    """

    __slots__ = ("capacity", "lenient_at", "lenient_level", "rate", "strict_at", "strict_level")

    def __init__(self, spec: Spec, spread: float, capacity: float, rate: float) -> None:
        super().__init__(spec, spread)
        self.capacity = capacity
        self.rate = rate
        self.lenient_level = capacity + rate * spread
        self.lenient_at: float | None = None
        self.strict_level = 0.0
        self.strict_at: float | None = None

    def admit(self, t: float, cost: int = 1) -> bool:
        self._start(t)
        top = self.capacity + self.rate * self.spread
        level = top if self.lenient_at is None else min(top, self.lenient_level + self.rate * (t - self.lenient_at))
        self.lenient_at = t
        if level >= cost - EPS:
            self.lenient_level = level - cost
            return True
        self.lenient_level = level
        return False

    def _strict(self, t: float) -> float:
        if self.strict_at is None:
            self.strict_at = t
            return 0.0
        return min(self.capacity, self.strict_level + self.rate * max(0.0, t - self.strict_at))

    def count(self, t: float, cost: int = 1) -> None:
        self._start(t)
        self.strict_level = self._strict(t) - cost
        self.strict_at = t

    def room(self, t: float) -> float | None:
        self._start(t)
        return self._strict(t) - self.rate * self.spread


class EpochWindow(Model):
    """Fixed windows aligned to the Unix epoch (on the limiter's clock): at most ``limit`` per window.

    Only requests whose whole decision interval lies in one window are judged; the strict side counts every
    request that may have fallen in the window, and judges only windows that began after the partition's first
    request (earlier ones may hold counts from before the run).
    """

    __slots__ = ("admitted", "counts", "index")

    def __init__(self, spec: Spec, spread: float) -> None:
        super().__init__(spec, spread)
        self.index = -(2**62)  # window of the lenient count
        self.admitted = 0
        self.counts: deque[float] = deque()  # times of counted requests that may fall in the current window

    def _window(self, t: float) -> int | None:
        w = self.spec.window
        j = math.floor(t / w)
        return j if math.floor((t + self.spread) / w) == j else None

    def admit(self, t: float, cost: int = 1) -> bool:
        self._start(t)
        j = self._window(t)
        if j is None:
            return True  # may belong to either window: not judged
        if j != self.index:
            self.index, self.admitted = j, 0
        if self.admitted + cost <= self.spec.limit:
            self.admitted += cost
            return True
        return False

    def count(self, t: float, cost: int = 1) -> None:
        _count_recent(self, self.counts, t, self.spec.window, cost)

    def room(self, t: float) -> float | None:
        self._start(t)
        j = self._window(t)
        w = self.spec.window
        if j is None or self.first is None or j * w - self.spread < self.first:
            return None
        return self.spec.limit - _keep_since(self.counts, j * w - self.spread)


class SlidingLog(Model):
    """At most ``limit`` admissions in any ``window``: lenient over ``window - spread``, strict over
    ``window + spread`` (and only once a whole window of the partition's history is known)."""

    __slots__ = ("counts", "log")

    def __init__(self, spec: Spec, spread: float) -> None:
        super().__init__(spec, spread)
        self.log: deque[float] = deque()  # lenient: admissions accepted in the last window - spread
        self.counts: deque[float] = deque()  # strict: counted requests in the last window + spread

    def admit(self, t: float, cost: int = 1) -> bool:
        self._start(t)
        log = self.log
        horizon = t - (self.spec.window - self.spread)
        while log and log[0] <= horizon:
            log.popleft()
        if len(log) + cost <= self.spec.limit:
            log.extend((t,) * cost)  # one entry per unit: the window's sum is the log's length
            return True
        return False

    def count(self, t: float, cost: int = 1) -> None:
        _count_recent(self, self.counts, t, self.spec.window, cost)

    def room(self, t: float) -> float | None:
        return _room_recent(self, self.counts, t, self.spec.window)


class WindowBound(Bucket):
    """Window algorithms without a fixed lattice (fixed windows from a key's first request or of unknown
    alignment; sliding-window counters): lenient as a bucket that bounds what they can admit in any span, strict
    as "fewer than ``limit`` counted in the ``lookback`` before the decision" (their windows reach no further)."""

    __slots__ = ("counts", "lookback")

    def __init__(self, spec: Spec, spread: float, capacity: float, lookback: float) -> None:
        super().__init__(spec, spread, capacity, spec.rate)
        self.lookback = lookback
        self.counts: deque[float] = deque()

    def count(self, t: float, cost: int = 1) -> None:
        _count_recent(self, self.counts, t, self.lookback, cost)

    def room(self, t: float) -> float | None:
        return _room_recent(self, self.counts, t, self.lookback)


def _count_recent(model: Model, times: deque[float], t: float, lookback: float, cost: int = 1) -> None:
    """Strict side of the window algorithms: keep the counted units of the last ``lookback`` + spread."""
    model._start(t)
    _keep_since(times, t - lookback - model.spread)
    if cost == 1:
        times.append(t)
    else:
        times.extend((t,) * cost)


def _room_recent(model: Model, times: deque[float], t: float, lookback: float) -> float | None:
    """``limit`` less the requests counted in the ``lookback`` (+ spread) before ``t``; None while that span reaches
    back before the partition's first request (what came before is unknown)."""
    model._start(t)
    since = t - lookback - model.spread
    if model.first is None or since < model.first:
        return None
    return model.spec.limit - _keep_since(times, since)


def _keep_since(times: deque[float], since: float) -> int:
    """Drop the times before ``since`` (they are sorted); the number left."""
    while times and times[0] < since:
        times.popleft()
    return len(times)
