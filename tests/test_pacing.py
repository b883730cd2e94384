import dataclasses

import gevent
from hypothesis import given, settings
from hypothesis import strategies as st

from rlsuite.pacing import Pacer, Turn
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
    a = Pacer(t.clock, t.sleep, on_drop=lambda mode, slots: dropped.extend([mode] * len(slots)))
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
    pacer = Pacer(t.clock, t.sleep, on_drop=lambda mode, slots: dropped.extend([mode] * len(slots)))
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


# -- dropping late slots in one step, sending the slots of one wake-up together ---------------------------------


class Drops:
    def __init__(self) -> None:
        self.calls: list[tuple[str, range]] = []

    def __call__(self, mode: str, slots: range) -> None:
        self.calls.append((mode, slots))

    def per_mode(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for mode, slots in self.calls:
            out[mode] = out.get(mode, 0) + len(slots)
        return out

    def slots(self) -> list[int]:
        return [g for _, slots in self.calls for g in slots]


def test_late_slots_across_a_stage_boundary_are_dropped_in_one_step_counted_per_mode():
    # steady 10/s over 0-3 s (slots 0-29), burst 30/s over 3-4 s (30-59): at 1004.5, the slots due before 1003.5
    # are more than 1 s late: 30 steady and 15 burst; slot 45 (due 1003.5, exactly 1 s late) is sent
    schedule = Schedule(10, 3, 3, 1, run_time=5)
    t, drops = FakeTime(1004.5), Drops()
    pacer = Pacer(t.clock, t.sleep, on_drop=drops)
    pacer.apply(dataclasses.replace(plan(), schedule=schedule))
    first = pacer.next_slot()
    assert first.number == 45 and first.mode == BURST and first.due == 1003.5
    assert drops.calls == [(STEADY, range(0, 30)), (BURST, range(30, 45))]  # one call per mode, not per slot
    assert pacer.progress() == {(0, 0, 1): 46}
    # the same at another worker holding every third slot from 1 on: its own slots only, exactly as many
    t, drops = FakeTime(1004.5), Drops()
    pacer = Pacer(t.clock, t.sleep, on_drop=drops)
    pacer.apply(dataclasses.replace(plan(grants=[share(1, 3)]), schedule=schedule))
    assert pacer.next_slot().number == 46
    assert drops.calls == [(STEADY, range(1, 30, 3)), (BURST, range(31, 46, 3))]


def reference_run(p: Plan, start: float, stalls: list[float], batch: float) -> tuple[list[int], dict[str, list[int]]]:
    """What the pacer did before slots were dropped in one step: one slot at a time, each judged on its own."""
    now = start
    done = [[s, e, i, c, s] for s, e, i, c in p.grants]
    sent: list[int] = []
    dropped: dict[str, list[int]] = {}
    for stall in stalls:
        while True:
            heads = [(first_in(tuple(g[:4]), g[4]), g) for g in done]
            heads = [(n, g) for n, g in heads if n is not None]
            if not heads:
                return sent, dropped
            number, grant = min(heads)
            due = p.schedule.slot(number)
            if due is None:
                return sent, dropped
            at = p.t0 + due[0]
            delay = at - now
            if delay > batch or (delay > 0 and int(at) != int(now)):
                now += delay
                continue
            grant[4] = number + 1
            if p.max_delay and -delay > p.max_delay:
                dropped.setdefault(due[1], []).append(number)
                continue
            sent.append(number)
            break
        now += stall
    return sent, dropped


@settings(max_examples=200, deadline=None)
@given(
    rate=st.sampled_from([7.0, 10.0, 33.3, 250.0]),
    multiplier=st.sampled_from([1.0, 2.5, 4.0]),
    grants=st.sampled_from([[share(0, 1)], [share(1, 3)], [share(0, 2, end=40), share(1, 2, start=7)]]),
    max_delay=st.sampled_from([0.0, 0.25, 1.0]),
    start=st.floats(999.0, 1006.0),
    stalls=st.lists(st.floats(0.0, 2.5), min_size=1, max_size=40),
)
def test_slots_dropped_in_one_step_are_exactly_those_dropped_one_by_one(
    rate, multiplier, grants, max_delay, start, stalls
):
    """Whatever the stalls (every user busy for a while): the same slots sent, the same dropped, per mode; none
    both, none twice."""
    p = dataclasses.replace(
        plan(grants=grants), schedule=Schedule(rate, multiplier, 2, 1, run_time=7), max_delay=max_delay
    )
    t, drops = FakeTime(start), Drops()
    pacer = Pacer(t.clock, t.sleep, on_drop=drops)
    pacer.apply(p)
    sent = []
    for stall in stalls:
        slot = pacer.next_slot()
        if slot is None:
            break
        assert t.now >= slot.due - pacer.batch
        sent.append(slot.number)
        t.now += stall
    ref_sent, ref_dropped = reference_run(p, start, stalls, pacer.batch)
    assert sent == ref_sent
    assert {mode: len(slots) for mode, slots in ref_dropped.items()} == drops.per_mode()
    assert sorted(drops.slots()) == sorted(g for slots in ref_dropped.values() for g in slots)
    assert len(set(drops.slots())) == len(drops.slots()) and not set(drops.slots()) & set(sent)
    for mode, slots in drops.calls:
        assert all(p.schedule.slot(g)[1] == mode for g in slots)


def test_slots_due_within_the_batch_window_go_out_with_one_wake_up_never_earlier():
    t = FakeTime(999.0)
    wake_ups = []

    def sleep(seconds: float) -> None:
        wake_ups.append(seconds)
        t.sleep(seconds)

    pacer = Pacer(t.clock, sleep, batch=0.001)
    pacer.apply(dataclasses.replace(plan(), schedule=Schedule(4000, 1, 3, 0, run_time=0.5)))
    slots = []
    while (slot := pacer.next_slot()) is not None:
        assert t.now >= slot.due - 0.001  # never earlier than its due time minus the window
        assert t.now <= slot.due or t.now == slots[-1].due  # early only when a wake-up for an earlier one lasts
        slots.append(slot)
    assert len(slots) == 2000
    # 4,000/s in 1 ms windows: 4 or 5 slots per wake-up (0, .25, .5, .75 and 1.0 ms after it, as rounding has it)
    assert 400 <= len(wake_ups) <= 500
    assert [s.due for s in slots[:3]] == [1000.0, 1000.00025, 1000.0005]  # the due times are the schedule's
    assert all(int(s.due) == 1000 for s in slots)  # (the run is the second 1000-1001)


def test_no_slot_goes_out_in_the_second_before_its_own():
    """Requests are counted by start second: a slot due at a whole second waits for it, however close."""
    t = FakeTime(1000.9995)
    pacer = Pacer(t.clock, t.sleep, batch=0.001)
    pacer.apply(
        dataclasses.replace(plan(grants=[share(0, 1, start=20)]), schedule=Schedule(10, 1, 3, 0, run_time=5), t0=999.0)
    )
    first = pacer.next_slot()  # slot 20 is due at 1001.0, 0.5 ms away but in the next second
    assert first.number == 20 and t.now == 1001.0


def test_a_change_of_plan_wakes_the_user_waiting_for_the_next_slot():
    import time

    import gevent

    pacer = Pacer()  # the real clock and the pacer's own timed wait
    pacer.apply(plan(t0=time.time() + 60))  # slot 0 is a minute away
    waiting = gevent.spawn(pacer.next_slot)
    for _ in range(100):
        if pacer._waiter is not None:
            break
        gevent.sleep(0)
    assert pacer._waiter is not None  # in its timed wait
    pacer.close()  # the run stops
    assert waiting.get(timeout=5) is None  # woken at once, with no slot
    pacer.apply(plan(version=2, run_id=2, t0=time.time() - 0.0005))  # the next run: slot 0 is due
    assert pacer.next_slot().number == 0


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


def test_the_turn_goes_to_the_user_that_queued_last_and_not_to_one_killed_while_queued():
    turn = Turn()
    order: list[str] = []

    def user(name: str) -> None:
        with turn:
            order.append(name)
            gevent.sleep(0.01)  # waits for its slot, holding the turn

    first = gevent.spawn(user, "first")
    gevent.sleep(0)  # first holds the turn
    queued = {name: gevent.spawn(user, name) for name in ("a", "b", "c", "d")}
    gevent.sleep(0)  # a, b, c, d queue in that order
    queued["c"].kill()  # Locust stops a user that waits for the turn
    gevent.joinall([first, *queued.values()], timeout=2)
    assert order == ["first", "d", "b", "a"]
    assert not turn._held and not turn._waiting  # free again
