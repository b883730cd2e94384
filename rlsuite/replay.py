"""Replays every request, as the cluster decided it, through models of rate-limiting algorithms.

Each request becomes an event ``(start, duration, code, node, key)``: its start on the generator's clock, how long it
was in flight, what came back (``code``: admitted, limited, an error whose fate is unknown, or one that never reached
the limiter; plus the burst flag, the index of the declared policy it falls under and the units of the limit it
spends, see ``event_code``), the node index and the API-key index. The limiter decided it at some moment in
``[start - skew, start + duration + skew]``.

Events reach the replay out of order (they are recorded when they complete, and workers report in batches), so it
keeps them in a buffer and replays, in order of start time, only those that started before a horizon no request
still in flight (or still unreported) can precede. Each partition (API key; and node for a per-node limit) keeps
only what its model needs, so memory does not grow with the length of the run.

One ``Judge`` replays one model (the declared one, a variant that would explain what it saw, or every algorithm for
``--limit-algorithm auto``) and counts, per traffic mode, the admissions no timing could reconcile with the model
(over-admission) and the rejections the model would have admitted under any timing (under-admission), with the
first of each as evidence.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field, replace
from typing import Any

from rlsuite import reference
from rlsuite.models import LEAKY_BUCKET, Model, Spec
from rlsuite.schedule import BURST, MODES, STEADY

# Event codes: the outcome, plus BURST_FLAG for requests of a burst stage, the policy's index and the cost less one
# in the bits above (so a plain outcome is a cost-1 request of the first policy: one int per event, whatever it says).
ADMITTED, LIMITED, UNKNOWN, UNSENT = 0, 1, 2, 3  # UNKNOWN: an error that may have counted; UNSENT: never reached it
BURST_FLAG = 4
POLICY_SHIFT = 3
MAX_POLICIES = 255  # policy indexes 0..254; the index one past the declared policies marks requests none matched
COST_SHIFT = 11
MAX_COST = 1_000_000
EVENT_WIDTH = 5  # fields per event in a flat list: start, duration, code, node, key


def event_code(outcome: int, burst: bool = False, policy: int = 0, cost: int = 1) -> int:
    return outcome | (BURST_FLAG if burst else 0) | (policy << POLICY_SHIFT) | ((cost - 1) << COST_SHIFT)


def policy_bits(policy: int) -> int:
    """The bits of ``event_code`` for a policy index (precomputed per policy: the hot path only ORs them in)."""
    return policy << POLICY_SHIFT


def cost_bits(cost: int) -> int:
    return (cost - 1) << COST_SHIFT


def policy_of(code: int) -> int:
    return (code >> POLICY_SHIFT) & 0xFF


def cost_of(code: int) -> int:
    return (code >> COST_SHIFT) + 1


GLOBAL, PER_NODE = "global", "per-node"


def latency_cap(window: float) -> float:
    """Longest time in flight for a request to be judged exactly: beyond it, a decision could lie anywhere in too
    long a span to prove anything, so the request counts (strict side) but is not judged itself."""
    return max(0.02, 0.02 * window)


@dataclass
class Evidence:
    """The first disagreement of one kind: when (seconds into the run), where, and what the model allowed."""

    at: float
    node: int
    key: int
    detail: str


@dataclass
class Tally:
    """Disagreements of one judge, per mode."""

    over: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODES, 0))  # admissions beyond the model
    under: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MODES, 0))  # rejections it would admit
    first_over: Evidence | None = None
    first_under: Evidence | None = None

    @property
    def disagreements(self) -> int:
        return sum(self.over.values()) + sum(self.under.values())


class Partition:
    __slots__ = ("counted", "late", "model", "pending")

    def __init__(self, model: Model) -> None:
        self.model = model
        self.counted = 0  # requests fed to the strict side so far
        # Counted requests in flight longer than the cap, by their latest decision time: the strict side counts
        # them there (the latest is the strictest: a bucket refilled meanwhile loses nothing) and as already
        # counted until then.
        self.late: list[float] | None = None  # (lists made when first needed: a partition is usually idle)
        # rejections awaiting the requests that started within `spread` after them: [due, room, counted, ev]
        self.pending: list[tuple[float, float, int, tuple]] | None = None


class Judge:
    """Replays the events of every partition through one model."""

    def __init__(self, spec: Spec, scope: str, skew: float, t0: float, role: str = "declared") -> None:
        self.spec = spec
        self.scope = scope
        self.role = role  # declared, or why it is replayed beside it (a variant that may explain what was seen)
        self.skew = skew
        self.cap = latency_cap(spec.window)
        self.spread = self.cap + 2 * skew  # the longest decision interval a judged request can have
        self.t0 = t0
        self.partitions: dict[Any, Partition] = {}
        self.tally = Tally()
        self.unjudged = 0  # admissions in flight longer than the cap: counted, not judged
        # A limiter that delays (nginx without nodelay) decides on arrival; the rest of the time is its queue.
        self._decides_on_arrival = spec.algorithm == LEAKY_BUCKET and spec.delay

    def feed(self, start: float, duration: float, code: int, node: int, key: int) -> None:
        part = key if self.scope == GLOBAL else (node, key)
        p = self.partitions.get(part)
        if p is None:
            p = self.partitions[part] = Partition(self.spec.build(self.spread))
        t = start - self.skew  # the earliest moment the limiter may have decided
        if p.pending:
            self._resolve(p, t)
        late = p.late
        while late and late[0] <= t:
            p.model.count(heapq.heappop(late))
        outcome = code & 3
        if outcome == UNSENT:
            return
        cost = (code >> COST_SHIFT) + 1
        long = duration > self.cap and not self._decides_on_arrival
        if outcome == ADMITTED:
            if long:
                self.unjudged += 1
            elif not p.model.admit(t, cost):
                self._disagree(True, code, t, node, key)
        elif outcome == LIMITED and not long:
            room = p.model.room(t)
            if room is not None:
                if p.pending is None:
                    p.pending = []
                room -= len(late) if late else 0
                p.pending.append((t + self.spread, room, p.counted, (code, t, node, key)))
        if outcome != LIMITED or self.spec.counts_rejected:
            if long:
                if p.late is None:
                    p.late = []
                for _ in range(cost):  # one entry per unit: len(late) is the units counted there
                    heapq.heappush(p.late, t + duration + 2 * self.skew)
            else:
                p.model.count(t, cost)
            p.counted += cost

    def flush(self) -> None:
        for p in self.partitions.values():
            if p.pending:
                self._resolve(p, math.inf)

    def _resolve(self, p: Partition, now: float) -> None:
        """Judge the rejections whose look-ahead (requests that may have been decided before them) is complete:
        those due before ``now``, the earliest time of the next request (pending ones are in order of due)."""
        pending = p.pending
        done = 0
        for due, room, counted, ev in pending:
            if due >= now:
                break
            done += 1
            left = room - (p.counted - counted)
            code = ev[0]
            if left >= (code >> COST_SHIFT) + 1 - 1e-9:  # room for the rejected request's whole cost
                _, t, node, key = ev
                self._disagree(False, code, t, node, key, left)
        if done:
            del pending[:done]

    def _disagree(self, over: bool, code: int, t: float, node: int, key: int, left: float = 0.0) -> None:
        mode = BURST if code & BURST_FLAG else STEADY
        tally = self.tally
        if over:
            tally.over[mode] += 1
            if tally.first_over is None:
                tally.first_over = Evidence(t - self.t0, node, key, "no timing of the decisions leaves room for it")
        else:
            tally.under[mode] += 1
            if tally.first_under is None:
                cost = (code >> COST_SHIFT) + 1
                units = "" if cost == 1 else f" units (it needed {cost})"
                tally.first_under = Evidence(
                    t - self.t0,
                    node,
                    key,
                    f"even at the strictest timing {math.floor(left + 1e-9)} more{units} would fit",
                )


class Shadow(Judge):
    """A cluster that admits twice the limit, replayed on this run's own requests through the lenient side: if the
    replay does not catch it, the run could not tell the declared limit from twice it.

    For a global limit it is two nodes that each enforce the limit alone (the run's nodes folded onto two); for a
    per-node limit, each node enforcing twice the limit. Each decides at its request's start."""

    def __init__(self, spec: Spec, scope: str, skew: float, t0: float) -> None:
        super().__init__(spec, scope, skew, t0, role="shadow")
        self._cluster_spec = spec if scope == GLOBAL else doubled(spec)
        self._limiters: dict[Any, reference.Limiter] = {}

    def feed(self, start: float, duration: float, code: int, node: int, key: int) -> None:
        outcome = code & 3
        if outcome not in (ADMITTED, LIMITED):
            return
        where = (node % 2 if self.scope == GLOBAL else node, key)
        limiter = self._limiters.get(where)
        if limiter is None:
            limiter = self._limiters[where] = reference.build(self._cluster_spec)
        decided = ADMITTED if limiter.hit(start, (code >> COST_SHIFT) + 1) else LIMITED
        super().feed(start, duration, decided | (code & ~3), node, key)


def doubled(spec: Spec) -> Spec:
    """The same algorithm admitting twice as much: twice the limit and twice the capacity."""
    burst = 2 * spec.burst + 1 if spec.algorithm == LEAKY_BUCKET else 2 * spec.burst
    return replace(spec, limit=2 * spec.limit, burst=burst)


class Replay:
    """Buffers events and feeds them, in order of start time, to every judge."""

    def __init__(self, judges: list[tuple[Spec, str, str]], skew: float, t0: float) -> None:
        """``judges``: (spec, scope, role) of every model to replay; the first is the declared one; a role of
        ``shadow`` replays a cluster admitting twice that spec instead (``Shadow``)."""
        self.skew = skew
        self.judges = [
            Shadow(spec, scope, skew, t0) if role == "shadow" else Judge(spec, scope, skew, t0, role)
            for spec, scope, role in judges
        ]
        self._buffer: list[tuple] = []
        self.replayed_until = -math.inf
        self.replayed = 0
        self.stragglers = 0  # events that arrived after their time was replayed: left out

    @property
    def declared(self) -> Judge:
        return self.judges[0]

    def add(self, flat: list) -> None:
        """Events as a flat list (``EVENT_WIDTH`` fields each), as workers send them."""
        buffer = self._buffer
        for i in range(0, len(flat), EVENT_WIDTH):
            ev = tuple(flat[i : i + EVENT_WIDTH])
            if ev[0] < self.replayed_until:
                self.stragglers += 1
            else:
                buffer.append(ev)

    def advance(self, until: float) -> None:
        """Replay every buffered event that started before ``until`` (nothing earlier can arrive any more)."""
        if until <= self.replayed_until:
            return
        buffer = self._buffer
        buffer.sort()
        n = 0
        for ev in buffer:
            if ev[0] >= until:
                break
            n += 1
            for judge in self.judges:
                judge.feed(*ev)
        del buffer[:n]
        self.replayed += n
        self.replayed_until = until

    def finish(self) -> None:
        self.advance(math.inf)
        for judge in self.judges:
            judge.flush()


class Replays:
    """One ``Replay`` per declared policy: each event goes to the replay of the policy its code names; requests that
    matched no policy (the index past the last) are counted elsewhere and judged by none. ``every_request``: one
    policy that matches every request (the single-policy flags), whose events all go to it as they come."""

    def __init__(self, replays: list[Replay], every_request: bool = False) -> None:
        self.replays = replays
        self._every_request = every_request and len(replays) == 1

    def add(self, flat: list) -> None:
        replays = self.replays
        if self._every_request:
            replays[0].add(flat)  # the common case: no event to look at, no copy
            return
        split: list[list] = [[] for _ in replays]
        for i in range(0, len(flat), EVENT_WIDTH):
            index = (flat[i + 2] >> POLICY_SHIFT) & 0xFF
            if index < len(split):
                split[index] += flat[i : i + EVENT_WIDTH]
        for replay, events in zip(replays, split, strict=True):
            if events:
                replay.add(events)

    def advance(self, until: float) -> None:
        for replay in self.replays:
            replay.advance(until)

    def finish(self) -> None:
        for replay in self.replays:
            replay.finish()
