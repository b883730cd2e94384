"""Master/worker runs: exact aggregation, the global rate split over workers, late joiners, master-only /metrics."""

import pytest

from tests.support import (
    Proc,
    demo_cluster,
    finish,
    free_port,
    listening,
    locust_args,
    master_args,
    running,
    sample_sum,
    worker,
)

pytestmark = pytest.mark.integration

# 6 s: steady 0-3 s at 40/s, burst 3-4 s at 120/s, steady 4-6 s: 200 steady + 120 burst slots
SCHEDULE = ["-t", "6s", "--steady-rps", "40", "--burst-multiplier", "3", "--burst-every", "3", "--burst-duration", "1"]
EXPECTED = {"steady": 200, "burst": 120}


def per_mode(samples) -> dict[str, float]:
    return {mode: sample_sum(samples, "rlsuite_requests_total", mode=mode) for mode in ("steady", "burst")}


def test_standalone_processes_and_separate_workers_report_the_same_exact_totals(tmp_path):
    with demo_cluster("--limit", "100000") as cluster:
        admitted_before = 0.0
        results = {}
        for name, extra in (("standalone", []), ("processes", ["--processes", "2"])):
            out = tmp_path / name
            out.mkdir()
            proc = Proc(
                locust_args(
                    cluster.node_hosts, "--metrics-linger", "30", "--json-file", str(out / "stats"), *extra, *SCHEDULE
                )
            )
            with running(proc):
                results[name] = finish(proc, out)

        out = tmp_path / "workers"
        out.mkdir()
        args, port = master_args(cluster.node_hosts, out, 2, *SCHEDULE)
        worker_metrics_port = free_port()
        with (
            running(Proc(args)) as master,
            running(worker(port, "--metrics-port", str(worker_metrics_port))) as w1,
            running(worker(port)) as w2,
        ):
            master.wait_for(r"rlsuite: run 1 sends load", timeout=30)
            # workers serve no /metrics and start no server, even when given a port
            assert not listening(worker_metrics_port)
            results["workers"] = finish(master, out)
            for w in (w1, w2):
                assert w.wait(30) == 0
                assert "Prometheus metrics at" not in w.output and "Traceback" not in w.output
        assert "missing" not in master.output
        admitted = cluster.server_total("admitted") - admitted_before

    for name, (samples, locust_total) in results.items():
        assert per_mode(samples) == EXPECTED, name  # every slot of the schedule, in its mode
        assert sample_sum(samples, "rlsuite_requests_total") == locust_total == 320, name
    assert admitted == 3 * 320  # the server saw exactly what the three runs counted


def test_a_worker_joining_mid_run_takes_its_share_of_the_global_rate(tmp_path):
    # 10 s at 60/s steady with a 2 s burst at 180/s from 6 s: one worker alone, a second one joins at about 3 s
    schedule = [
        "-t",
        "10s",
        "--steady-rps",
        "60",
        "--burst-multiplier",
        "3",
        "--burst-every",
        "6",
        "--burst-duration",
        "2",
    ]
    with demo_cluster("--limit", "100000") as cluster:
        args, port = master_args(cluster.node_hosts, tmp_path, 1, "--stats-interval", "1", *schedule)
        with running(Proc(args)) as master, running(worker(port)) as first:
            master.wait_for(r"\[rlsuite\] STEADY", timeout=30)
            with running(worker(port, "--loglevel", "DEBUG")) as late:
                late.wait_for(r"adopted plan .* share [01]/2", timeout=30)  # its index depends on its random id
                samples, locust_total = finish(master, tmp_path)
                assert late.wait(30) == 0 and first.wait(30) == 0
        server = cluster.server_total("admitted")
    assert "missing" not in master.output
    totals = per_mode(samples)
    # the global rate held while the split changed: every slot once (a slot or two may straddle the split)
    assert totals["steady"] == pytest.approx(60 * 8, abs=2)
    assert totals["burst"] == pytest.approx(180 * 2, abs=2)
    assert sample_sum(samples, "rlsuite_requests_total") == locust_total == server
