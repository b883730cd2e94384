"""The master's (or standalone process's) side of a run: plans, grants, users, and when the run ends.

The shape calls ``begin()`` on the first tick of a run and ``tick()`` about once a second after that. Each run gets a
wall-clock start ``t0`` on a whole second, a little ahead so workers have the plan and users before the first slot
is due; whole seconds make per-second counts line up with stage boundaries and with fixed limiter windows.

A master leases the slots to its workers (see rlsuite.plan): a lease loop (every ``LEASE_SECONDS``) grants the slots
due within the next ``SPLIT_AHEAD_SECONDS`` to the workers it heard from within ``STALE_SECONDS``, once those granted
run out within ``SPLIT_AHEAD_SECONDS - REFILL_SECONDS``. A killed worker's share thus passes to the others about a
second after its last heartbeat (silence, then at most SPLIT_AHEAD_SECONDS of its grants), and nothing is ever
granted twice. A standalone process grants itself the whole run at once.
"""

from __future__ import annotations

from locust import runners as locust_runners
from locust.runners import STATE_MISSING

import itertools
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent

from rlsuite import pacing as pacing_module
from rlsuite import policy as policy_module
from rlsuite import routes as routes_module
from rlsuite import schedule as schedule_module
from rlsuite import targets as targets_module
from rlsuite.plan import MESSAGE, UNBOUNDED, Ledger, Plan, Progress, progress_from_message
from rlsuite.replay import Replays
from rlsuite.status import Status
from rlsuite.tally import Totals
from rlsuite.verdict import build_replay

LEAD_SECONDS = 0.5  # at least this long between the first tick and t0
SPLIT_AHEAD_SECONDS = 0.5  # slots are granted this long before they are due: a re-split takes effect this much later
LEASE_SECONDS = 0.1  # how often a master looks at its grants and workers
REFILL_SECONDS = 0.2  # ... and grants the next slots once those granted run out sooner than 0.3 s from now
STALE_SECONDS = 0.5  # a worker not heard from for this long gets no new slots until it is heard again
# Locust's timers, set at init (tune_locust_timers): heartbeats every 0.25 s instead of 1 s (what STALE_SECONDS
# needs), reports every 1 s instead of 3 s. Locust's own verdict that a worker is missing (and lost, for the suite)
# comes after 1.75-2 s of silence instead of 3-5 s: not shorter, because Locust's master stops reading messages
# (heartbeats too) for 1 s whenever a worker joins or quits mid-run (its start(), called from the message loop,
# waits LOCUST_WAIT_FOR_WORKERS_REPORT_AFTER_RAMP_UP for reports that loop cannot read), which would make the other
# workers look missing.
HEARTBEAT_SECONDS = 0.25
MISSING_AFTER_BLOCK_SECONDS = 0.75  # silence tolerated beyond that wait
REPORT_SECONDS = 1.0
MISSING_FORGOTTEN_SECONDS = 60  # Locust forgets a missing worker after 60 heartbeat ticks: keep that at 60 s
LATENCY_BUDGET_SECONDS = 0.05  # users for the peak rate at 50 ms latency ...
MIN_USERS = 10


def default_users(peak_rps: float, nodes: int, timeout: float) -> int:
    """Default -u: enough users (requests in flight) that pacing holds at 50 ms latency even while one node hangs.

    A hung node holds each of its requests for the whole timeout; without users to spare for that, the requests
    due to the healthy nodes would wait too, and a fault on one node would look like a slow cluster. These are the
    most that may be in flight, not how many send: in each process only as many send as keep up (rlsuite.users.Gate),
    the others wait parked, so thousands of spare users cost memory (about 12 KB each), not speed.
    """
    return max(MIN_USERS, math.ceil(peak_rps * (LATENCY_BUDGET_SECONDS + timeout / max(1, nodes))))


