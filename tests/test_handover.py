"""The slot handover, property-tested: random joins, graceful quits, kills, stalls, clock steps and message delays.

Pure and without sleeps: a simulated clock drives the real Conductor (leases, re-splits, hand-backs, the lost
worker's bound), the real plan messages (Plan.to_message / from_message through JSON) and the real Pacer of each
worker. Every message gets a delay of its own (so messages also overtake each other); Locust's part is modelled:
a worker not heard from for 0.75 s is missing until it is heard again, and a worker that quits is removed.

The properties: no slot is sent twice, no slot is both sent and dropped, and every slot of the run is sent or
counted as dropped, except the slots held by a killed worker, which are at most the bound the master prints.
"""

from __future__ import annotations

from locust.argument_parser import LocustArgumentParser

import heapq
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlsuite import suite
from rlsuite.conductor import LEASE_SECONDS, Conductor
from rlsuite.pacing import Pacer
from rlsuite.plan import MESSAGE, Plan, progress_to_message
from rlsuite.status import Status
from rlsuite.tally import Totals

STEP = 0.05  # seconds of simulated time per step
HEARTBEAT = 0.25
REPORT = 1.0
MISSING_AFTER = 0.75  # Locust with HEARTBEAT_INTERVAL 0.25, HEARTBEAT_LIVENESS 2: missing after 0.5-1.0 s
RUN_TIME = 8
START = 1000.2  # t0 = 1001


def parsed_options(**overrides: Any) -> Any:
    parser = LocustArgumentParser()
    suite.add_arguments(parser)
    opts = parser.parse_args([])
    for key, value in overrides.items():
        setattr(opts, key, value)
    return opts


class NotDue(Exception):
    """The pacer would sleep: the worker has sent everything due for now."""


def not_due(_seconds: float) -> None:
    raise NotDue


@dataclass
class Client:
    id: str
    state: str = "running"
    heard: float = 0.0


class Clients(dict):
    """Locust's WorkerNodes, as far as the conductor reads them."""

    def _state(self, state: str) -> list[Client]:
        return [c for c in self.values() if c.state == state]

    @property
    def ready(self) -> list[Client]:
        return self._state("ready")

    @property
    def spawning(self) -> list[Client]:
        return self._state("spawning")

    @property
    def running(self) -> list[Client]:
        return self._state("running")


@dataclass
class Worker:
    id: str
    pacer: Pacer = field(init=False)
    state: str = "alive"  # alive, stalled (until `until`), killed, quit
    until: float = 0.0
    sent: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    reported: int = 0  # how many of sent + dropped were in reports already (by order of fate)
    fates: list[int] = field(default_factory=list)  # slots sent or dropped, in order
    next_heartbeat: float = 0.0
    next_report: float = 0.0
    reports: int = 0

    def drop(self, _mode: str, slots: range) -> None:
        self.dropped += slots
        self.fates += slots


