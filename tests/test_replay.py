"""The replay on synthetic timelines: each request's start, time in flight and outcome, judged against a model.

Reference limiters (tests/limiter_refs.py) decide made-up traffic at made-up moments inside each request's time in
flight, with clocks off by up to the allowance; the replay must never call a correct limiter wrong, and must catch
the broken ones the traffic can reveal.
"""

from __future__ import annotations

import random

import pytest

from rlsuite.models import Spec
from rlsuite.replay import ADMITTED, BURST_FLAG, LIMITED, UNKNOWN, UNSENT, Replay, event_code
from tests import limiter_refs as refs

T0 = 1_000_000.0  # a whole second (fixed windows align to the epoch)
SKEW = 0.005


def replay(spec: Spec, events: list[tuple], scope: str = "global", skew: float = SKEW) -> Replay:
    """events: (start offset, duration, code[, node[, key]])."""
    rp = Replay([(spec, scope, "declared")], skew, T0)
    flat: list = []
    for ev in events:
        start, duration, code, *rest = ev
        node, key = [*rest, 0, 0][:2]
        flat += [T0 + start, duration, code, node, key]
    rp.add(flat)
    rp.finish()
    return rp


def over(rp: Replay) -> int:
    return sum(rp.declared.tally.over.values())


def under(rp: Replay) -> int:
    return sum(rp.declared.tally.under.values())


def back_to_back(at: float, n: int, code: int = ADMITTED, gap: float = 0.001, node: int = 0) -> list[tuple]:
    return [(at + i * gap, 0.0005, code, node) for i in range(n)]


# -- boundary bursts, GCRA, skew ---------------------------------------------------------------------------------


def test_two_limits_across_a_fixed_window_edge_fit_a_fixed_window_but_not_a_sliding_log():
    # limit 10 per 1 s: 10 admitted just before the edge at 1.0 s and 10 just after it
    events = back_to_back(0.95, 10, gap=0.003) + back_to_back(1.02, 10, gap=0.003)
    assert over(replay(Spec("fixed-window", 10, 1.0, alignment="epoch"), events)) == 0
    assert over(replay(Spec("fixed-window", 10, 1.0, alignment="any"), events)) == 0
    log = replay(Spec("sliding-log", 10, 1.0), events)
    assert over(log) == 10  # the least number of admissions that must go for the history to fit
    assert log.declared.tally.first_over.at == pytest.approx(1.02 - SKEW)


def test_the_same_burst_inside_one_epoch_window_over_admits():
    events = back_to_back(0.2, 20, gap=0.01)
    assert over(replay(Spec("fixed-window", 10, 1.0, alignment="epoch"), events)) == 10


def test_gcra_admits_burst_plus_one_at_once_then_one_per_emission_interval():
    # redis-cell `max_burst 4, 10 per 1 s` admits 5 at once then one every 0.1 s: a token bucket of capacity 5
    events = back_to_back(0.0, 5) + [(0.1 * i + 0.005, 0.0005, ADMITTED) for i in range(1, 11)]
    assert over(replay(Spec("token-bucket", 10, 1.0, burst=5), events)) == 0
    # declared with capacity 4, the fifth request at once cannot fit
    assert over(replay(Spec("token-bucket", 10, 1.0, burst=4), events)) == 1


def test_a_request_limited_while_the_bucket_had_room_is_under_admission():
    spec = Spec("token-bucket", 10, 1.0, burst=5)
    # capacity 5, rate 10/s: however empty the bucket was before the run, 1.2 s after the 5 admissions it is
    # full again, so a 429 then is wrong
    rp = replay(spec, [*back_to_back(0.0, 5), (1.2, 0.0005, LIMITED)])
    assert under(rp) == 1 and rp.declared.tally.first_under.at == pytest.approx(1.2 - SKEW)
    # the same 429 0.3 s after them: 3 tokens if the bucket was full before the run, none if it was empty
    assert under(replay(spec, [*back_to_back(0.0, 5), (0.3, 0.0005, LIMITED)])) == 0
    # a 429 on the very first request: what came before the run is unknown
    assert under(replay(spec, [(0.0, 0.0005, LIMITED)])) == 0


