"""What a case sends: timed requests (shots) and clients that honour Retry-After, in phases; and what came back.

A *phase* is a bounded, deterministic list of shots, each due at an offset from the phase's start ``t0`` (which the
runner puts on a multiple of the window, so fixed-window edges fall at known offsets), to a node (by index) with an
API key (by index; -1 = no key header), plus a tag the case uses to tell its parts apart (a burst, a volley, the
noisy key). Several shots may be due at the same instant (a volley): idle users take them one after another, so
they leave within a few milliseconds. Before a phase starts the runner lets the limiter settle: long enough for
the declared model to forget everything earlier traffic did.

A *record* is one request as it went: its shot's tag, due and actual start (seconds on the master's clock), time in
flight, status, outcome code (as the replay's: admitted, limited, unknown, unsent), node, key, and the rate-limit
fields of its answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rlsuite.replay import ADMITTED, LIMITED

# The answer fields a case may read, in this order in a record's ``fields``.
FIELDS = (
    "Retry-After",
    "RateLimit",
    "RateLimit-Policy",
    "RateLimit-Limit",
    "RateLimit-Remaining",
    "RateLimit-Reset",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Date",
)
RETRY_AFTER, RATELIMIT, RATELIMIT_POLICY, DATE = 0, 1, 2, 9
NO_KEY = -1
# Requests in one volley at most: each needs a user of its own at the same instant, and idle users release them a
# few milliseconds per hundred apart on one core.
MAX_VOLLEY = 2000


@dataclass(frozen=True)
class Shot:
    due: float  # seconds after the phase's t0
    node: int
    key: int  # API key index, NO_KEY for none
    tag: int = 0


@dataclass(frozen=True)
class Clients:
    """``count`` clients, each sending every ``interval`` seconds from ``start`` to ``end`` (after t0), and after a
    rejection waiting what its Retry-After says (``fallback`` seconds when it says nothing) before the next
    request: what a well-behaved API client does."""

    count: int
    start: float
    end: float
    interval: float
    key: int
    fallback: float
    tag: int = 0
    nodes: int = 1  # client j sends to node j % nodes

    @property
    def most(self) -> int:
        """Requests all these clients send at most (each sends on time at best)."""
        return self.count * (math.floor((self.end - self.start) / self.interval) + 1)


@dataclass
class Phase:
    """One burst of traffic of a case, with the settling time before it."""

    name: str
    shots: list[Shot] = field(default_factory=list)
    clients: list[Clients] = field(default_factory=list)
    late_ok: float = 0.02  # seconds a shot may start after its due time before it counts as late
    lead: float = 0.0  # extra seconds before t0 (on top of the runner's), e.g. to start mid-window

    @property
    def length(self) -> float:
        """Seconds from t0 to the last due shot or the end of the clients."""
        ends = [s.due for s in self.shots] + [c.end for c in self.clients]
        return max(ends, default=0.0)

    @property
    def concurrency(self) -> int:
        """Users this phase needs at once: its largest volley (shots due together), or its clients."""
        most, run, last = 1, 0, None
        for shot in sorted(self.shots, key=lambda s: s.due):
            run = run + 1 if shot.due == last else 1
            last = shot.due
            most = max(most, run)
        return max(most, sum(c.count for c in self.clients))

    @property
    def size(self) -> int:
        return len(self.shots) + sum(c.most for c in self.clients)


def paced(
    start: float, seconds: float, rate: float, nodes: int, key: int, tag: int = 0, node: int | None = None
) -> list[Shot]:
    """Evenly spaced shots at ``rate`` per second for ``seconds``, round-robin over the nodes (or all to ``node``)."""
    n = max(1, round(seconds * rate))
    return [Shot(start + i / rate, (i % nodes) if node is None else node, key, tag) for i in range(n)]


def burst(start: float, count: int, seconds: float, nodes: int, key: int, tag: int = 0) -> list[Shot]:
    """``count`` shots evenly spread over ``seconds``."""
    return [Shot(start + i * seconds / count, i % nodes, key, tag) for i in range(count)]


def volley(at: float, count: int, nodes: int, key: int, tag: int = 0) -> list[Shot]:
    """``count`` shots due at the same instant, spread over every node."""
    return [Shot(at, i % nodes, key, tag) for i in range(count)]


@dataclass
class Record:
    tag: int
    due: float  # when it was meant to start (master clock, seconds since the epoch); clients: their own schedule
    start: float
    duration: float
    status: int  # 0: no answer
    code: int  # replay outcome code
    node: int
    key: int  # NO_KEY when none was sent
    fields: tuple[str | None, ...] = ()

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def admitted(self) -> bool:
        return self.code == ADMITTED

    @property
    def limited(self) -> bool:
        return self.code == LIMITED

    def field(self, index: int) -> str | None:
        return self.fields[index] if index < len(self.fields) else None

    def to_wire(self) -> list:
        return [self.tag, self.due, self.start, self.duration, self.status, self.code, self.node, self.key, self.fields]

    @classmethod
    def from_wire(cls, row: list) -> Record:
        tag, due, start, duration, status, code, node, key, fields = row
        return cls(tag, due, start, duration, status, code, node, key, tuple(fields))


@dataclass
class Outcome:
    """What one phase produced: its records, and what the generator could not do."""

    phase: Phase
    t0: float
    records: list[Record] = field(default_factory=list)
    dropped: int = 0  # shots never sent: no user was free in time
    missing: int = 0  # shots whose record never came back (a worker was lost)
    lost: list[str] = field(default_factory=list)  # workers that did not report

    def late(self) -> int:
        return sum(1 for r in self.records if r.start - r.due > self.phase.late_ok)
