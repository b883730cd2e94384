import pytest

from rlsuite.metrics import TotalsCollector, build_registry
from rlsuite.status import Status
from rlsuite.tally import Tally, Totals

NODES = ["127.0.0.1:1", "127.0.0.1:2"]


def sample(registry, name, **labels):
    if name == "rlsuite_requests_total":
        labels.setdefault("policy", "default")  # the single-policy form's one policy
    return registry.get_sample_value(name, labels)


def fresh():
    totals, status = Totals(), Status()
    totals.start_run(1, NODES)
    return totals, status, build_registry(TotalsCollector(totals, status))


def test_every_series_exists_at_zero_before_any_request():
    _, _, registry = fresh()
    for mode in ("steady", "burst"):
        for outcome in ("allowed", "limited", "error"):
            for node in NODES:
                assert sample(registry, "rlsuite_requests_total", mode=mode, outcome=outcome, node=node) == 0
            assert sample(registry, "rlsuite_request_duration_seconds_count", mode=mode, outcome=outcome) == 0
        assert sample(registry, "rlsuite_mode", mode=mode) == 0
        assert sample(registry, "rlsuite_errors_total", mode=mode, node=NODES[0], kind="refused") == 0
    assert sample(registry, "rlsuite_target_rps") == 0
    assert sample(registry, "rlsuite_running") == 0


def test_metric_names_follow_prometheus_conventions():
    _, _, registry = fresh()
    names = {s.name for family in registry.collect() for s in family.samples}
    assert names == {
        "rlsuite_requests_total",
        "rlsuite_errors_total",
        "rlsuite_request_duration_seconds_bucket",
        "rlsuite_request_duration_seconds_count",
        "rlsuite_request_duration_seconds_sum",
        "rlsuite_mode",
        "rlsuite_target_rps",
        "rlsuite_running",
        "rlsuite_run_start_timestamp_seconds",
        "rlsuite_header_findings_total",
        "rlsuite_verdict",
        "rlsuite_verdict_disagreements",
        "rlsuite_policy_verdict",
        "rlsuite_verdict_detectable_factor",
        "rlsuite_intended_latency_seconds_bucket",
        "rlsuite_intended_latency_seconds_count",
        "rlsuite_intended_latency_seconds_sum",
        "rlsuite_late_sends_total",
        "rlsuite_dropped_sends_total",
    }


def test_worker_deltas_add_up_exactly_and_counters_never_go_down():
    totals, _status, registry = fresh()
    workers = [Tally(), Tally()]
    for i in range(10):
        workers[i % 2].record("steady", "allowed", NODES[i % 2], 0.0007, 1000.2 + i, None)
    workers[0].record("burst", "limited", NODES[0], 0.002, 1011.0, None)
    workers[1].record("burst", "error", NODES[1], 2.0, 1011.5, "timeout")
    for w in workers:
        totals.absorb(w.drain(run_id=1))
        assert w.drain(run_id=1)["requests"] == []  # drained means empty
    assert sample(registry, "rlsuite_requests_total", mode="steady", outcome="allowed", node=NODES[0]) == 5
    assert sample(registry, "rlsuite_requests_total", mode="burst", outcome="error", node=NODES[1]) == 1
    assert sample(registry, "rlsuite_errors_total", mode="burst", node=NODES[1], kind="timeout") == 1
    assert (
        sample(registry, "rlsuite_request_duration_seconds_bucket", mode="steady", outcome="allowed", le="0.001") == 10
    )
    assert (
        sample(registry, "rlsuite_request_duration_seconds_bucket", mode="steady", outcome="allowed", le="0.0005") == 0
    )
    assert sample(registry, "rlsuite_request_duration_seconds_sum", mode="steady", outcome="allowed") == pytest.approx(
        0.007
    )
    assert totals.run.count() == 12 and sum(totals.requests.values()) == 12
    assert totals.run.started_between(1000, 1005) == [5, 0, 0]
    assert totals.run.started_between(1011, 1012) == [0, 1, 1]

    totals.start_run(2, NODES)  # a new test in the web UI
    assert totals.run.count() == 0
    assert sample(registry, "rlsuite_requests_total", mode="steady", outcome="allowed", node=NODES[0]) == 5


