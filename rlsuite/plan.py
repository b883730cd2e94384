"""What the master tells every load-generating process about a run, and which process sends which slot.

Locust runs the shape only on the master, and forwards custom options to workers only when a run starts, so
workers never compute their own idea of the run: the master sends each of them a complete ``Plan`` (schedule,
targets, the wall-clock start ``t0``) with the slots that process may send, its *grants*.

Slots are leased, never moved: the master's ``Ledger`` grants every slot to exactly one process, a little ahead of
its due time, and never takes a grant back. A process sends a slot only if it holds it, so a plan that arrives late
cannot make two processes send the same slot: the slots it grants are sent late, or dropped and counted when they
are more than ``--max-send-delay`` late. A re-split (a worker joined, quit or went silent) changes only how the
slots not granted yet are split. A worker that quits hands its unsent slots back (``RETURN``) and the master grants
them to the others; a worker that dies keeps its grants, and what it held after its last report is the upper
bound of what it may have sent uncounted.

Plans carry a version from a counter and the master's ``epoch`` (a random token per master process, never a clock),
so a worker keeps the newest plan of the master it talks to, whatever the clocks do, and late, repeated or
reordered messages are harmless.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rlsuite.routes import ALL, Route
from rlsuite.schedule import Schedule
from rlsuite.targets import Node, Targets

MESSAGE = "rlsuite_plan"  # master -> worker: the run and the slots you hold
READY = "rlsuite_ready"  # worker -> master: my handler for plans is registered, send me my share
RETURN = "rlsuite_return"  # worker -> master: I am quitting; here is how far I got: grant the rest to the others
PROGRESS_KEY = "rlsuite_slots"  # in a worker's report: how far its pacer was when the report's counts were drained

# A grant: the slots g in [start, end) with g % count == index. Its key (start, index, count) stays the same when
# the master extends it (the same share, continued), so a worker's progress on it survives every new plan.
Segment = tuple[int, int, int, int]
Key = tuple[int, int, int]
# A process's progress: grant key -> the first slot of that grant not handled yet (every slot of it below was sent or
# dropped, none at or after it). A grant missing from it has none handled.
Progress = dict[Key, int]
UNBOUNDED = 2**62  # the end of a grant that runs to the end of the run (standalone, where nothing is re-split)


def key_of(segment: Segment) -> Key:
    return segment[0], segment[2], segment[3]


def progress_to_message(progress: Progress) -> list[list[int]]:
    return [[*k, n] for k, n in progress.items()]


def progress_from_message(rows: Iterable[Sequence[int]]) -> Progress:
    return {(int(s), int(i), int(c)): int(n) for s, i, c, n in rows}


def first_in(segment: Segment, n: int) -> int | None:
    """The first slot of ``segment`` at or after ``n``; None when there is none."""
    start, end, index, count = segment
    n = max(n, start)
    n += (index - n) % count
    return n if n < end else None


def count_in(segment: Segment, lo: int, hi: int = UNBOUNDED) -> int:
    """How many slots of ``segment`` lie in [lo, hi)."""
    start, end, index, count = segment
    lo, hi = max(lo, start), min(hi, end)
    if hi <= lo:
        return 0
    # slots g < x with g % count == index, g >= 0: ceil((x - index) / count)
    return -((index - hi) // count) - -((index - lo) // count)


def count_all(segments: Iterable[Segment], lo: int, hi: int = UNBOUNDED) -> int:
    return sum(count_in(s, lo, hi) for s in segments)


@dataclass(frozen=True)
class Plan:
    run_id: int  # increases with every new run on the master (a new test in the web UI is a new run)
    version: int  # increases with every plan the master sends, across runs (a counter: clock steps do not matter)
    t0: float  # wall-clock second at which slot 0 is due, on the master's clock
    schedule: Schedule
    targets: Targets
    grants: tuple[Segment, ...] = ()  # the slots this process may send (and has not reported as sent yet)
    max_delay: float = 1.0  # seconds a slot may be late before it is dropped; 0 = never
    window_rule: bool = False  # the declared limit counts in windows: check that remaining never rises in one
    epoch: str = ""  # the master process that made the plan: versions are compared only within one
    routes: tuple[Route, ...] = ALL  # each declared policy's match and cost, in match order

    @property
    def end(self) -> float | None:
        """Wall-clock time after which no slot is due."""
        return None if self.schedule.run_time is None else self.t0 + self.schedule.run_time

    def with_grants(self, grants: Sequence[Segment], version: int) -> Plan:
        return dataclasses.replace(self, grants=tuple(grants), version=version)

    def to_message(self, sent_at: float, full: bool = True) -> dict[str, Any]:
        """The plan as a message; not ``full``: only what changes within a run (the grants), for a worker that has
        the run's plan already (grants go out about five times a second; the targets can hold thousands of API keys)."""
        head = {
            "run_id": self.run_id,
            "version": self.version,
            "epoch": self.epoch,
            "t0": self.t0,
            "sent_at": sent_at,
            "grants": [list(g) for g in self.grants],
        }
        if not full:
            return head
        s, t = self.schedule, self.targets
        return {
            **head,
            "schedule": [s.steady_rps, s.burst_multiplier, s.burst_every, s.burst_duration, s.run_time],
            "nodes": [[n.url, n.name] for n in t.nodes],
            "path": t.path,
            "rejection_statuses": sorted(t.rejection_statuses),
            "timeout": t.timeout,
            "api_keys": list(t.api_keys),
            "api_key_header": t.api_key_header,
            "window_rule": self.window_rule,
            "max_delay": self.max_delay,
            "routes": [r.to_message() for r in self.routes],
        }

    @classmethod
    def from_message(cls, data: dict[str, Any], clock_offset: float = 0.0, current: Plan | None = None) -> Plan | None:
        """Rebuild a plan; ``clock_offset`` (local minus master clock) moves t0 onto the local clock. A message with
        only the grants updates ``current`` (None when that is not the plan of the same run: the next full message
        brings it)."""
        if "schedule" not in data:
            if current is None or (current.epoch, current.run_id) != (data["epoch"], data["run_id"]):
                return None
            grants = tuple((int(s), int(e), int(i), int(c)) for s, e, i, c in data["grants"])
            return dataclasses.replace(current, version=data["version"], grants=grants)
        targets = Targets(
            nodes=tuple(Node(url, name) for url, name in data["nodes"]),
            path=data["path"],
            rejection_statuses=frozenset(data["rejection_statuses"]),
            timeout=data["timeout"],
            api_keys=tuple(data["api_keys"]),
            api_key_header=data["api_key_header"],
        )
        return cls(
            run_id=data["run_id"],
            version=data["version"],
            t0=data["t0"] + clock_offset,
            schedule=Schedule(*data["schedule"]),
            targets=targets,
            grants=tuple((int(s), int(e), int(i), int(c)) for s, e, i, c in data["grants"]),
            window_rule=data["window_rule"],
            max_delay=data["max_delay"],
            epoch=data["epoch"],
            # a master of a version before policy files sends none: its one policy matches every request
            routes=tuple(Route.from_message(r) for r in data.get("routes", ())) or ALL,
        )


