import dataclasses

from rlsuite.pacing import Pacer
from rlsuite.plan import UNBOUNDED, Ledger, Plan, count_in, first_in
from rlsuite.schedule import BURST, STEADY, Schedule
from rlsuite.targets import Targets, parse_nodes


class FakeTime:
    def __init__(self, now: float) -> None:
        self.now = now

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


TARGETS = Targets(parse_nodes("http://127.0.0.1:1,http://127.0.0.1:2,http://127.0.0.1:3"), "/x", frozenset({429}), 1.0)
SCHEDULE = Schedule(10, 2, 3, 1, run_time=5)  # steady 0-3 s at 10/s, burst 3-4 s at 20/s, steady 4-5 s


def plan(version=1, grants=((0, UNBOUNDED, 0, 1),), run_id=1, t0=1000.0, epoch="m1"):
    return Plan(run_id, version, t0, SCHEDULE, TARGETS, tuple(grants), epoch=epoch)


def share(index, count, start=0, end=UNBOUNDED):
    return (start, end, index, count)


def drain(pacer, limit=1000):
    out = []
    while (slot := pacer.next_slot()) is not None and len(out) < limit:
        out.append(slot)
    return out


def test_slots_are_sent_at_their_due_time_in_round_robin_with_modes():
    t = FakeTime(999.5)
    pacer = Pacer(t.clock, t.sleep)
    assert pacer.next_slot() is None  # no plan yet
    pacer.apply(plan())
    slots = drain(pacer)
    assert len(slots) == 60  # 4 s x 10 + 1 s x 20
    assert [s.due for s in slots[:3]] == [1000.0, 1000.1, 1000.2]
    assert [s.node.name for s in slots[:4]] == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:1"]
    assert [s.mode for s in slots].count(BURST) == 20
    assert slots[29].mode == STEADY and slots[30].mode == BURST and slots[30].due == 1003.0
    assert t.now == slots[-1].due  # slept exactly until each slot was due, never ahead
    assert all(s.url.endswith("/x") for s in slots)
    assert pacer.taken == 60


def test_two_workers_interleave_and_together_send_every_slot_once():
    slots = []
    for index in (0, 1):
        t = FakeTime(999.0)
        pacer = Pacer(t.clock, t.sleep)
        pacer.apply(plan(grants=[share(index, 2)]))
        slots += drain(pacer)
    assert sorted(s.number for s in slots) == list(range(60))


def test_a_worker_joining_mid_run_starts_at_its_first_granted_slot():
    t = FakeTime(1002.3)  # the plan arrived 0.25 s after slot 21 was due: the slots due since are sent at once
    pacer = Pacer(t.clock, t.sleep)
    pacer.apply(plan(grants=[share(1, 2, start=21)]))
    assert [pacer.next_slot().number for _ in range(2)] == [21, 23]
    assert t.now == 1002.3  # slots 21 and 23 were already due: sent at once
    assert pacer.next_slot().number == 25 and t.now == 1002.5


def test_a_resplit_mid_run_sends_every_slot_exactly_once():
    t_a, t_b = FakeTime(999.0), FakeTime(999.0)
    a, b = Pacer(t_a.clock, t_a.sleep), Pacer(t_b.clock, t_b.sleep)
    a.apply(plan(version=1, grants=[share(0, 1, end=25)]))  # a alone holds slots 0-24
    sent = [a.next_slot().number for _ in range(20)]
    # b joins: the master splits the slots it had not granted yet, from 25 on; a keeps every slot it holds
    a.apply(plan(version=2, grants=[share(0, 1, end=25), share(0, 2, start=25)]))
    b.apply(plan(version=3, grants=[share(1, 2, start=25)]))
    from_a, from_b = [s.number for s in drain(a)], [s.number for s in drain(b)]
    assert from_a[:6] == [20, 21, 22, 23, 24, 26] and from_b[:2] == [25, 27]
    assert sorted(sent + from_a + from_b) == list(range(60))