@pytest.mark.parametrize(
    ("clock_offset", "allowance", "expected_over"),
    [(0.004, 0.005, 0), (0.03, 0.005, 10), (0.03, 0.04, 0)],
)
def test_a_limiter_clock_off_by_less_than_the_allowance_passes_and_beyond_it_fails(
    clock_offset, allowance, expected_over
):
    # 10 requests mid-window, then 10 at 0.970-0.975 s. A limiter clock 30 ms ahead of ours puts the last 10 in its
    # next window and admits them: on our clock that is 20 in the window ending at 1.0 s.
    limiter = refs.FixedWindow(10, 1.0)
    events = []
    for i in range(20):
        start = 0.5 + i * 0.01 if i < 10 else 0.97 + (i - 10) * 0.0005
        ok = limiter.hit(T0 + start + clock_offset)
        events.append((start, 0.0005, ADMITTED if ok else LIMITED))
    assert sum(code == ADMITTED for _, _, code in events) == (20 if clock_offset > 0.03 - 1e-9 else 10)
    rp = replay(Spec("fixed-window", 10, 1.0, alignment="epoch"), events, skew=allowance)
    assert over(rp) == expected_over


def test_requests_that_never_reached_the_limiter_are_not_counted_and_unknown_ones_count_only_when_strict():
    spec = Spec("sliding-log", 3, 1.0)
    # 3 errors of unknown fate, then a 429: the errors may have filled the window, so the 429 is not wrong
    events = [(1.5 + 0.01 * i, 0.0005, UNKNOWN) for i in range(3)] + [(1.6, 0.0005, LIMITED)]
    assert under(replay(spec, [(0.0, 0.0005, ADMITTED), *events])) == 0
    # refused connections never reached it: the 429 had room
    events = [(1.5 + 0.01 * i, 0.0005, UNSENT) for i in range(3)] + [(1.6, 0.0005, LIMITED)]
    assert under(replay(spec, [(0.0, 0.0005, ADMITTED), *events])) == 1


def test_a_slow_admission_is_counted_but_not_judged():
    spec = Spec("sliding-log", 2, 1.0)
    rp = replay(spec, [(0.0, 0.0005, ADMITTED), (0.01, 0.5, ADMITTED), (0.02, 0.0005, ADMITTED)])
    assert over(rp) == 0 and rp.declared.unjudged == 1


def test_disagreements_are_counted_per_mode():
    spec = Spec("fixed-window", 2, 1.0, alignment="epoch")
    rp = replay(spec, back_to_back(0.1, 3) + back_to_back(1.1, 4, code=ADMITTED | BURST_FLAG))
    assert rp.declared.tally.over == {"steady": 1, "burst": 2}


def test_events_reported_out_of_order_replay_in_start_order():
    spec = Spec("sliding-log", 2, 1.0)
    rp = Replay([(spec, "global", "declared")], SKEW, T0)
    rp.add([T0 + 0.3, 0.0005, ADMITTED, 0, 0])
    rp.add([T0 + 0.1, 0.0005, ADMITTED, 1, 0, T0 + 0.2, 0.0005, LIMITED, 2, 0])
    rp.advance(T0 + 0.25)
    assert rp.replayed == 2
    rp.add([T0 + 0.05, 0.0005, ADMITTED, 0, 0])  # too late: its time was replayed
    rp.finish()
    assert rp.replayed == 3 and rp.stragglers == 1 and over(rp) == 0


def test_per_node_scope_judges_each_node_alone():
    events = [(0.01 * i, 0.0005, ADMITTED, i % 2) for i in range(20)]
    assert over(replay(Spec("sliding-log", 10, 1.0), events, scope="per-node")) == 0
    assert over(replay(Spec("sliding-log", 10, 1.0), events, scope="global")) == 10


def test_keys_are_separate_partitions_and_memory_stays_bounded():
    spec = Spec("sliding-log", 5, 1.0)
    rp = Replay([(spec, "global", "declared")], SKEW, T0)
    rnd = random.Random(1)
    for second in range(60):
        flat: list = []
        for i in range(1000):
            flat += [T0 + second + i / 1000, 0.0005, ADMITTED if rnd.random() < 0.5 else LIMITED, i % 3, i % 200]
        rp.add(flat)
        rp.advance(T0 + second + 0.5)
    rp.finish()
    held = sum(len(p.model.log) + len(p.model.counts) + len(p.pending or ()) for p in rp.declared.partitions.values())
    assert len(rp.declared.partitions) == 200
    assert held <= 200 * 12  # a window's worth per key, whatever the run's length


# -- correct limiters never fail, broken ones are caught ---------------------------------------------------------

