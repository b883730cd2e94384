import dataclasses

from rlsuite.pacing import Pacer
from rlsuite.plan import Plan
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


def plan(version=1, share=(0, 1), run_id=1, t0=1000.0, share_from=0):
    return Plan(run_id, version, t0, SCHEDULE, TARGETS, *share, share_from=share_from)


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


def test_two_workers_interleave_and_together_send_every_slot_once():
    slots = []
    for index in (0, 1):
        t = FakeTime(999.0)
        pacer = Pacer(t.clock, t.sleep)
        pacer.apply(plan(share=(index, 2)))
        slots += drain(pacer)
    assert sorted(s.number for s in slots) == list(range(60))


def test_a_worker_joining_mid_run_starts_where_the_master_split_the_run():
    t = FakeTime(1002.3)  # the plan arrived 0.25 s after the split: the slots due since are sent at once, not lost
    pacer = Pacer(t.clock, t.sleep)
    pacer.apply(plan(share=(1, 2), share_from=21))
    assert [pacer.next_slot().number for _ in range(2)] == [21, 23]
    assert t.now == 1002.3  # slots 21 and 23 were already due: sent at once
    assert pacer.next_slot().number == 25 and t.now == 1002.5


def test_a_resplit_mid_run_sends_every_slot_exactly_once():
    t_a, t_b = FakeTime(999.0), FakeTime(999.0)
    a, b = Pacer(t_a.clock, t_a.sleep), Pacer(t_b.clock, t_b.sleep)
    a.apply(plan(version=1))
    sent = [a.next_slot().number for _ in range(20)]  # alone up to slot 19
    # the master splits from slot 25 on; b joins with the other half and a keeps every slot until then
    a.apply(plan(version=2, share=(0, 2), share_from=25))
    b.apply(plan(version=2, share=(1, 2), share_from=25))
    from_a, from_b = [s.number for s in drain(a)], [s.number for s in drain(b)]
    assert from_a[:6] == [20, 21, 22, 23, 24, 26] and from_b[:2] == [25, 27]
    assert sorted(sent + from_a + from_b) == list(range(60))


def test_a_resplit_message_arriving_late_switches_at_once_without_repeating():
    t = FakeTime(999.0)
    a = Pacer(t.clock, t.sleep)
    a.apply(plan(version=1))
    assert [a.next_slot().number for _ in range(25)][-1] == 24  # sent slots 0-24, past the split at 22
    a.apply(plan(version=2, share=(0, 2), share_from=22))
    assert a.next_slot().number == 26  # not 22 or 24 again


def test_old_or_repeated_plans_are_ignored_and_a_resplit_takes_over():
    t = FakeTime(999.0)
    pacer = Pacer(t.clock, t.sleep)
    assert pacer.apply(plan(version=5))
    assert not pacer.apply(plan(version=5))
    assert not pacer.apply(plan(version=4, share=(1, 2)))  # a late message from before: harmless
    assert pacer.plan.share_count == 1
    pacer.next_slot()
    pacer.next_slot()
    assert pacer.apply(plan(version=6, share=(1, 3), share_from=1))  # re-split: continue with our new share
    assert pacer.next_slot().number == 4  # slots 0 and 1 were sent; 4 is the next of ours


def test_cleared_pacer_waits_and_accepts_the_next_run():
    t = FakeTime(999.0)
    pacer = Pacer(t.clock, t.sleep)
    pacer.apply(plan(version=9))
    pacer.clear()
    assert pacer.next_slot() is None
    assert pacer.apply(plan(version=1, run_id=2))  # a restarted master counts versions from scratch


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
