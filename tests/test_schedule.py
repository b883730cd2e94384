import itertools
import math

import pytest

from rlsuite.schedule import BURST, STEADY, Schedule

S = Schedule(steady_rps=100, burst_multiplier=3, burst_every=10, burst_duration=4, run_time=30)


def test_stages_alternate_steady_first_and_bursts_start_every_period():
    stages = [(s.mode, s.start, s.end, s.rps) for s in S.stages()]
    assert stages == [
        (STEADY, 0, 10, 100),
        (BURST, 10, 14, 300),
        (STEADY, 14, 20, 100),
        (BURST, 20, 24, 300),
        (STEADY, 24, 30, 100),
    ]


@pytest.mark.parametrize(("elapsed", "mode"), [(0, STEADY), (9.999, STEADY), (10, BURST), (13.9, BURST), (14, STEADY)])
def test_stage_at_boundaries(elapsed, mode):
    assert S.stage_at(elapsed).mode == mode


def test_last_stage_is_clipped_at_run_time():
    s = Schedule(100, 3, 10, 4, run_time=12)
    assert [(x.mode, x.start, x.end) for x in s.stages()] == [(STEADY, 0, 10), (BURST, 10, 12)]


def test_offered_is_the_integral_of_the_rate():
    assert S.offered(10) == pytest.approx(1000)
    assert S.offered(14) == pytest.approx(1000 + 1200)
    assert S.offered(30) == pytest.approx(100 * 22 + 300 * 8)
    assert S.offered(99) == S.offered(30)  # nothing after the end
    assert S.total_slots == 4600


def test_every_slot_is_due_where_the_integral_reaches_it_and_in_the_right_mode():
    for g in range(0, S.total_slots, 7):
        t, mode = S.slot(g)
        assert S.offered(t) == pytest.approx(g, abs=1e-6)
        assert S.stage_at(t).mode == mode
    assert S.slot(S.total_slots) is None


def test_slots_are_evenly_spaced_within_a_stage():
    times = [S.slot(g)[0] for g in range(1000, 1010)]  # first burst
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(times)}
    assert gaps == {round(1 / 300, 9)}


def test_endless_run_and_no_bursts():
    endless = Schedule(50, 2, 5, 0, run_time=None)
    assert endless.total_slots is None
    assert endless.stage_at(1e6).mode == STEADY and endless.stage_at(1e6).end == math.inf
    assert endless.slot(10**6) == (20000.0, STEADY)


def test_first_slot_at_and_mode_seconds():
    assert S.first_slot_at(0) == 0
    assert S.first_slot_at(10.5) == 1150
    assert S.mode_seconds(30) == {STEADY: 22, BURST: 8}
    assert S.mode_seconds(12) == {STEADY: 10, BURST: 2}