def test_without_a_grant_for_the_next_slot_the_pacer_waits_for_the_next_plan():
    t = FakeTime(999.0)
    a = Pacer(t.clock, t.sleep)
    a.apply(plan(version=1, grants=[share(0, 1, end=5)]))
    assert [s.number for s in drain(a)] == [0, 1, 2, 3, 4]
    changed = a.changed
    assert a.next_slot() is None and not changed.is_set()  # slot 5 is not granted (yet): nothing to send
    a.apply(plan(version=2, grants=[share(0, 1, end=5), share(0, 1, start=5, end=10)]))
    assert changed.is_set()  # the waiting users wake
    assert a.next_slot().number == 5


def test_a_plan_arriving_late_sends_its_past_due_slots_late_or_drops_them_never_twice():
    t = FakeTime(999.0)
    dropped = []
    a = Pacer(t.clock, t.sleep, on_drop=dropped.append)
    a.apply(plan(version=1, grants=[share(0, 1, end=10)]))
    assert [s.number for s in drain(a)] == list(range(10))
    t.now = 1002.5  # the next grant reaches it 1.6 s after slot 10 was due
    a.apply(plan(version=2, grants=[share(0, 1, end=10), share(0, 2, start=10)]))
    first = a.next_slot()
    assert first.number == 16 and first.due == 1001.6  # 0.9 s late: sent; 10, 12 and 14 were more than 1 s late
    assert dropped == ["steady"] * 3


def test_old_or_repeated_plans_are_ignored_and_a_newer_one_takes_over():
    t = FakeTime(999.0)
    pacer = Pacer(t.clock, t.sleep)
    assert pacer.apply(plan(version=5, grants=[share(0, 1, end=2)]))
    assert not pacer.apply(plan(version=5))
    assert not pacer.apply(plan(version=4, grants=[share(1, 2)]))  # a late message from before: harmless
    assert pacer.plan.grants == (share(0, 1, end=2),)
    pacer.next_slot()
    pacer.next_slot()
    assert pacer.apply(plan(version=6, grants=[share(0, 1, end=2), share(1, 3, start=2)]))
    assert pacer.next_slot().number == 4  # slots 0 and 1 were sent; 4 is the next of ours


def test_a_closed_run_refuses_its_later_plans_and_a_new_run_or_master_is_adopted():
    t = FakeTime(999.0)
    pacer = Pacer(t.clock, t.sleep)
    pacer.apply(plan(version=9))
    pacer.next_slot()
    assert pacer.close() == ("m1", 1, {(0, 0, 1): 1})  # slot 0 of its one grant was sent, 1 on never
    assert pacer.next_slot() is None
    assert not pacer.apply(plan(version=10))  # the same run, granted again (a message in flight): refused
    assert pacer.close() == ("m1", 1, {(0, 0, 1): 1})  # still: nothing was sent since
    assert pacer.apply(plan(version=11, run_id=2))  # the next run
    pacer.clear()
    assert pacer.apply(plan(version=1, run_id=1, epoch="m2"))  # a restarted master counts versions from scratch
    assert pacer.next_slot().number == 0


def test_a_wall_clock_step_on_the_master_does_not_freeze_workers():
    """Versions come from a counter: whatever the master's clock does, its next plan is newer."""
    t = FakeTime(999.0)
    pacer = Pacer(t.clock, t.sleep)
    for version in range(1, 5):
        assert pacer.apply(plan(version=version, grants=[share(0, 1, end=version * 10)]))
    assert len(drain(pacer)) == 40


def test_slots_later_than_max_delay_are_dropped_and_counted_not_sent():
    t = FakeTime(1002.5)  # every user was busy: slots due before 1001.5 are more than 1 s late
    dropped = []
    pacer = Pacer(t.clock, t.sleep, on_drop=dropped.append)
    pacer.apply(plan())
    first = pacer.next_slot()
    assert first.number == 15 and first.due == 1001.5  # exactly 1 s late: still sent (late)
    assert dropped == ["steady"] * 15
    never = Pacer(FakeTime(1002.5).clock, t.sleep)
    never.apply(dataclasses.replace(plan(), max_delay=0))  # 0 = never drop: catch up instead
    assert never.next_slot().number == 0