def tune_locust_timers(runner: Any) -> None:
    """Locust's heartbeat and report timers for fast failover. Locust reads these module globals afresh at every
    use (the master's heartbeat loop, its liveness reset on each heartbeat, a worker's heartbeat and report loops), so
    setting them in ``init`` takes effect from the next tick; master and workers must agree (same locustfile).

    Cost: each worker sends 4 heartbeats/s instead of 1 and the master answers each (8 small messages/s per worker
    instead of 2), the master's heartbeat loop runs 4x/s, and reports come every second (the same data in 3x the
    messages); with the grants (about 5 plans/s per worker) some 15 messages/s per worker. Measured (python
    bench/workers.py --only cost): about 0.35% of a core per worker on the master, 0.3% on each worker.
    """
    locust_runners.HEARTBEAT_INTERVAL = HEARTBEAT_SECONDS
    locust_runners.WORKER_REPORT_INTERVAL = REPORT_SECONDS
    wait = getattr(runner, "_wait_for_workers_report_after_ramp_up", None)
    if wait is not None:  # the master: a worker is missing after (liveness + 1 .. + 2) heartbeats of silence
        blocked = float(wait()) + MISSING_AFTER_BLOCK_SECONDS
        locust_runners.HEARTBEAT_LIVENESS = max(1, math.ceil(blocked / HEARTBEAT_SECONDS) - 1)
        locust_runners.HEARTBEAT_DEAD_INTERNAL = -round(MISSING_FORGOTTEN_SECONDS / HEARTBEAT_SECONDS)


@dataclass
class Departure:
    worker: str
    at: float  # seconds into the run
    lost: bool  # it stopped sending heartbeats (else it quit)
    returned: int = 0  # slots it handed back when it quit
    back: bool = False  # lost, then heard again: it kept its grants all along, nothing was lost
    heard: float | None = None  # seconds into the run of its last heartbeat


