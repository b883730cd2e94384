"""The master's (or standalone process's) side of a run: plans, shares, users, and when the run ends.

The shape calls ``begin()`` on the first tick of a run and ``tick()`` about once a second after that. Each run gets a
wall-clock start ``t0`` on a whole second, a little ahead so workers have the plan and users before the first slot
is due; whole seconds make per-second counts line up with stage boundaries and with fixed limiter windows.
"""

from __future__ import annotations

from locust.runners import STATE_MISSING

import math
import time
from collections.abc import Callable
from typing import Any

from rlsuite import pacing as pacing_module
from rlsuite import policy as policy_module
from rlsuite import schedule as schedule_module
from rlsuite import targets as targets_module
from rlsuite.metrics import Status
from rlsuite.plan import MESSAGE, Plan
from rlsuite.tally import Totals
from rlsuite.verdict import build_replay

LEAD_SECONDS = 0.5  # at least this long between the first tick and t0
SPLIT_AHEAD_SECONDS = 0.5  # a re-split (workers joined or left) takes effect this long after the master decides it
LATENCY_BUDGET_SECONDS = 0.05  # users for the peak rate at 50 ms latency ...
MIN_USERS = 10


def default_users(peak_rps: float, nodes: int, timeout: float) -> int:
    """Default -u: enough users (requests in flight) that pacing holds at 50 ms latency even while one node hangs.

    A hung node holds each of its requests for the whole timeout; without users to spare for that, the requests
    due to the healthy nodes would wait too, and a fault on one node would look like a slow cluster.
    """
    return max(MIN_USERS, math.ceil(peak_rps * (LATENCY_BUDGET_SECONDS + timeout / max(1, nodes))))


class Conductor:
    def __init__(
        self,
        runner: Any,
        totals: Totals,
        status: Status,
        apply_locally: Callable[[Plan], object],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._runner = runner
        self._totals = totals
        self._status = status
        self._apply_locally = apply_locally  # standalone: hand the plan to our own pacer (a master sends it)
        self._clock = clock
        self.plan: Plan | None = None
        self.policy: policy_module.Policy | None = None  # the declared limit of the current run, if any
        self.run_id = 0
        self._shares: tuple[str, ...] = ()
        self._sent_shares: dict[str, Plan] = {}  # worker id -> its share of the current run
        self._users_per_worker = 0
        self.departures: list[tuple[str, float, bool]] = []  # (worker id, seconds into the run, lost?) this run

    @property
    def distributed(self) -> bool:
        return hasattr(self._runner, "clients")

    def begin(self, opts: Any) -> Plan:
        """Start a new run from the current options; raises OptionError for a bad value."""
        schedule = schedule_module.from_options(opts)
        targets = targets_module.from_options(opts)
        self.policy = policy_module.from_options(opts)
        window_rule = self.policy is not None and self.policy.counts_in_windows
        self.run_id += 1
        t0 = math.ceil(self._clock() + LEAD_SECONDS)
        max_delay = pacing_module.check_options(opts)
        self.plan = Plan(
            self.run_id, time.time_ns(), t0, schedule, targets, max_delay=max_delay, window_rule=window_rule
        )
        replay = None if self.policy is None else build_replay(self.policy, len(targets.nodes), t0)
        self._totals.start_run(self.run_id, [n.name for n in targets.nodes], replay)
        self._status.running = True
        self._status.run_started = t0
        self._shares = ()
        self._users_per_worker = 0
        self.departures = []
        self._share_out()
        return self.plan

    def tick(self, opts: Any) -> tuple[int, float] | None:
        """Users and spawn rate for Locust, or None once the run (and its last responses) is over."""
        plan = self.plan
        if plan is None:
            return None
        now = self._clock()
        if plan.end is not None and now >= plan.end + plan.targets.timeout + 0.5:
            self.end()
            return None
        self._share_out()
        elapsed = now - plan.t0
        stage = plan.schedule.stage_at(elapsed)
        self._status.mode = stage.mode
        self._status.target_rps = stage.rps if elapsed >= 0 and (plan.end is None or now < plan.end) else 0.0
        workers = max(1, len(self._shares))
        if not self._users_per_worker:
            # -u (requests in flight at most) is split over the workers at the start of the run; a worker joining
            # later gets as many, so the user count changes with the worker set and Locust dispatches users to it.
            wanted = opts.num_users or default_users(
                plan.schedule.peak_rps, len(plan.targets.nodes), plan.targets.timeout
            )
            self._users_per_worker = math.ceil(wanted / workers)
        return self._users_per_worker * workers, float(opts.spawn_rate)

    def end(self) -> None:
        self._status.running = False
        self._status.target_rps = 0.0

    def interrupted(self) -> bool:
        """True when the current or last run was stopped before its end (or had none)."""
        plan = self.plan
        return plan is not None and (plan.end is None or self._clock() < plan.end)

    def elapsed(self) -> float:
        """Seconds of load so far in the current or last run (0 before t0, capped at the run time)."""
        plan = self.plan
        if plan is None:
            return 0.0
        elapsed = max(0.0, self._clock() - plan.t0)
        return elapsed if plan.schedule.run_time is None else min(elapsed, plan.schedule.run_time)

    def _workers(self) -> tuple[str, ...]:
        if not self.distributed:
            return ("local",)
        clients = self._runner.clients
        return tuple(sorted(c.id for c in (*clients.ready, *clients.spawning, *clients.running)))

    def _note_departures(self, gone: set[str]) -> None:
        """A worker that quit was removed by Locust; one that stopped sending heartbeats is still listed, missing."""
        if not self.distributed or self.plan is None:
            return
        for client_id in sorted(gone):
            client = self._runner.clients.get(client_id)
            lost = client is not None and client.state == STATE_MISSING
            self.departures.append((client_id, round(self._clock() - self.plan.t0, 1), lost))

    def lost_workers(self) -> list[str]:
        """One sentence per worker lost during the current or last run."""
        return [
            f"worker {client_id} was lost {at:g}s into the run (no heartbeat): up to 3 s of its counts never reached "
            "the master, and its share of the load was missing until the others took it over"
            for client_id, at, lost in self.departures
            if lost
        ]

    def _share_out(self) -> None:
        """Split the slots over the workers connected now when that set changed (joins, losses); otherwise send
        every worker its current share again, which it ignores unless it missed it."""
        workers = self._workers()
        if self.plan is None or not workers:
            return
        if workers != self._shares:
            self._note_departures(set(self._shares) - set(workers))
            self._shares = workers
            version = time.time_ns()
            # The new split takes effect a little in the future, so every worker has the message before it matters.
            share_from = self.plan.schedule.first_slot_at(self._clock() + SPLIT_AHEAD_SECONDS - self.plan.t0)
            self._sent_shares = {
                client_id: self.plan.with_share(index, len(workers), version, share_from)
                for index, client_id in enumerate(workers)
            }
            if not self.distributed:
                self._apply_locally(self._sent_shares["local"])
                return
        if self.distributed:
            for client_id in workers:
                self.resend(client_id)

    def resend(self, client_id: str) -> None:
        """Send ``client_id`` its share of the current run (a worker asks when it is ready for it: a message that
        reached it before it had registered the handler was dropped by Locust)."""
        share = self._sent_shares.get(client_id)
        if share is not None and self.plan is not None and share.run_id == self.plan.run_id:
            self._runner.send_message(MESSAGE, share.to_message(self._clock()), client_id=client_id)