def test_a_user_stopped_while_waiting_holds_no_slot():
    """Locust kills users on ramp-down or rebalancing: a slot is taken only when due, so none is lost with them."""
    import time

    import gevent

    pacer = Pacer()  # the real clock and gevent.sleep
    pacer.apply(plan(t0=time.time() + 0.3))
    waiting = gevent.spawn(pacer.next_slot)
    gevent.sleep(0.05)
    waiting.kill()
    assert pacer.next_slot().number == 0  # the killed user's slot is still there


# -- the ledger: who holds which slot --------------------------------------------------------------------------


def test_segment_arithmetic():
    assert (
        first_in((10, 20, 1, 3), 0) == 10
        and first_in((10, 20, 1, 3), 11) == 13
        and first_in((10, 20, 1, 3), 20) is None
    )
    assert count_in((10, 20, 1, 3), 0) == 4  # 10, 13, 16, 19
    assert count_in((0, 7, 0, 1), 3) == 4 and count_in((0, 100, 5, 6), 0, 6) == 1


def test_the_ledger_grants_each_slot_once_and_hands_back_what_a_quitting_worker_did_not_send():
    ledger = Ledger(end=100)
    assert ledger.extend(["a"], 10) == {"a"}
    assert ledger.extend(["a", "b"], 20) == {"a", "b"}
    assert ledger.extend(["a", "b"], 30) == {"a", "b"}  # the same split, continued: one grant each
    assert ledger.grants("a") == ((0, 10, 0, 1), (10, 30, 0, 2)) and ledger.grants("b") == ((10, 30, 1, 2),)
    assert ledger.unsent("b", {(10, 1, 2): 21}) == 5  # 21, 23, ..., 29
    assert ledger.hand_back("b", {(10, 1, 2): 21}, ["a", "c"]) == {"a", "c"}  # b sent 11-19; 21-29 go to a and c
    assert ledger.grants("b") == ((10, 21, 1, 2),)
    assert ledger.grants("a")[-1] == (21, 30, 1, 4) and ledger.grants("c") == ((21, 30, 3, 4),)  # 21, 25, 29 / 23, 27
    assert ledger.extend(["a", "b", "c"], 40) == {"a", "c"}  # b handed back: never granted again
    owners = {}
    for worker in ("a", "b", "c"):
        for seg in ledger.grants(worker):
            for g in range(seg[0], seg[1]):
                if g % seg[3] == seg[2]:
                    assert g not in owners
                    owners[g] = worker
    assert sorted(owners) == list(range(40))
    assert ledger.extend(["a"], 1000) == {"a"} and ledger.frontier == 100  # never past the run's last slot


def test_a_grant_that_comes_late_is_sent_from_its_start_and_progress_survives_extensions():
    """Slots handed back by a worker that quit lie behind this worker's own progress: they are still sent."""
    t = FakeTime(999.0)
    a = Pacer(t.clock, t.sleep)
    a.apply(plan(version=1, grants=[share(0, 2, end=20)]))
    assert [a.next_slot().number for _ in range(5)] == [0, 2, 4, 6, 8]  # t = 999.8
    # the worker holding the odd slots quit after sending 1-5: 7 and up come to us, with our own share extended
    a.apply(plan(version=2, grants=[share(0, 2, end=30), share(1, 2, start=7, end=20)]))
    assert [a.next_slot().number for _ in range(6)] == [7, 9, 10, 11, 12, 13]  # 7 and 9 late, at once
    assert a.progress() == {(0, 0, 2): 13, (7, 1, 2): 14}  # 12 and 13 were the last of each


def test_plan_messages_round_trip_in_full_or_as_grants_only():
    full = plan(version=3, grants=[share(1, 2, start=10, end=50)])
    again = Plan.from_message(full.to_message(sent_at=999.0), clock_offset=0.25)
    assert again == dataclasses.replace(full, t0=full.t0 + 0.25)
    grants_only = plan(version=4, grants=[share(1, 2, start=10, end=70)]).to_message(999.1, full=False)
    assert "nodes" not in grants_only and "schedule" not in grants_only
    assert Plan.from_message(grants_only, current=again) == dataclasses.replace(
        again, version=4, grants=(share(1, 2, start=10, end=70),)
    )
    assert Plan.from_message(grants_only) is None  # no plan of that run here yet: the next full message brings it
    assert Plan.from_message(grants_only, current=plan(run_id=2)) is None
