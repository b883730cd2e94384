"""Open-model pacing: hands out the slots of the current plan to this process's users, each at its due time.

Locust's wait times are closed-model (a user waits after its own request), so a slow target silently lowers the
load and users spawned together fire in lumps. Here the load is a list of numbered slots with due times from the
schedule; a user takes the next slot, sleeps until it is due and sends it. The rate is therefore exact whatever the
latency (as long as a user is free), spacing is even, and the node of slot ``g`` is ``g % nodes``: a global
round-robin shared by every worker without talking to each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import gevent
from gevent.event import Event

from rlsuite.plan import Plan
from rlsuite.targets import Node


@dataclass(frozen=True)
class Slot:
    number: int
    due: float  # wall-clock time the request was meant to start
    mode: str
    node: Node
    url: str
    rejection_statuses: frozenset[int]


class Pacer:
    def __init__(self, clock: Callable[[], float] = time.time, sleep: Callable[[float], None] = gevent.sleep) -> None:
        self._clock = clock
        self._sleep = sleep
        self.plan: Plan | None = None
        self._next = 0
        self._changed = Event()

    def apply(self, plan: Plan) -> bool:
        """Adopt ``plan`` unless an equal or newer version is already in use. Returns True when adopted."""
        current = self.plan
        if current is not None and plan.version <= current.version:
            return False
        if not _same_share(current, plan):
            # Start at the first slot of our share that is not yet due: slots that are already due belong to the
            # past (a worker joining mid-run does not replay them; a re-split hands them to nobody twice).
            first = plan.schedule.first_slot_at(self._clock() - plan.t0)
            first += (plan.share_index - first) % plan.share_count
            self._next = first
        self.plan = plan
        self._changed.set()
        self._changed = Event()
        return True

    def clear(self) -> None:
        """Forget the plan (the run stopped); users wait for the next one."""
        self.plan = None
        self._changed.set()
        self._changed = Event()

    def wait_for_change(self, timeout: float) -> None:
        self._changed.wait(timeout)

    def next_slot(self) -> Slot | None:
        """The next slot of this process, returned when it is due; None when there is no plan or it has ended."""
        while True:
            plan = self.plan
            if plan is None:
                return None
            number = self._next
            due = plan.schedule.slot(number)
            if due is None:
                return None
            self._next = number + plan.share_count
            elapsed, mode = due
            at = plan.t0 + elapsed
            delay = at - self._clock()
            if delay > 0:
                self._sleep(delay)
            current = self.plan
            if current is not plan and not _same_share(current, plan):
                continue  # the share changed while we slept: this slot may now belong to another process
            nodes = plan.targets.nodes
            node = nodes[number % len(nodes)]
            return Slot(number, at, mode, node, plan.targets.url(node), plan.targets.rejection_statuses)


def _same_share(a: Plan | None, b: Plan | None) -> bool:
    return (
        a is not None
        and b is not None
        and a.run_id == b.run_id
        and (a.share_index, a.share_count) == (b.share_index, b.share_count)
    )
