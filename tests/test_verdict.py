"""The verdict on made-up runs: the replay's findings plus the run's counts and schedule, no process, no sleep."""

from __future__ import annotations

from rlsuite.models import Spec
from rlsuite.policy import Policy
from rlsuite.replay import ADMITTED, BURST_FLAG, LIMITED, UNKNOWN, UNSENT
from rlsuite.schedule import Schedule
from rlsuite.tally import RunView
from rlsuite.verdict import FAIL, INCONCLUSIVE, PASS, build_replay, detectable, evaluate

T0 = 1_000_000.0
NODES = ["n1:80", "n2:80"]
OUTCOME = {ADMITTED: "allowed", LIMITED: "limited", UNKNOWN: "error", UNSENT: "error"}


def policy(algorithm="sliding-log", limit=10, scope="global", auto=False, **spec) -> Policy:
    return Policy(Spec(algorithm, limit, 1.0, **spec), scope, 0.005, auto=auto)


def judged(p: Policy, decide, schedule: Schedule, seconds: float, nodes=NODES, incidents=None, keys=1):
    """Send the schedule's slots (round-robin over ``nodes``, keys cycling once per round of nodes, as the suite
    does) through ``decide(t, node[, key]) -> code``; the verdict."""
    run = RunView(1, build_replay(p, len(nodes), T0))
    flat = []
    slot = 0
    while (due := schedule.slot(slot)) is not None and due[0] < seconds:
        at, mode = due
        node = slot % len(nodes)
        key = (slot // len(nodes)) % keys
        code = decide(at, node, key) if keys > 1 else decide(at, node)
        outcome = OUTCOME[code]
        mode_code = code | (BURST_FLAG if mode == "burst" else 0)
        flat += [T0 + at, 0.001, mode_code, node, key]
        counted = (mode, outcome, nodes[node], "default")
        run.requests[counted] = run.requests.get(counted, 0) + 1
        cell = run.seconds.setdefault((int(T0 + at), nodes[node]), [0, 0, 0])
        cell[["allowed", "limited", "error"].index(outcome)] += 1
        slot += 1
    run.replay.add(flat)
    run.replay.finish()
    return evaluate(p, run, run.replay, schedule, T0, seconds, nodes, keys, incidents)


def sliding_log(limit, per_node=False, counts_rejected=False):
    logs: dict[int, list[float]] = {}

    def decide(t, node):
        log = logs.setdefault(node if per_node else 0, [])
        log[:] = [x for x in log if x > t - 1.0]
        if len(log) < limit:
            log.append(t)
            return ADMITTED
        if counts_rejected:
            log.append(t)
        return LIMITED

    return decide


OVERLOAD = Schedule(10, 4, 4, 2, run_time=8)  # 10/s steady, 40/s bursts of 2 s every 4 s


def test_a_correct_limiter_under_overload_passes_and_says_what_it_would_have_caught():
    v = judged(policy(), sliding_log(10), OVERLOAD, 8)
    assert v.result == PASS and v.exit_code == 0 and not v.reasons
    assert v.rows[1].admitted == 20 and v.rows[1].limited == 60 and v.rows[1].over == 0
    assert v.detectable is not None and v.detectable < 2
    assert f"a cluster admitting {v.detectable:.2f}x the limit or more would have been caught" in v.render()


def test_two_nodes_each_enforcing_the_limit_alone_fail_and_are_named():
    v = judged(policy(), sliding_log(10, per_node=True), OVERLOAD, 8)
    assert v.result == FAIL and v.exit_code == 3
    assert v.rows[1].over == 20 and v.rows[1].result == FAIL
    assert "the cluster over-admits, as if each of the 2 nodes enforced the limit alone" in v.reasons[0]
    assert "2.00x what it could admit" in v.reasons[0] and "on node n" in v.reasons[0]


def test_a_per_node_limit_declared_per_node_passes():
    v = judged(policy(scope="per-node"), sliding_log(10, per_node=True), Schedule(10, 8, 4, 2, run_time=8), 8)
    assert v.result == PASS, v.reasons


def test_load_that_never_exceeds_the_limit_is_inconclusive_not_pass():
    v = judged(policy(), sliding_log(10), Schedule(8, 1, 1000, 0, run_time=6), 6)
    assert v.result == INCONCLUSIVE and v.exit_code == 4 and v.detectable is None
    assert "could not tell the declared limit from twice it" in v.reasons[0]
    # 1.5x the limit is enough: 2 nodes each enforcing it alone would have admitted all 15/s
    v = judged(policy(), sliding_log(10), Schedule(15, 1, 1000, 0, run_time=6), 6)
    assert v.result == PASS and v.detectable is not None and v.detectable < 1.1


def test_a_run_where_every_request_failed_is_inconclusive():
    v = judged(policy(), lambda t, node: UNSENT, OVERLOAD, 8)
    assert v.result == INCONCLUSIVE
    assert any("only 0% of the requests were answered" in r for r in v.reasons)
    assert any("answered nothing" in r for r in v.reasons)


def test_a_node_that_never_answered_makes_the_run_inconclusive():
    correct = sliding_log(10)
    v = judged(policy(), lambda t, node: UNSENT if node == 1 else correct(t, node), OVERLOAD, 8)
    assert v.result == INCONCLUSIVE and any("n2:80 answered nothing" in r for r in v.reasons)


def test_goodput_collapse_from_counting_rejections_fails_and_says_how_to_declare_it():
    v = judged(policy(), sliding_log(10, counts_rejected=True), Schedule(40, 1, 1000, 0, run_time=6), 6)
    assert v.result == FAIL and v.rows[0].under > 0 and v.rows[0].over == 0
    assert "the cluster under-admits" in v.reasons[0]
    assert "declare --limit-counts-rejected if that is intended" in v.reasons[0]
    declared = judged(
        policy(counts_rejected=True), sliding_log(10, counts_rejected=True), Schedule(40, 1, 1000, 0, run_time=6), 6
    )
    assert declared.result == PASS, declared.reasons


def test_under_admission_with_requests_missing_is_not_judged():
    v = judged(
        policy(),
        sliding_log(10, counts_rejected=True),
        Schedule(40, 1, 1000, 0, run_time=6),
        6,
        incidents=["worker w1 was lost 3s into the run"],
    )
    assert v.result == INCONCLUSIVE and "under-admission is not judged" in v.reasons[0]


def test_auto_reports_the_model_the_cluster_follows():
    # bursts after near-idle: a sliding log admits 10 at once, then nothing until they age out
    v = judged(policy(auto=True), sliding_log(10), Schedule(2, 20, 4, 2, run_time=8), 8)
    by_model = {f.model: (f.over, f.under) for f in v.fits}
    assert by_model["sliding log, 10 in any 1s"] == (0, 0)
    assert by_model["leaky bucket, 10 per 1s, burst 0 (nodelay)"][0] > 0  # it admits one at a time
    assert by_model["token bucket, 10 per 1s, capacity 10"][1] > 0  # it would have refilled and admitted more
    assert v.best_fit.startswith("sliding log, 10 in any 1s (this load fits equally: ") and v.result == PASS
    assert "Best fit: sliding log" in v.render()


def test_detectability_grows_with_the_load_offered_per_key():
    spec = Spec("token-bucket", 10, 1.0)
    one_key, _ = detectable(spec, "global", 0.03, OVERLOAD, 8, 2, 1)
    assert one_key is not None and one_key < 1.6  # a 2 s burst at 4x: (10 + 10 x 2.03) / (10 x 2)
    assert detectable(spec, "global", 0.03, OVERLOAD, 8, 2, 10) == (None, None)  # 4/s per key: never over


def test_many_keys_each_hit_by_a_quick_pair_of_requests_can_still_tell_twice_the_limit():
    # 50 keys, 1 request per second each with a burst of 1; every key gets 2 requests 10 ms apart (one per node)
    # once a second: a correct limiter admits one of each pair; 2 nodes each enforcing it alone would admit both
    levels: dict[int, list[float]] = {}

    def bucket(t, node, key):
        level, at = levels.get(key, (1.0, t))
        level = min(1.0, level + (t - at))
        ok = level >= 1
        levels[key] = (level - 1 if ok else level, t)
        return ADMITTED if ok else LIMITED

    v = judged(policy("token-bucket", limit=1), bucket, Schedule(100, 1, 1000, 0, run_time=4), 4, keys=50)
    assert v.rows[0].admitted == 200 and v.rows[0].limited == 200 and v.rows[0].under == 0
    assert v.double_caught > 0 and v.result == PASS, v.reasons
    assert "replayed on this run's requests: caught" in v.render()