class Sim:
    def __init__(self, delays: list[float]) -> None:
        self.now = START
        self.master_skew = 0.0
        self._delays = itertools.cycle(delays)
        self._seq = itertools.count()
        self.queue: list[tuple[float, int, str, str, Any]] = []  # (deliver at, seq, to, kind, data)
        self.clients = Clients()
        self.workers: dict[str, Worker] = {}
        self.granted: dict[str, set[int]] = {}  # every slot ever granted to a worker, from the messages sent
        self.accounted: dict[str, set[int]] = {}  # slots whose fate reached the master in a report
        self.conductor = Conductor(
            self,
            Totals(),
            Status(),
            apply_locally=lambda plan: None,
            clock=lambda: self.now + self.master_skew,  # its wall clock, stepped by 'step' actions
            monotonic=lambda: self.now,
            spawn=lambda f: None,
        )
        self._names = (f"w{i}" for i in itertools.count())

    # -- the network -----------------------------------------------------------------------------------------------

    def post(self, to: str, kind: str, data: Any, after: float = 0.0) -> None:
        at = self.now + next(self._delays) + after
        heapq.heappush(self.queue, (at, next(self._seq), to, kind, json.loads(json.dumps(data))))

    def send_message(self, kind: str, data: Any, client_id: str) -> None:  # the master's runner
        assert kind == MESSAGE
        mine = self.granted.setdefault(client_id, set())
        for start, end, index, count in data["grants"]:
            mine.update(g for g in range(start, min(end, 10_000)) if g % count == index)
        self.post(client_id, kind, data)

    def deliver(self, everything: bool = False) -> None:
        held = []
        while self.queue and (everything or self.queue[0][0] <= self.now):
            item = heapq.heappop(self.queue)
            at, _, to, kind, data = item
            if to == "master":
                self.at_master(kind, data, at)
                continue
            worker = self.workers[to]
            if worker.state == "stalled":
                held.append(item)  # it reads its socket when it resumes
            elif worker.state == "alive":
                plan = Plan.from_message(data, current=worker.pacer.plan)
                if plan is not None:  # (the grants alone, of a run whose plan has not come yet: the next full one)
                    worker.pacer.apply(plan)
        for item in held:
            heapq.heappush(self.queue, item)

    def at_master(self, kind: str, data: dict, at: float) -> None:
        worker = data["from"]
        client = self.clients.get(worker)
        if kind == "heartbeat" and client is not None:
            client.heard = max(client.heard, at)  # (at the end, everything in flight arrives at once)
            client.state = "running"  # a missing worker heals with its next heartbeat
            self.conductor.heard(worker)
        elif kind == "ready":
            self.conductor.resend(worker)
        elif kind == "report":
            self.accounted.setdefault(worker, set()).update(data["fates"])
            self.conductor.reported(worker, data["progress"])
        elif kind == "return":
            self.conductor.hand_back(worker, data)
        elif kind == "quit":
            self.clients.pop(worker, None)

    # -- workers -----------------------------------------------------------------------------------------------

    def join(self) -> None:
        name = next(self._names)
        worker = Worker(name)
        worker.pacer = Pacer(clock=lambda: self.now, sleep=not_due, on_drop=worker.drop)
        worker.next_heartbeat = worker.next_report = self.now
        self.workers[name] = worker
        self.clients[name] = Client(name, heard=self.now)
        self.post("master", "ready", {"from": name})

    def report(self, worker: Worker, after: float = 0.0) -> None:
        epoch, run_id = worker.pacer.run
        fates, worker.reported = worker.fates[worker.reported :], len(worker.fates)
        worker.reports += 1
        progress = {
            "epoch": epoch,
            "run_id": run_id,
            "seq": worker.reports,
            "progress": progress_to_message(worker.pacer.progress()),
            "inflight": 0,
        }
        self.post("master", "report", {"from": worker.id, "fates": fates, "progress": progress}, after)

    def quit(self, worker: Worker) -> None:
        epoch, run_id, done = worker.pacer.close(final=True)
        data = {"from": worker.id, "epoch": epoch, "run_id": run_id, "progress": progress_to_message(done)}
        self.post("master", "return", data)
        self.report(worker, after=0.001)  # the final report, then Locust's "quit": in this order on one socket
        self.post("master", "quit", {"from": worker.id}, after=0.002)
        worker.state = "quit"

    def step_worker(self, worker: Worker) -> None:
        if worker.state == "stalled" and self.now >= worker.until:
            worker.state = "alive"
        if worker.state != "alive":
            return
        if self.now >= worker.next_heartbeat:
            self.post("master", "heartbeat", {"from": worker.id})
            worker.next_heartbeat += HEARTBEAT
        try:
            while (slot := worker.pacer.next_slot()) is not None:
                worker.sent.append(slot.number)
                worker.fates.append(slot.number)
        except NotDue:
            pass
        if self.now >= worker.next_report:
            self.report(worker)
            worker.next_report += REPORT

    # -- Locust's master ---------------------------------------------------------------------------------------

    def locust_liveness(self) -> None:
        for client in self.clients.values():
            if client.state == "running" and self.now - client.heard > MISSING_AFTER:
                client.state = "missing"


def run_sim(initial: int, actions: list[tuple[int, str, int, float]], delays: list[float]) -> Sim:
    sim = Sim(delays)
    for _ in range(initial):
        sim.join()
    sim.deliver(everything=True)  # connected before the run starts
    opts = parsed_options(
        steady_rps=20.0, burst_multiplier=3.0, burst_every=3, burst_duration=1, run_time=RUN_TIME, max_send_delay=1.0
    )
    plan = sim.conductor.begin(opts)
    end = plan.t0 + RUN_TIME + 3.0
    schedule = iter(actions)
    wait, action, target, seconds = next(schedule, (10**9, "", 0, 0.0))
    lease_every = round(LEASE_SECONDS / STEP)
    for step in itertools.count():
        sim.now = START + step * STEP
        if sim.now > end:
            break
        while wait <= 0:
            others = [w for w in sim.workers.values() if w.id != "w0" and w.state in ("alive", "stalled")]
            if action == "join":
                sim.join()
            elif action in ("quit", "kill") and others:
                victim = others[target % len(others)]  # w0 stays: someone is left to take the slots
                if action == "quit":
                    sim.quit(victim)
                else:
                    victim.state = "killed"
            elif action == "stall":
                victims = [w for w in sim.workers.values() if w.state == "alive"]
                if victims:
                    victim = victims[target % len(victims)]
                    victim.state, victim.until = "stalled", sim.now + seconds
            elif action == "step":
                sim.master_skew += seconds * (1 if target % 2 else -1) * 10  # the master's wall clock jumps
            wait, action, target, seconds = next(schedule, (10**9, "", 0, 0.0))
        wait -= 1
        sim.deliver()
        sim.locust_liveness()
        for worker in list(sim.workers.values()):
            sim.step_worker(worker)
        if step % lease_every == 0:
            sim.conductor.lease(resend=step % (lease_every * 10) == 0)
    # the end: every message arrives, every live worker sends (or drops) what is due and reports it
    sim.now = end + 5.0
    for _ in range(3):
        for worker in sim.workers.values():
            if worker.state == "stalled":
                worker.state = "alive"
        sim.deliver(everything=True)
        sim.locust_liveness()
        sim.conductor.lease(resend=True)
        sim.deliver(everything=True)
        for worker in sim.workers.values():
            sim.step_worker(worker)
            if worker.state == "alive":
                sim.report(worker)
        sim.deliver(everything=True)
    return sim