class Conductor:
    def __init__(
        self,
        runner: Any,
        totals: Totals,
        status: Status,
        apply_locally: Callable[[Plan], object],
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        spawn: Callable[[Callable[[], None]], Any] = gevent.spawn,
    ) -> None:
        self._runner = runner
        self._totals = totals
        self._status = status
        self._apply_locally = apply_locally  # standalone: hand the plan to our own pacer (a master sends it)
        self._clock = clock
        self._monotonic = monotonic  # grants and silences are timed on it: a step of the wall clock changes neither
        self._spawn = spawn  # of the lease loop (a test drives lease() itself)
        self.plan: Plan | None = None  # the current or last run, without grants
        self.ledger: Ledger | None = None  # who holds which slot of it
        self.policies: list[policy_module.Policy] = []  # the declared limits of the current run, in match order
        self.run_id = 0
        self.epoch = secrets.token_hex(4)  # this master: workers compare plan versions only within one
        self._versions = itertools.count(1)
        self._m0 = 0.0  # t0 on the monotonic clock
        self._known: tuple[str, ...] = ()  # Locust's live workers at the last look
        self._heard: dict[str, float] = {}  # worker id -> monotonic time of its last heartbeat
        self._reports: dict[str, tuple[int, int, float]] = {}  # worker id -> (seq, in flight, at) of its last report
        self._progress: dict[str, Progress] = {}  # worker id -> its progress on its grants, as far as reported
        self._returned: dict[str, int] = {}  # worker id -> slots it handed back when it quit
        self._told: set[str] = set()  # workers sent the whole plan of the current run
        self._lease_loop: Any = None
        self._users_per_worker = 0
        self.departures: list[Departure] = []  # workers that quit or were lost during the current or last run

    @property
    def policy(self) -> policy_module.Policy | None:
        """The declared limit when there is exactly one (what the web UI draws as a line), else None."""
        return self.policies[0] if len(self.policies) == 1 else None

    @property
    def distributed(self) -> bool:
        return hasattr(self._runner, "clients")

    def begin(self, opts: Any) -> Plan:
        """Start a new run from the current options; raises OptionError for a bad value."""
        schedule = schedule_module.from_options(opts)
        targets = targets_module.from_options(opts)
        self.policies = policy_module.declared(opts)
        # "remaining never rises within a window" holds per policy; with several, two answers of one key and node
        # may come from different policies
        window_rule = len(self.policies) == 1 and self.policies[0].counts_in_windows
        self.run_id += 1
        now = self._clock()
        t0 = math.ceil(now + LEAD_SECONDS)
        self._m0 = self._monotonic() + (t0 - now)
        max_delay = pacing_module.check_options(opts)
        self.plan = Plan(
            self.run_id,
            next(self._versions),
            t0,
            schedule,
            targets,
            max_delay=max_delay,
            window_rule=window_rule,
            epoch=self.epoch,
            routes=tuple(p.route for p in self.policies) or routes_module.ALL,
        )
        self.ledger = Ledger(schedule.total_slots)
        replay = None
        if self.policies:
            every_request = len(self.policies) == 1 and self.policies[0].route.matches_all
            replay = Replays([build_replay(p, len(targets.nodes), t0) for p in self.policies], every_request)
        names = [p.name for p in self.policies] or [routes_module.DEFAULT]
        self._totals.start_run(self.run_id, [n.name for n in targets.nodes], replay, names)
        self._status.running = True
        self._status.run_started = t0
        self._known = ()
        self._reports, self._progress, self._returned = {}, {}, {}
        self._told = set()
        self._users_per_worker = 0
        self.departures = []
        if self.distributed:
            self.lease(resend=True)  # the plan at once (no slots yet); the loop grants them as they come due
            self._stop_leasing()
            self._lease_loop = self._spawn(self._lease_every)
        else:
            self.ledger.extend(["local"], UNBOUNDED)
            self._apply_locally(self.plan.with_grants(self.ledger.grants("local"), next(self._versions)))
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
        self.lease(resend=True)  # also repairs a plan message that went missing
        elapsed = now - plan.t0
        stage = plan.schedule.stage_at(elapsed)
        self._status.mode = stage.mode
        self._status.target_rps = stage.rps if elapsed >= 0 and (plan.end is None or now < plan.end) else 0.0
        workers = max(1, len(self._known))
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
        self._stop_leasing()

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

    # -- leases (a master) ---------------------------------------------------------------------------------------

    def _lease_every(self) -> None:
        while True:
            gevent.sleep(LEASE_SECONDS)
            self.lease()

    def _stop_leasing(self) -> None:
        if self._lease_loop is not None:
            self._lease_loop.kill(block=False)
            self._lease_loop = None

    def _workers(self) -> tuple[str, ...]:
        clients = self._runner.clients
        return tuple(sorted(c.id for c in (*clients.ready, *clients.spawning, *clients.running)))

    def heard(self, client_id: str) -> None:
        """A heartbeat from ``client_id`` (Locust's ``heartbeat_sent`` event on the master)."""
        self._heard[client_id] = self._monotonic()

    def _granted_to(self, workers: tuple[str, ...]) -> list[str]:
        """The workers to grant new slots to: those heard from lately. If none was (the master itself was stalled
        and read no heartbeat), all of Locust's live workers rather than nobody."""
        now = self._monotonic()
        fresh = [w for w in workers if now - self._heard.get(w, now) <= STALE_SECONDS]
        return fresh or list(workers)

    def lease(self, resend: bool = False) -> None:
        """Once the slots granted run out within SPLIT_AHEAD_SECONDS - REFILL_SECONDS, grant those due within
        SPLIT_AHEAD_SECONDS to the workers heard from lately; send each worker whose grants changed (with
        ``resend``: every worker) its plan."""
        plan, ledger = self.plan, self.ledger
        if plan is None or ledger is None or not self.distributed or not self._status.running:
            return
        workers = self._workers()
        self._track(workers)
        elapsed = self._monotonic() - self._m0
        changed: set[str] = set()
        if ledger.spare or ledger.frontier <= plan.schedule.first_slot_at(
            elapsed + SPLIT_AHEAD_SECONDS - REFILL_SECONDS
        ):
            to = plan.schedule.first_slot_at(elapsed + SPLIT_AHEAD_SECONDS)
            changed = ledger.extend(self._granted_to(workers), to)
        for client_id in workers if resend else sorted(changed):
            self._send(client_id, full=resend)

    def _track(self, workers: tuple[str, ...]) -> None:
        """Note joins, departures and comebacks. A worker that quit was removed by Locust; one that stopped sending
        heartbeats is still listed, missing."""
        if workers == self._known or self.plan is None:
            return
        now = self._monotonic()
        for client_id in set(workers) - set(self._known):
            self._heard[client_id] = max(self._heard.get(client_id, now), now)  # Locust just heard from it
            for departure in self.departures:
                if departure.worker == client_id and departure.lost:
                    departure.back = True
        at = round(self._clock() - self.plan.t0, 1)
        for client_id in sorted(set(self._known) - set(workers)):
            client = self._runner.clients.get(client_id)
            lost = client is not None and client.state == STATE_MISSING
            heard = self._heard.get(client_id)
            heard_at = None if heard is None else round(heard - self._m0, 1)
            self.departures.append(Departure(client_id, at, lost, self._returned.get(client_id, 0), heard=heard_at))
        self._known = workers

    def _send(self, client_id: str, full: bool = False) -> None:
        """Send ``client_id`` its grants: the whole plan the first time in a run, and when ``full``."""
        plan, ledger = self.plan, self.ledger
        if plan is None or ledger is None:
            return
        full = full or client_id not in self._told
        self._told.add(client_id)
        share = plan.with_grants(ledger.grants(client_id), next(self._versions))
        self._runner.send_message(MESSAGE, share.to_message(self._clock(), full), client_id=client_id)

    def resend(self, client_id: str) -> None:
        """Send ``client_id`` its plan of the current run (a worker asks when it is ready for it: a message that
        reached it before it had registered the handler was dropped by Locust)."""
        if self._status.running:
            self._send(client_id, full=True)

    def _this_run(self, data: dict[str, Any]) -> bool:
        plan = self.plan
        return plan is not None and (data.get("epoch"), data.get("run_id")) == (plan.epoch, plan.run_id)

    def _done(self, client_id: str, data: dict[str, Any]) -> Progress:
        """``client_id``'s progress on its grants, with what ``data`` (a report or a hand-back) adds to it."""
        done = self._progress.setdefault(client_id, {})
        if self._this_run(data):  # else no plan of this run reached it: it handled none of its slots
            for key, n in progress_from_message(data["progress"]).items():
                done[key] = max(done.get(key, n), n)  # progress only grows, whatever order messages come in
        return done

    def reported(self, client_id: str, data: dict[str, Any]) -> None:
        """A worker's report says how far its pacer was when the report's counts were drained, and how many of its
        requests were in flight then."""
        plan, ledger = self.plan, self.ledger
        if plan is None or ledger is None or not self._this_run(data):
            return
        seq = int(data["seq"])
        if seq <= self._reports.get(client_id, (-1, 0, 0.0))[0]:
            return  # an older report, delivered late (its counts were taken; its in-flight count is stale)
        self._reports[client_id] = (seq, int(data["inflight"]), round(self._clock() - plan.t0, 1))
        ledger.forget_handled(client_id, self._done(client_id, data))

    def hand_back(self, client_id: str, data: dict[str, Any]) -> None:
        """A worker quits: the slots of its grants beyond its progress were never sent; grant them to the others at
        once. (Locust removes it when its "quit" message follows.)"""
        plan, ledger = self.plan, self.ledger
        if plan is None or ledger is None or not self._status.running:
            return
        done = self._done(client_id, data)
        self._returned[client_id] = ledger.unsent(client_id, done)
        others = tuple(w for w in self._workers() if w != client_id)
        for worker in sorted(ledger.hand_back(client_id, done, self._granted_to(others) if others else [])):
            self._send(worker)

    def unaccounted(self, client_id: str) -> tuple[int, float | None]:
        """An upper bound of the requests of ``client_id`` that may have reached the target uncounted, and when (s
        into the run) its last report came: the requests in flight at that report, plus every slot of its grants
        beyond its progress then (sent, dropped or never sent: only it knew)."""
        if self.ledger is None:
            return 0, None
        _, in_flight, at = self._reports.get(client_id, (0, 0, None))
        return in_flight + self.ledger.unsent(client_id, self._progress.get(client_id)), at

    def lost(self) -> list[Departure]:
        """Workers lost (no heartbeat) during the current or last run and never heard again."""
        return [d for d in self.departures if d.lost and not d.back]

    def lost_workers(self) -> list[str]:
        """One sentence per worker lost during the current or last run."""
        out = []
        for d in self.lost():
            bound, at = self.unaccounted(d.worker)
            since = "since the run started" if at is None else f"after its last report ({at:g}s)"
            heard = "" if d.heard is None else f" (last heard {d.heard:g}s)"
            out.append(
                f"worker {d.worker} was lost {d.at:g}s into the run (no heartbeat){heard}: up to {bound} of its "
                f"requests (the slots it held {since}) may have reached the target uncounted; the others took over "
                f"its share within {STALE_SECONDS + LEASE_SECONDS + SPLIT_AHEAD_SECONDS:g}s of its last heartbeat"
            )
        return out
