"""The gate: only as many of a process's users send as are needed.

-u is the most requests in flight (by default enough for one hung node); those users all exist, but only
``BASE_ACTIVE`` per process take slots at first. Beyond a few dozen requests in flight a process sends no more, only
slower (more greenlets and connections to switch between: on a busy core, 100 in flight sent fewer requests a second
than 50, bench/OVERLOAD.md), so the rest wait parked, costing memory only. The gate lets more of them take slots
while all that send are waiting for answers and the process has CPU to spare: they wait for the network (a slow or
hung node), not for this process; and lets them park again when the process is busy or they are idle.
"""

from __future__ import annotations

from locust.exception import StopUser
from locust.user.task import LOCUST_STATE_RUNNING, LOCUST_STATE_STOPPING, LOCUST_STATE_WAITING

import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

import gevent

from rlsuite.connections import PROCESS

if TYPE_CHECKING:
    from rlsuite.users import PacedUser

BASE_ACTIVE = 50  # users per process that take slots at first (more in flight send less on a busy core)
GATE_INTERVAL = 0.1  # seconds between the gate's looks at the process
SPARE_CPU = 0.9  # busy less than this share of the time, the process has room for more requests in flight
BUSY_CPU = 0.97  # busy more, more requests in flight only wait longer for this process: fewer users send
LATE_SECONDS = 0.01  # a slot taken this long after it was due waited for a user (the tally's late sends)


class Gate:
    """How many of a process's users take slots at once (``limit``); the others wait parked.

    Every ``GATE_INTERVAL`` it looks at the requests in flight and the slots taken late since the last look, and how
    busy the process was (the share of the time it ran or waited for a CPU, ``busy_seconds``):

    - every user that sends was waiting for an answer at some moment (so a slot due then found none free) and the
      process was busy less than ``SPARE_CPU`` of the time, at two looks in a row: they wait for the network (slow
      answers, a hung node), not for this process, so more may send: as many more as slots went out late, at least
      half as many again (one look is not enough: the one that spans the start of a burst sees CPU to spare, from
      the steady stage before, and every user in flight; more users then would only cost the CPU the burst needs);
    - the process was busy more than ``BUSY_CPU`` of the time: more requests in flight would only queue for its
      CPU, so a quarter fewer send (never fewer than ``base``);
    - no slot was late and fewer than half of those allowed were in flight: the limit comes down to twice that.

    Whether the process was busy more than ``SPARE_CPU`` of the time also decides whether each user lets the others
    run before it sends and after each request (``PROCESS.busy``): when the process is short of CPU, that batches
    requests (one turn of the event loop and one wake-up of the server for many) and it sends more; with CPU to spare
    it only costs a turn of the event loop per request.
    """

    def __init__(self, base: int = BASE_ACTIVE) -> None:
        self.base = base
        self.limit = base
        self.users = 0  # users started (Locust's count in this process)
        self.active = 0  # users allowed to take slots
        self.in_flight = 0
        self.peak = 0  # most requests in flight since the last look
        self.late = 0  # slots taken late since the last look
        self._waiting = False  # at the last look, every user that sends was waiting for an answer, with CPU to spare
        self._parked: deque[PacedUser] = deque()
        self._controller: gevent.Greenlet | None = None

    def join(self) -> None:
        self.users += 1
        if self._controller is None:
            self._controller = gevent.spawn(self._control)

    def leave(self, user: PacedUser) -> None:
        self.users -= 1
        if user._active:
            user._active = False
            self.active -= 1
            self._admit()
        if not self.users:
            self.limit = self.base  # the next run starts afresh

    def enter(self, user: PacedUser) -> None:
        """Return once ``user`` may take slots: at once if fewer than ``limit`` users do, else when it is woken."""
        if user._active:
            if self.active <= self.limit:
                return
            user._active = False  # the limit came down: this one steps back
            self.active -= 1
        if self.active < self.limit and not self._parked:
            user._active = True
            self.active += 1
            return
        user._state = LOCUST_STATE_WAITING  # as in Locust's own wait: a parked user may be stopped at once
        user._wake.clear()
        self._parked.append(user)
        try:
            user._wake.wait()
        finally:
            user._wake.set()  # marks it gone from the queue, also when Locust killed it while parked
        if user._state == LOCUST_STATE_STOPPING:
            raise StopUser()
        user._state = LOCUST_STATE_RUNNING

    def _admit(self) -> None:
        parked = self._parked
        while parked and self.active < self.limit:
            user = parked.popleft()
            if user._wake.is_set():
                continue  # stopped while parked
            user._active = True
            self.active += 1
            user._wake.set()

    def took_late(self) -> None:
        """A user took a slot late: counted for the next look, and the sends are batched from now on (behind
        already, as when a burst began), not only from the next look (see ``step``)."""
        self.late += 1
        PROCESS.busy = True

    def step(self, busy: float) -> None:
        """One look: adjust the limit from the requests in flight, the slots taken late and how busy the process was
        since the last one."""
        late, self.late = self.late, 0
        peak, self.peak = self.peak, self.in_flight
        PROCESS.busy = busy > SPARE_CPU
        limit = self.limit
        waiting, self._waiting = self._waiting, peak >= self.active and busy < SPARE_CPU
        if self._waiting:
            if waiting:  # twice in a row: a look that spans a burst's start sees spare CPU and every user in flight
                limit += max(late, limit // 2)
        elif busy > BUSY_CPU:
            limit -= limit // 4
        elif not late and peak < limit // 2:
            limit = 2 * peak
        self.limit = max(self.base, min(limit, self.users))
        self._admit()

    def _control(self) -> None:
        wall, busy = time.perf_counter(), busy_seconds()
        try:
            while self.users:
                gevent.sleep(GATE_INTERVAL)
                now, used = time.perf_counter(), busy_seconds()
                self.step((used - busy) / max(now - wall, 1e-6))
                wall, busy = now, used
        finally:
            self._controller = None


def busy_seconds() -> float:
    """Seconds this process's thread has run or waited to run (Linux /proc/self/schedstat: on the CPU, and runnable
    while another process had it), so that a process starved by others on a shared core counts as busy, not as
    having time to spare; the CPU time alone where there is no schedstat."""
    try:
        with open("/proc/self/schedstat", "rb") as f:
            ran, waited = f.read().split()[:2]
        return (int(ran) + int(waited)) / 1e9
    except (OSError, ValueError):
        return time.process_time()


_gates: weakref.WeakKeyDictionary[Any, Gate] = weakref.WeakKeyDictionary()


def gate_of(environment: Any) -> Gate:
    """The gate of the users of one Locust environment (one per process)."""
    gate = _gates.get(environment)
    if gate is None:
        gate = _gates[environment] = Gate()
    return gate
