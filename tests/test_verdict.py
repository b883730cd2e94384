"""The verdict arithmetic on made-up counts: no process, no sleep."""

import pytest

from rlsuite.policy import Policy
from rlsuite.schedule import Schedule
from rlsuite.tally import RunView
from rlsuite.verdict import FAIL, INCONCLUSIVE, PASS, evaluate

T0 = 1_000_000  # a whole second, divisible by 2 (fixed windows align to the epoch)
NODES = ["n1:80", "n2:80", "n3:80"]


def policy(limit=10, window=1.0, burst=0, algorithm="fixed-window", scope="global", strict=False, share=0.01):
    return Policy(limit, window, burst or limit, algorithm, scope, strict, 0.0, share)


def run_with(per_second, mode_of=lambda i: "steady", nodes=NODES):
    """per_second: list of (admitted, limited) per second, spread over the nodes like round-robin does."""
    run = RunView(1)
    for i, (admitted, limited) in enumerate(per_second):
        for j, node in enumerate(nodes):
            share_a = admitted // len(nodes) + (1 if j < admitted % len(nodes) else 0)
            share_l = limited // len(nodes) + (1 if j < limited % len(nodes) else 0)
            run.seconds[(T0 + i, node, 0)] = [share_a, share_l, 0]
            mode = mode_of(i)
            for outcome, n in (("allowed", share_a), ("limited", share_l)):
                run.requests[(mode, outcome, node)] = run.requests.get((mode, outcome, node), 0) + n
    return run


def steady(rps, seconds):
    return Schedule(rps, 1.0, 1000, 0, run_time=seconds)


def judge(p, run, schedule, seconds, **kw):
    return evaluate(p, run, schedule, T0, seconds, NODES, 1, **kw)


def test_a_cluster_that_admits_exactly_the_limit_passes():
    v = judge(policy(), run_with([(10, 20)] * 6), steady(30, 6), 6)
    assert v.result == PASS and v.exit_code == 0 and not v.reasons
    assert v.rows[0].max_admitted == 10 and v.rows[0].bound == 10 and v.rows[0].ratio == 1.0


def test_a_per_node_limiter_over_admits_about_3x_and_is_named():
    v = judge(policy(), run_with([(30, 0)] * 6), steady(30, 6), 6)
    assert v.result == FAIL and v.exit_code == 3
    assert (
        "3.0x the bound of 10" in v.reasons[0] and "as if each of the 3 nodes enforced the limit alone" in v.reasons[0]
    )


def test_per_node_scope_checks_each_node_on_its_own():
    assert judge(policy(scope="per-node"), run_with([(30, 0)] * 6), steady(30, 6), 6).result == PASS
    assert judge(policy(scope="per-node"), run_with([(60, 0)] * 6), steady(60, 6), 6).result == FAIL


def test_fixed_window_boundary_two_full_windows_back_to_back():
    # limit 10 per aligned 2 s window; 10 admitted at the end of one window and 10 at the start of the next:
    # a fixed-window limiter may do that (aligned windows each hold 10), a sliding window may not (a 2 s span holds 20)
    per_second = [(0, 0), (10, 5), (10, 5), (0, 0)]
    fixed = judge(policy(window=2), run_with(per_second), steady(7.5, 4), 4)
    sliding = judge(policy(window=2, algorithm="sliding-window"), run_with(per_second), steady(7.5, 4), 4)
    assert fixed.rows[0].max_admitted == 10 and not any("over-admits" in r for r in fixed.reasons)
    assert sliding.rows[0].max_admitted == 20 and any("2.0x the bound of 10" in r for r in sliding.reasons)
    assert sliding.result == FAIL


def test_token_bucket_allows_the_burst_once_but_not_a_higher_rate():
    p = policy(limit=10, burst=20, algorithm="token-bucket")
    ok = judge(p, run_with([(20, 10)] + [(10, 20)] * 5), steady(30, 6), 6)
    assert ok.result == PASS, ok.reasons
    over = judge(p, run_with([(20, 10)] + [(15, 15)] * 9), steady(30, 10), 10)
    assert over.result == FAIL
    assert any("more than the rate allows, above the burst of 20" in r for r in over.reasons)


def test_a_stricter_limiter_than_declared_under_admits():
    # declared 20/s, offered 15/s steady, but the cluster limits a third of it
    v = judge(policy(limit=20), run_with([(10, 5)] * 6), steady(15, 6), 6)
    assert v.result == FAIL and any("limited 33.3% of the time" in r and "under-admits" in r for r in v.reasons)


def test_the_window_after_a_burst_is_not_under_admission():
    schedule = Schedule(10, 3, 3, 1, run_time=6)  # steady 0-3, burst 3-4 (30/s), steady 4-6
    per_second = [(10, 0)] * 3 + [(20, 10)] + [(8, 2)] + [(10, 0)]
    v = judge(policy(limit=20), run_with(per_second, lambda i: "burst" if i == 3 else "steady"), schedule, 6)
    assert v.result == PASS, v.reasons


def test_a_generator_that_fell_short_makes_the_run_inconclusive():
    v = judge(policy(limit=100), run_with([(50, 0)] * 4), steady(100, 4), 4)
    assert v.result == INCONCLUSIVE and v.exit_code == 4
    assert "sent 50.0% of its target 100/s: the generator did not keep up" in v.reasons[0]


@pytest.mark.parametrize(("strict", "result"), [(False, PASS), (True, FAIL)])
def test_header_findings_fail_only_with_strict_headers(strict, result):
    run = run_with([(10, 5)] * 3)
    run.findings[("retry_after_missing", "n1:80")] = 5
    run.examples["retry_after_missing"] = "n1:80: a limited answer without Retry-After"
    v = judge(policy(strict=strict), run, steady(15, 3), 3)
    assert v.result == result and v.findings == {"retry_after_missing": 5}
    assert "retry_after_missing x5" in v.render()


def test_render_and_json_carry_the_table_tolerance_and_reasons():
    v = judge(policy(), run_with([(30, 0)] * 3), steady(30, 3), 3, interrupted=False)
    text = v.render()
    assert text.startswith("Verdict: FAIL  (declared: 10 requests per 1s window (fixed-window, global))")
    assert "Max/window" in text and "Tolerance:" in text and "Reason: steady: 30 requests admitted" in text
    data = v.to_json()
    assert data["result"] == "fail" and data["exit_code"] == 3 and data["rows"][0]["max_admitted"] == 30


def test_a_stopped_run_excludes_its_last_partial_second():
    v = judge(policy(), run_with([(10, 0)] * 4), steady(10, None), 3.5, interrupted=True)
    assert "the last partial second (3s-3.5s)" in v.excluded