def test_a_late_delta_from_a_previous_run_counts_for_the_process_but_not_the_new_run():
    totals, _, registry = fresh()
    late = Tally()
    late.record("steady", "allowed", NODES[0], 0.001, 1000.0, None)
    totals.start_run(2, NODES)
    totals.absorb(late.drain(run_id=1))
    assert totals.run.count() == 0
    assert sample(registry, "rlsuite_requests_total", mode="steady", outcome="allowed", node=NODES[0]) == 1


def test_status_gauges():
    _, status, registry = fresh()
    status.running, status.mode, status.target_rps = True, "burst", 300.0
    assert sample(registry, "rlsuite_mode", mode="burst") == 1
    assert sample(registry, "rlsuite_mode", mode="steady") == 0
    assert sample(registry, "rlsuite_target_rps") == 300


def test_late_and_dropped_sends_and_latency_from_the_intended_send_time():
    totals, _, registry = fresh()
    tally = Tally()
    tally.record("burst", "allowed", NODES[0], 0.001, 1000.0, None, lateness=0.0)
    tally.record("burst", "allowed", NODES[0], 0.001, 1000.2, None, lateness=0.2)  # waited 200 ms for a free user
    tally.dropped("burst")
    totals.absorb(tally.drain(run_id=1))
    assert sample(registry, "rlsuite_late_sends_total", mode="burst") == 1
    assert sample(registry, "rlsuite_dropped_sends_total", mode="burst") == 1
    assert sample(registry, "rlsuite_intended_latency_seconds_bucket", mode="burst", le="0.001") == 1
    assert sample(registry, "rlsuite_intended_latency_seconds_bucket", mode="burst", le="0.25") == 2
    assert sample(registry, "rlsuite_request_duration_seconds_bucket", mode="burst", outcome="allowed", le="0.001") == 2
    assert totals.run.percentile("burst", "service", 1.0) == 0.001
    assert totals.run.percentile("burst", "intended", 1.0) == pytest.approx(0.2, rel=0.05)
    assert totals.run.sent("burst", "late") == 1 and totals.run.sent(None, "dropped") == 1


def test_round_us_keeps_two_significant_digits():
    from rlsuite.tally import round_us

    assert [round_us(x) for x in (0.000042, 0.000742, 0.001234, 0.0567, 2.5)] == [42, 740, 1200, 57000, 2500000]


def test_requests_are_counted_per_declared_policy_and_every_policy_has_its_series_at_zero():
    totals, _, registry = fresh()
    totals.start_run(2, NODES, policies=["orders", "reports"])
    worker = Tally()
    worker.record("steady", "allowed", NODES[0], 0.001, 1000.0, None, policy="orders")
    worker.record("steady", "limited", NODES[0], 0.001, 1000.1, None, policy="orders")
    worker.record("burst", "allowed", NODES[1], 0.001, 1000.2, None, policy="unmatched")
    totals.absorb(worker.drain(run_id=2))
    assert sample(registry, "rlsuite_requests_total", mode="steady", outcome="allowed", node=NODES[0], policy="orders")
    assert sample(registry, "rlsuite_requests_total", mode="steady", outcome="limited", node=NODES[0], policy="orders")
    assert (
        sample(registry, "rlsuite_requests_total", mode="steady", outcome="allowed", node=NODES[1], policy="reports")
        == 0
    )
    assert sample(
        registry, "rlsuite_requests_total", mode="burst", outcome="allowed", node=NODES[1], policy="unmatched"
    )
    assert totals.run.count(policy="orders") == 2 and totals.run.count() == 3
    assert sample(registry, "rlsuite_policy_verdict", policy="reports", result="pass") == 0  # no verdict yet
