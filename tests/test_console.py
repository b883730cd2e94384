from rlsuite.console import status_line, summary
from rlsuite.rates import stage_rates
from rlsuite.schedule import Schedule
from rlsuite.tally import RunView

T0 = 1000
SCHEDULE = Schedule(10, 3, 4, 2, run_time=6)  # steady 0-4 at 10/s, burst 4-6 at 30/s


def run_with(per_second):
    run = RunView(1)
    for i, n in enumerate(per_second):
        run.seconds[(T0 + i, "n1:80")] = [n, 0, 0]
        mode = "burst" if 4 <= i < 6 else "steady"
        counted = (mode, "allowed", "n1:80", "default")
        run.requests[counted] = run.requests.get(counted, 0) + n
    return run


def test_stage_rates_report_each_stage_its_first_second_and_per_second_spread():
    rates = stage_rates(run_with([10, 9, 11, 10, 27, 30]), SCHEDULE, T0, 6)
    steady, burst = rates
    assert (steady.stage.mode, steady.achieved, steady.first_second, steady.settled) == ("steady", 10, 10, 10)
    assert steady.spread == (2 / 3) ** 0.5 / 10  # 9, 11, 10 around 10
    assert (burst.achieved, burst.first_second, burst.ratio) == (28.5, 27, 0.95)


def test_summary_has_modes_rates_pacing_nodes_and_latency():
    text = summary(run_with([10, 10, 10, 10, 30, 30]), SCHEDULE, T0, 6, ["n1:80"], 100)
    assert "Rate-limiter summary: 1 node(s), 6s of load (steady 4s, burst 2s), 100 requests" in text
    assert "steady          10.0        10.0   1.000" in text and "burst           30.0        30.0   1.000" in text
    assert "Stage rates: 2 stages; achieved/target from 1.000" in text
    assert "Pacing: after each stage's first second, achieved/target from 1.0000 to 1.0000" in text
    assert "Latency ms" in text and "Locust counted 100 requests; the suite counted 100." in text


def test_status_line_is_the_old_generators_line_plus_late_and_dropped():
    line = status_line("burst", 12.4, 30.0, 29.5, run_with([10, 10]), (10, 12))
    assert line.startswith("[rlsuite] BURST  t=   12s  target     30.0/s  achieved     29.5/s")
    assert line.endswith("allowed 20  limited 0  error 0  late 0  dropped 0")
