"""Open-model pacing: hands out the slots of the current plan to this process's users, each at its due time.

Locust's wait times are closed-model (a user waits after its own request), so a slow target silently lowers the
load and users spawned together fire in lumps. Here the load is a list of numbered slots with due times from the
schedule; the next free user waits until the next slot is due, takes it and sends it. The rate is therefore exact
whatever the latency (as long as a user is free), spacing is even, and the node of slot ``g`` is ``g % nodes``: a
global round-robin shared by every worker without talking to each other. Each process sends only the slots the
master granted it (see rlsuite.plan), so together they send every slot once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gevent import get_hub
from gevent.event import Event
from gevent.hub import Waiter

from rlsuite import options
from rlsuite.connections import PROCESS
from rlsuite.options import Option
from rlsuite.plan import Plan, Progress
from rlsuite.targets import Node

# Slots due within this long of the one a wake-up is for go out with it: one wake-up of the process serves several
# users (at 4,000/s, four), as Locust's own paced users wake in groups; no slot is ever sent earlier than its due time
# minus this, nor in the wall-clock second before its own, so the rate of every second (and the late count, 10 ms) is
# what it was.
BATCH_SECONDS = 0.001
SCAN_SLOTS = 4  # late slots looked at one by one before the first that is not is found from the arithmetic


OPTIONS = (
    Option(
        "max-send-delay",
        "Steady and burst traffic",
        type=float,
        default=1.0,
        minimum=0,
        help="A request that could not start within this many seconds of its due time (all users busy) is "
        "dropped and counted, not sent late; 0 = never drop.",
    ),
)


def check_options(opts: Any) -> float:
    return options.check(opts, OPTIONS)["max-send-delay"]


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


class Turn:
    """The right to wait for the next slot: one user at a time holds it, the others queue.

    A user that finds the turn free takes it, even when others queue (as with gevent's Semaphore): under load the
    user whose request was just answered takes the next slot without a switch to another greenlet, which kept the
    rate at 9,000/s on one core where a strict hand-over fell to 0.89-0.98 of it. Of those queued, one is woken when
    the turn comes free. With CPU to spare, the last to queue is woken: its greenlet ran just now, so
    last-in-first-out keeps only as many users cycling as the requests in flight need, their stacks warm in the
    CPU's caches, where first-in-first-out would cycle through every waiting user (about 3% more CPU per request at
    4,000/s: bench/OVERLOAD.md, notes). When the process is short of CPU (``PROCESS.busy``), the first to queue is
    woken, so that every user takes a slot before any sends again and the requests go out in batches (see
    ``_BoundedPool.get_socket``).
    """

    __slots__ = ("_held", "_waiting", "_woken")

    def __init__(self) -> None:
        self._held = False
        self._waiting: list[Waiter] = []
        self._woken: Waiter | None = None  # the queued user woken for a free turn, until it looked

    def __enter__(self) -> None:
        if not self._held:
            self._held = True
            return
        while True:
            waiter = Waiter()
            self._waiting.append(waiter)
            try:
                waiter.get()  # switched to from the hub: the turn was free then
            except BaseException:  # killed while queued (Locust stops users this way)
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
                elif self._woken is waiter:
                    self._woken = None
                    self._wake()  # it was woken for a free turn: another may take it
                raise
            self._woken = None
            if not self._held:
                self._held = True
                return
            # a user back from its request took it meanwhile: queue again

    def __exit__(self, *_: object) -> None:
        self._held = False
        self._wake()

    def _wake(self) -> None:
        if self._waiting and self._woken is None and not self._held:
            waiter = self._woken = self._waiting.pop(0 if PROCESS.busy else -1)
            get_hub().loop.run_callback(waiter.switch, None)


class Pacer:
    """Hands out this process's slots, each at its due time, to whichever user asks next.

    The process sends only the slots its plan grants it (``Plan.grants``), in slot order, and keeps its progress on
    each grant (the first slot of it not handled yet), so a grant that comes late (slots handed back by a worker
    that quit) is sent from its start, and a grant extended by a newer plan from where it was. One user at a time
    waits for the next slot
    (holding ``_turn``), and takes it only once it is due: no slot is ever held by a sleeping user, so a user stopped
    by Locust (ramp-down, rebalancing, stop) loses none, and new grants apply to the very next slot. A plan that
    arrives late changes nothing already sent: the slots it grants that are past due are sent late, or dropped and
    counted beyond ``--max-send-delay``.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] | None = None,
        on_adopt: Callable[[Plan], None] = lambda plan: None,
        on_drop: Callable[[str, range], None] = lambda mode, slots: None,
        batch: float = BATCH_SECONDS,
    ) -> None:
        self._clock = clock
        self._on_adopt = on_adopt
        self._on_drop = on_drop  # (mode, the slots dropped: all of that mode, in one grant) per run of drops
        self._sleep = sleep or self._wait_or_change
        self.batch = batch  # a slot is handed out once it is due within this long (BATCH_SECONDS)
        self.plan: Plan | None = None
        self._grants: list[list[int]] = []  # [start, end, index, count, first slot not handled yet] per grant
        self.last = -1  # the slot handled last (sent or dropped)
        self.run: tuple[str, int] = ("", -1)  # (epoch, run id) of the last plan adopted: the progress is in that run
        self._newest: tuple[str, int] = ("", 0)  # (epoch, version) of the newest plan seen
        self._closed: tuple[str, int] | None = None  # (epoch, run id) this process stopped: its plans are refused
        self._final = False  # this process quits: every plan is refused
        self.taken = 0  # slots handed to users (not dropped) since the process started: the in-flight count's base
        self._turn = Turn()
        self._changed = Event()
        self._waiter: Waiter | None = None  # the timed wait for the next slot under way, woken by a change of plan

    def apply(self, plan: Plan) -> bool:
        """Adopt ``plan`` unless a newer one of the same master was seen, or its run was closed here. Returns True
        when adopted.

        Within a run, the plan's grants replace the old ones, each with the progress it had (a newer plan's grants
        hold every slot of the older ones not handled yet: the master never takes one back, and leaves out only
        grants that a report said were handled).
        """
        epoch, version = self._newest
        if self._final or (plan.epoch == epoch and plan.version <= version):
            return False
        run = (plan.epoch, plan.run_id)
        if run == self._closed:
            return False
        self._newest = (plan.epoch, plan.version)
        current = self.plan
        before = self._peek()[0]
        done = self.progress() if run == self.run else {}
        self.run = run
        self.plan = plan
        self._grants = [[s, e, i, c, max(s, done.get((s, i, c), s))] for s, e, i, c in plan.grants]
        self._on_adopt(plan)
        if (
            current is None
            or (current.epoch, current.run_id, current.t0, current.max_delay)
            != (plan.epoch, plan.run_id, plan.t0, plan.max_delay)
            or self._peek()[0] != before
        ):
            self._notify()  # only then can the user waiting for the next slot have to wake (plans come often)
        return True

    def give_back(self, slot: Slot) -> None:
        """A slot handed to a user that sent no request for it: counted as dropped (and no longer in flight), so
        every slot is still sent once or counted dropped."""
        self.taken -= 1
        self._on_drop(slot.mode, range(slot.number, slot.number + 1))

    def close(self, final: bool = False) -> tuple[str, int, Progress]:
        """Stop sending this run's slots for good (the run stopped): later plans of the run are refused; ``final``
        (this process quits): every later plan is. Returns (epoch, run id, progress) of the last run adopted: the
        slots it was granted beyond its progress were never sent and can be handed back (none of a later run was)."""
        plan = self.plan
        self.plan = None
        self._notify()
        if plan is not None:
            self._closed = (plan.epoch, plan.run_id)
        self._final = self._final or final
        return (*self.run, self.progress())

    def progress(self) -> Progress:
        """Per grant of the last run adopted: the first slot not handled yet."""
        return {(s, i, c): n for s, _, i, c, n in self._grants}

    def clear(self) -> None:
        """Forget the plan (the run stopped); users wait for the next run's."""
        self.close()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = Event()
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            get_hub().loop.run_callback(waiter.switch, None)  # (a Waiter is switched to from the hub only)

    @property
    def changed(self) -> Event:
        """Set at the next change of plan (take it before asking for a slot, then wait on it if none came)."""
        return self._changed

    def _wait_or_change(self, seconds: float) -> None:
        """Wait for the next slot, but wake at once when the plan changes: a stopping run (Locust lets a stopped user
        finish its task) must not send one more slot per waiting user. What gevent.sleep does (a timer and a Waiter),
        with the Waiter where a change of plan finds it: a quarter of the cost of Event.wait with a timeout, paid for
        every wake-up of the process."""
        hub = get_hub()
        waiter = self._waiter = Waiter(hub)
        timer = hub.loop.timer(seconds)
        timer.start(waiter.switch, None)
        try:
            waiter.get()
        finally:
            timer.close()
            if self._waiter is waiter:
                self._waiter = None

    def _peek(self) -> tuple[int | None, list[int] | None]:
        """The first granted slot not handled yet, and its grant; None when none is granted (yet)."""
        best = grant = None
        for g in self._grants:
            n = g[4]
            n += (g[2] - n) % g[3]
            if n < g[1] and (best is None or n < best):
                best, grant = n, g
        return best, grant

    def next_slot(self) -> Slot | None:
        """The next slot of this process, returned when it is due (or due within ``batch``: the users that ask while
        one wake-up lasts share it); None when there is no plan, nothing is granted beyond what was sent (the next
        plan will grant more), or the run has ended."""
        with self._turn:
            clock, batch = self._clock, self.batch
            while True:
                plan = self.plan
                if plan is None:
                    return None
                number, grant = self._peek()
                if grant is None:
                    return None
                place = plan.schedule.place(number)
                if place is None:
                    return None
                elapsed, mode, stage = place
                at = plan.t0 + elapsed
                now = clock()
                delay = at - now
                if plan.max_delay and -delay > plan.max_delay:
                    # Every user was busy for longer than --max-send-delay: sending now would put this request in
                    # another second (or stage) than planned, so it is dropped and counted, as k6 drops iterations;
                    # with it every slot of its grant that is as late, in one step.
                    number, place = self._drop_late(plan, grant, number, mode, stage, now)
                    if place is None or len(self._grants) > 1:
                        continue  # the next slot of all grants
                    elapsed, mode, _ = place  # the next slot of the one grant, late by less
                    at = plan.t0 + elapsed
                    delay = at - now
                if delay > batch or (delay > 0 and int(at) != int(now)):
                    # until it is due: the slots due within ``batch`` after it go out with it, but never in the
                    # second before their own (requests are counted by start second: the rate of every second stays)
                    self._sleep(delay)
                    continue  # look again: the plan may have changed meanwhile
                grant[4] = number + 1
                self.last = number
                self.taken += 1
                targets = plan.targets
                index = number % len(targets.nodes)
                key = targets.key_index(number)
                headers = {targets.api_key_header: targets.api_keys[key]} if targets.api_keys else None
                return Slot(number, at, mode, targets.nodes[index], targets.urls[index], key, headers, index)

    def _drop_late(
        self, plan: Plan, grant: list[int], number: int, mode: str, stage: int, now: float
    ) -> tuple[int, tuple[float, str, int] | None]:
        """Drop slot ``number`` of ``grant`` (of ``mode``, in stage ``stage``) and every later one of it that is
        more than --max-send-delay late at ``now`` (exactly those: each is judged as ``next_slot`` judges one),
        counted per mode, in one step: at overload this runs once per slot sent, not once per slot dropped. The first
        slot late by less is looked for among the next few, else found from the schedule's arithmetic and checked at
        its edge. Returns it, with its place in the schedule (None when it is beyond the grant or the run)."""
        schedule, t0, limit, step = plan.schedule, plan.t0, plan.max_delay, grant[3]
        place = schedule.place
        end = grant[1]
        g = number + step
        for _ in range(SCAN_SLOTS):
            p = place(g) if g < end else None
            if p is None or now - (t0 + p[0]) <= limit:
                break
            g += step
        else:  # many: from the first slot due at or after now - limit (which is late by at most limit)
            guess = schedule.first_slot_at(now - limit - t0)
            g = max(g, number + step * -((number - guess) // step))
            while True:  # forward while late
                p = place(g) if g < end else None
                if p is None or now - (t0 + p[0]) <= limit:
                    break
                g += step
            while True:  # back while the one before is not late or beyond the grant (``number`` is late)
                before = place(g - step) if g - step < end else None
                if before is not None and now - (t0 + before[0]) > limit:
                    break
                g -= step
                p = before
        grant[4] = g
        self.last = g - step
        # per mode: the stage index never decreases, so the dropped slots fall in runs of one stage each
        lo = number
        while True:
            hi = g
            if g - step != lo and place(g - step)[2] != stage:
                a, b = 0, (g - lo) // step - 1  # the stage of lo + a * step is ``stage``, of lo + b * step later
                while b - a > 1:
                    m = (a + b) // 2
                    if place(lo + m * step)[2] == stage:
                        a = m
                    else:
                        b = m
                hi = lo + b * step
            self._on_drop(mode, range(lo, hi, step))
            if hi == g:
                return g, p
            lo = hi
            _, mode, stage = place(lo)