L, W = 20, 1.0
CORRECT = {
    "token-bucket": (Spec("token-bucket", L, W), lambda: refs.TokenBucket(L, L / W)),
    "token-bucket burst 5": (Spec("token-bucket", L, W, burst=5), lambda: refs.TokenBucket(5, L / W)),
    "leaky-bucket burst 3": (Spec("leaky-bucket", L, W, burst=3), lambda: refs.LeakyBucket(3, L / W)),
    "fixed-window epoch": (Spec("fixed-window", L, W, alignment="epoch"), lambda: refs.FixedWindow(L, W)),
    "fixed-window first-request": (
        Spec("fixed-window", L, W, alignment="first-request"),
        lambda: refs.FixedWindow(L, W, first_request=True),
    ),
    "fixed-window any (first request)": (Spec("fixed-window", L, W), lambda: refs.FixedWindow(L, W, True)),
    "sliding-log": (Spec("sliding-log", L, W), lambda: refs.SlidingLog(L, W)),
    "sliding-window-counter": (Spec("sliding-window-counter", L, W), lambda: refs.SlidingWindowCounter(L, W)),
    "token-bucket counting rejected": (
        Spec("token-bucket", L, W, counts_rejected=True),
        lambda: refs.TokenBucket(L, L / W, counts_rejected=True),
    ),
    "sliding-log counting rejected": (
        Spec("sliding-log", L, W, counts_rejected=True),
        lambda: refs.SlidingLog(L, W, counts_rejected=True),
    ),
}
PROFILES = ([10, 60, 10, 100, 5], [200, 200], [30, 5, 50, 2, 25])  # requests/s per 2 s stage


def simulate(make, starts: list[float], nodes: int, seed: int, shared: bool = True, cost=lambda _: 1) -> list[tuple]:
    """Decisions of a cluster: one shared limiter, or one per node (round-robin); each decided at a random moment
    of its request's time in flight, on a node clock off by up to SKEW; ``cost(start)``: the units it spends."""
    rnd = random.Random(seed)
    limiters = [make()] if shared else [make() for _ in range(nodes)]
    offsets = [rnd.uniform(-SKEW, SKEW) for _ in range(nodes)]
    requests = []
    for i, start in enumerate(starts):
        duration = rnd.uniform(0.0002, 0.004) if rnd.random() > 0.01 else rnd.uniform(0.01, 0.3)
        node = i % nodes
        requests.append((start + rnd.uniform(0, duration) + offsets[node], start, duration, node))
    outcome = {}
    for decided, start, _, node in sorted(requests):
        outcome[start] = (limiters[0] if shared else limiters[node]).hit(T0 + decided, cost(start))
    return [(start, duration, ADMITTED if outcome[start] else LIMITED, node) for _, start, duration, node in requests]


def traffic(seed: int, rates: list[float], paced: bool) -> list[float]:
    rnd = random.Random(seed)
    out, t = [], 0.0
    for rate in rates:
        end, x = t + 2.0, t
        while x < end:
            out.append(x)
            x += 1.0 / rate if paced else rnd.expovariate(rate)
        t = end
    return out


@pytest.mark.parametrize("name", CORRECT)
def test_a_correct_limiter_is_never_judged_wrong(name):
    spec, make = CORRECT[name]
    for seed in range(8):
        for profile in PROFILES:
            events = simulate(make, traffic(seed, profile, paced=seed % 2 == 0), nodes=3, seed=seed)
            rp = replay(spec, events)
            assert (over(rp), under(rp)) == (0, 0), (name, seed, profile)


@pytest.mark.parametrize("name", CORRECT)
def test_two_nodes_each_enforcing_the_limit_alone_are_caught_under_overload(name):
    spec, make = CORRECT[name]
    events = simulate(make, traffic(3, [100, 100, 100], paced=True), nodes=2, seed=3, shared=False)
    assert over(replay(spec, events)) > 0, name