def check(sim: Sim) -> None:
    total = sim.conductor.plan.schedule.total_slots
    sent, dropped = {}, {}
    for worker in sim.workers.values():
        for g in worker.sent:
            assert g not in sent, f"slot {g} sent by {sent[g]} and {worker.id}"
            sent[g] = worker.id
        for g in worker.dropped:
            assert g not in dropped, f"slot {g} dropped twice"
            dropped[g] = worker.id
    assert not set(sent) & set(dropped), "a slot both sent and dropped"
    killed = [w for w in sim.workers.values() if w.state == "killed"]
    unaccounted = {w.id: sim.granted.get(w.id, set()) - sim.accounted.get(w.id, set()) for w in killed}
    for g in range(total):
        if g not in sent and g not in dropped:
            assert any(g in slots for slots in unaccounted.values()), f"slot {g} neither sent nor dropped"
    lost = {d.worker for d in sim.conductor.lost()}
    for worker in killed:
        bound, _ = sim.conductor.unaccounted(worker.id)
        mine = {g for g in unaccounted[worker.id] if g < total}
        assert len(mine) <= bound, f"{worker.id}: {len(mine)} slots unaccounted, bound {bound}"
        assert worker.id in lost
    assert sim.conductor.ledger.frontier == total


ACTIONS = st.lists(
    st.tuples(
        st.integers(0, 60),
        st.sampled_from(["join", "quit", "kill", "stall", "step"]),
        st.integers(0, 7),
        st.floats(0.05, 2.5),
    ),
    max_size=8,
)
DELAYS = st.lists(st.floats(0.0, 1.5), min_size=1, max_size=12)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(initial=st.integers(1, 3), actions=ACTIONS, delays=DELAYS)
def test_every_slot_is_sent_once_or_counted_dropped_whatever_joins_leaves_and_delays(initial, actions, delays):
    check(run_sim(initial, actions, delays))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=ACTIONS, delay=st.floats(0.0, 0.02))
def test_on_a_fast_network_nothing_is_dropped_unless_a_worker_stalled(actions, delay):
    sim = run_sim(2, actions, [delay])
    check(sim)
    stalled = any(a == "stall" for _, a, _, _ in actions)
    killed = any(w.state == "killed" for w in sim.workers.values())
    if not stalled and not killed:
        assert not any(w.dropped for w in sim.workers.values())


def test_a_killed_worker_is_replaced_within_1_2_s_and_its_bound_covers_its_share_until_then():
    # two workers; w1 dies 3 s into the run (the burst: 60/s, 30/s each); messages take 5 ms
    sim = run_sim(2, [(round(3.8 / STEP), "kill", 0, 0.0)], [0.005])
    check(sim)
    killed_at = START + round(3.8 / STEP) * STEP
    plan, sent = sim.conductor.plan, set(sim.workers["w0"].sent)
    total = plan.schedule.total_slots

    def due(g: int) -> float:
        return plan.t0 + plan.schedule.slot(g)[0]

    later = [g for g in range(total) if due(g) >= killed_at + 1.2]
    assert later and all(g in sent for g in later)  # w0 sends every slot due from 1.2 s after the kill
    bound, reported_at = sim.conductor.unaccounted("w1")
    assert reported_at is not None
    # at least its share from its last report to its death, at most until the others took over, 1.2 s after it
    # (0.5 s of silence, the next lease, at most 0.5 s granted ahead)
    mine = [g for g in range(total) if g % 2 and due(g) >= plan.t0 + reported_at - STEP]
    assert len([g for g in mine if due(g) < killed_at]) <= bound <= len([g for g in mine if due(g) < killed_at + 1.2])