class Ledger:
    """The master's record of which process holds which slot of one run.

    Every slot below ``frontier`` is granted to exactly one process and stays granted: ``extend`` grants the next
    slots (split over the processes given, slot g to the (g mod n)-th), ``hand_back`` takes back the unsent slots
    of a process that quits and grants them to the others. Slots handed back when nobody is left to take them wait
    in ``spare`` for the next ``extend``. Pure: no clock, no messages (the conductor decides when and to whom).
    """

    def __init__(self, end: int | None = None) -> None:
        self.end = UNBOUNDED if end is None else end  # number of slots in the run
        self.frontier = 0
        self.held: dict[str, list[Segment]] = {}
        self.spare: list[Segment] = []
        self.returned: set[str] = set()  # processes that handed their slots back: never granted any again

    def extend(self, workers: Sequence[str], to: int) -> set[str]:
        """Grant the slots [frontier, to) to ``workers`` (and any spare slots); returns whose grants changed."""
        workers = sorted(w for w in workers if w not in self.returned)
        if not workers:
            return set()
        changed = self._give_spare(workers)
        to = min(to, self.end)
        if to > self.frontier:
            n = len(workers)
            for i, worker in enumerate(workers):
                self._grant(worker, (self.frontier, to, i, n))
            self.frontier = to
            changed.update(workers)
        return changed

    def hand_back(self, worker: str, done: Progress, others: Sequence[str]) -> set[str]:
        """``worker`` quits, having handled its grants up to ``done``: the rest of them go to ``others`` (or wait in
        ``spare``). Returns whose grants changed."""
        self.returned.add(worker)
        kept: list[Segment] = []
        for start, end, index, count in self.held.get(worker, []):
            n = max(start, done.get((start, index, count), start))
            if n > start:
                kept.append((start, min(end, n), index, count))
            if end > n:
                self.spare.append((n, end, index, count))
        self.held[worker] = [s for s in kept if count_in(s, s[0]) > 0]
        others = sorted(w for w in others if w not in self.returned)
        return self._give_spare(others) if others else set()

    def grants(self, worker: str) -> tuple[Segment, ...]:
        return tuple(self.held.get(worker, ()))

    def unsent(self, worker: str, done: Progress | None = None) -> int:
        """How many of its slots ``worker`` had not handled by ``done`` (it may have since: only it knows)."""
        done = done or {}
        return sum(count_in(s, done.get(key_of(s), s[0])) for s in self.held.get(worker, ()))

    def forget_handled(self, worker: str, done: Progress) -> None:
        """Drop ``worker``'s grants it has handled every slot of (and reported): the ledger and plans stay small."""
        held = self.held.get(worker)
        if held:
            self.held[worker] = [s for s in held if count_in(s, done.get(key_of(s), s[0])) > 0]

    def _give_spare(self, workers: list[str]) -> set[str]:
        if not self.spare or not workers:
            return set()
        n = len(workers)
        for start, end, index, count in self.spare:
            for j, worker in enumerate(workers):
                self._grant(worker, (start, end, index + count * j, count * n))
        self.spare = []
        return set(workers)

    def _grant(self, worker: str, segment: Segment) -> None:
        if count_in(segment, segment[0]) == 0:
            return
        held = self.held.setdefault(worker, [])
        if held:
            start, end, index, count = held[-1]
            if end == segment[0] and (index, count) == segment[2:]:
                held[-1] = (start, segment[1], index, count)  # the same share, continued: one grant
                return
        held.append(segment)