@pytest.mark.parametrize(
    ("spec", "make"),
    [
        (Spec("token-bucket", L, W), lambda: refs.TokenBucket(L, L / W, counts_rejected=True)),
        (Spec("sliding-log", L, W), lambda: refs.SlidingLog(L, W, counts_rejected=True)),
        (Spec("sliding-window-counter", L, W), lambda: refs.SlidingWindowCounter(L, W, counts_rejected=True)),
        (Spec("token-bucket", L, W), lambda: refs.TokenBucket(L / 2, L / 2)),  # stricter than declared
        (Spec("fixed-window", L, W, alignment="epoch"), lambda: refs.FixedWindow(L // 2, W)),
    ],
)
def test_a_limiter_stricter_than_declared_is_caught_under_admitting(spec, make):
    events = simulate(make, traffic(5, [64] * 4, paced=True), nodes=3, seed=5)
    rp = replay(spec, events)
    assert under(rp) > 20 and over(rp) == 0


# -- weighted requests: one request spends several units -------------------------------------------------------


def weighted(events: list[tuple], costs: list[int]) -> list[tuple]:
    """The same events, each spending its cost (``event_code`` carries it beside the outcome)."""
    return [
        (s, d, event_code(c & 3, bool(c & BURST_FLAG), cost=n), *rest)
        for (s, d, c, *rest), n in zip(events, costs, strict=True)
    ]


def test_a_bucket_admits_as_many_units_as_it_holds_not_as_many_requests():
    spec = Spec("token-bucket", 10, 1.0)  # capacity 10 units
    assert over(replay(spec, weighted(back_to_back(0.0, 5), [2] * 5))) == 0
    rp = replay(spec, weighted(back_to_back(0.0, 6), [2] * 6))
    assert over(rp) == 1  # the sixth would need 12 units
    # the same six requests declared at one unit each fit
    assert over(replay(spec, back_to_back(0.0, 6))) == 0


def test_a_rejection_is_wrong_only_when_the_whole_cost_had_room():
    spec = Spec("token-bucket", 10, 1.0, burst=5)
    # capacity 5, 10/s: however empty before the run, 1.2 s after 5 admitted units the bucket holds 5 again, less
    # what the timing allowance (0.03 s at 10/s) may have taken: 4.7 units, so a 4-unit rejection is wrong
    assert under(replay(spec, weighted([*back_to_back(0.0, 5), (1.2, 0.0005, LIMITED)], [1] * 5 + [4]))) == 1
    # a request of 5 may have come a moment too early, and one of 6 never fits a bucket of 5: not proven wrong
    for cost in (5, 6):
        assert under(replay(spec, weighted([*back_to_back(0.0, 5), (1.2, 0.0005, LIMITED)], [1] * 5 + [cost]))) == 0
    # 0.3 s after: at most 3 units if it was empty before the run, so a 4-unit rejection is not proven wrong
    rp = replay(spec, weighted([*back_to_back(0.0, 5), (0.3, 0.0005, LIMITED)], [1] * 5 + [4]))
    assert under(rp) == 0


def test_a_window_counts_units():
    spec = Spec("fixed-window", 10, 1.0, alignment="epoch")
    assert over(replay(spec, weighted(back_to_back(0.2, 4, gap=0.01), [3, 3, 3, 1]))) == 0
    assert over(replay(spec, weighted(back_to_back(0.2, 4, gap=0.01), [3, 3, 3, 2]))) == 1
    log = Spec("sliding-log", 10, 1.0)
    assert over(replay(log, weighted(back_to_back(0.2, 4, gap=0.01), [3, 3, 3, 2]))) == 1


@pytest.mark.parametrize("name", CORRECT)
def test_a_correct_limiter_of_weighted_requests_is_never_judged_wrong(name):
    spec, make = CORRECT[name]
    for seed in range(4):
        rnd = random.Random(seed)
        starts = traffic(seed, PROFILES[seed % len(PROFILES)], paced=seed % 2 == 0)
        costs = {start: rnd.choice((1, 1, 2, 3, 5)) for start in starts}
        events = simulate(make, starts, nodes=3, seed=seed, cost=costs.get)
        rp = replay(spec, weighted(events, [costs[e[0]] for e in events]))
        assert (over(rp), under(rp)) == (0, 0), (name, seed)


@pytest.mark.parametrize("name", ["token-bucket", "fixed-window epoch", "sliding-log"])
def test_weighted_requests_declared_as_one_unit_each_are_caught_or_never_wrongly_failed(name):
    spec, make = CORRECT[name]
    starts = traffic(2, [100, 100, 100], paced=True)
    events = simulate(make, starts, nodes=3, seed=2, cost=lambda start: 3)
    # judged with their cost: right; judged as one unit each, the cluster looks stricter than declared
    assert (over(rp := replay(spec, weighted(events, [3] * len(events)))), under(rp)) == (0, 0)
    assert under(replay(spec, events)) > 0 and over(replay(spec, events)) == 0
