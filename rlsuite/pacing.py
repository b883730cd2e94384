"""Open-model pacing: hands out the slots of the current plan to this process's users, each at its due time.

Locust's wait times are closed-model (a user waits after its own request), so a slow target silently lowers the
load and users spawned together fire in lumps. Here the load is a list of numbered slots with due times from the
schedule; the next free user waits until the next slot is due, takes it and sends it. The rate is therefore exact
whatever the latency (as long as a user is free), spacing is even, and the node of slot ``g`` is ``g % nodes``: a
global round-robin shared by every worker without talking to each other.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gevent.event import Event
from gevent.lock import Semaphore

from rlsuite import options
from rlsuite.plan import Plan
from rlsuite.targets import Node


def add_arguments(parser: Any) -> None:
    options.add(
        parser.add_argument_group("Steady and burst traffic"),
        "max-send-delay",
        type=float,
        default=1.0,
        help="A request that could not start within this many seconds of its due time (all users busy) is "
        "dropped and counted, not sent late; 0 = never drop.",
    )


def check_options(opts: Any) -> float:
    return options.number(opts, "max-send-delay", minimum=0)


class Slot:
    """One request to send: a plain class with slots, because one is made per request (a frozen dataclass costs
    four times as much to build)."""

    __slots__ = ("due", "headers", "key", "mode", "node", "node_index", "number", "url")

    def __init__(
        self,
        number: int,
        due: float,
        mode: str,
        node: Node,
        url: str,
        key: int,
        headers: dict[str, str] | None,
        node_index: int = 0,
    ) -> None:
        self.number = number
        self.due = due  # wall-clock time the request was meant to start
        self.mode = mode
        self.node = node
        self.node_index = node_index  # position of the node in --node-hosts
        self.url = url
        self.key = key  # index of the API key (limit partition) this slot uses
        self.headers = headers  # the key header, or None when no key is sent


class Pacer:
    """Hands out this process's slots, each at its due time, to whichever user asks next.

    One user at a time waits for the next slot (holding ``_turn``), and takes it only once it is due: no slot is
    ever held by a sleeping user, so a user stopped by Locust (ramp-down, rebalancing, stop) loses none, and a plan
    that changes while a user waits applies to the very next slot.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] | None = None,
        on_adopt: Callable[[Plan], None] = lambda plan: None,
        on_drop: Callable[[str], None] = lambda mode: None,
    ) -> None:
        self._clock = clock
        self._on_adopt = on_adopt
        self._on_drop = on_drop
        self._sleep = sleep or self._wait_or_change
        self.plan: Plan | None = None
        self._old: Plan | None = None  # the previous share of this run, still stepped until plan.share_from
        self._next = 0  # the next slot number of this process
        self._turn = Semaphore()
        self._changed = Event()

    def apply(self, plan: Plan) -> bool:
        """Adopt ``plan`` unless an equal or newer version is already in use. Returns True when adopted.

        A re-split (workers joined or left) takes effect at ``plan.share_from``, a slot the master chose a little
        in the future: until then this process keeps stepping its old share, from then on the new one, so that
        together the workers send every slot once whatever the message latency.
        """
        current = self.plan
        if current is not None and plan.version <= current.version:
            return False
        if not _same_share(current, plan):
            if current is not None and current.run_id == plan.run_id:
                self._old = current
                if self._next >= plan.share_from:  # the message came late: switch now, from where we are
                    self._next, self._old = _first_of(plan, self._next), None
            else:
                self._old = None
                self._next = _first_of(plan, plan.share_from)
        self.plan = plan
        self._on_adopt(plan)
        self._notify()
        return True

    def clear(self) -> None:
        """Forget the plan (the run stopped); users wait for the next one."""
        self.plan = self._old = None
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = Event()

    @property
    def changed(self) -> Event:
        """Set at the next change of plan (take it before asking for a slot, then wait on it if none came)."""
        return self._changed

    def _wait_or_change(self, seconds: float) -> None:
        # Wait for the next slot, but wake at once when the plan changes: a stopping run (Locust lets a stopped
        # user finish its task) must not send one more slot per waiting user.
        self._changed.wait(seconds)

    def _advance(self, plan: Plan) -> None:
        number, old = self._next, self._old
        if old is not None and number < plan.share_from:
            following = number + old.share_count
            self._next = following if following < plan.share_from else _first_of(plan, plan.share_from)
        else:
            self._old = None
            self._next = number + plan.share_count

    def next_slot(self) -> Slot | None:
        """The next slot of this process, returned when it is due; None when there is no plan or it has ended."""
        with self._turn:
            while True:
                plan = self.plan
                if plan is None:
                    return None
                number = self._next
                due = plan.schedule.slot(number)
                if due is None:
                    return None
                elapsed, mode = due
                at = plan.t0 + elapsed
                delay = at - self._clock()
                if delay > 0:
                    self._sleep(delay)
                    continue  # look again: the plan may have changed meanwhile
                self._advance(plan)
                if plan.max_delay and -delay > plan.max_delay:
                    # Every user was busy for longer than --max-send-delay: sending now would put this request in
                    # another second (or stage) than planned, so it is dropped and counted, as k6 drops iterations.
                    self._on_drop(mode)
                    continue
                targets = plan.targets
                index = number % len(targets.nodes)
                node = targets.nodes[index]
                key = targets.key_index(number)
                headers = {targets.api_key_header: targets.api_keys[key]} if targets.api_keys else None
                return Slot(number, at, mode, node, targets.url(node), key, headers, index)


def _first_of(plan: Plan, start: int) -> int:
    """The first slot at or after ``start`` in the plan's share."""
    return start + (plan.share_index - start) % plan.share_count


def _same_share(a: Plan | None, b: Plan | None) -> bool:
    return (
        a is not None
        and b is not None
        and a.run_id == b.run_id
        and (a.share_index, a.share_count) == (b.share_index, b.share_count)
    )
