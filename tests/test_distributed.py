"""Master/worker runs: exact aggregation, the global rate split over workers, late joiners, master-only /metrics."""

import json
import socket

import pytest

from tests.support import LOCUST, LOCUSTFILE, Proc, demo_cluster, free_port, locust_args, running, sample_sum, scrape

pytestmark = pytest.mark.integration

# 6 s: steady 0-3 s at 40/s, burst 3-4 s at 120/s, steady 4-6 s: 200 steady + 120 burst slots
SCHEDULE = ["-t", "6s", "--steady-rps", "40", "--burst-multiplier", "3", "--burst-every", "3", "--burst-duration", "1"]
EXPECTED = {"steady": 200, "burst": 120}


def worker(master_port: int, *args: str) -> Proc:
    return Proc(
        [
            *LOCUST,
            "-f",
            str(LOCUSTFILE),
            "--worker",
            "--master-host",
            "127.0.0.1",
            "--master-port",
            str(master_port),
            *args,
        ]
    )


def master_args(node_hosts: str, tmp_path, workers: int, *args: str) -> tuple[list[str], int]:
    port = free_port()
    return locust_args(
        node_hosts,
        "--master",
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        str(port),
        "--expect-workers",
        str(workers),
        "--expect-workers-max-wait",
        "30",
        "--metrics-linger",
        "30",
        "--json-file",
        str(tmp_path / "stats"),
        *args,
    ), port


def finish(master: Proc, tmp_path) -> tuple[list, int]:
    """Scrape the master's /metrics while it lingers after the run; returns the samples and Locust's count."""
    url = master.wait_for(r"waiting up to \S+ for a last scrape of (\S+)", timeout=90).group(1)
    samples = scrape(url)
    assert master.wait(30) == 0, master.output[-3000:]
    locust_total = sum(e["num_requests"] for e in json.loads((tmp_path / "stats.json").read_text()))
    # the run's own summary has the workers' final reports too (they arrive after the workers stopped)
    assert f"Locust counted {locust_total} requests; the suite counted {locust_total}." in master.output
    return samples, locust_total


def per_mode(samples) -> dict[str, float]:
    return {mode: sample_sum(samples, "rlsuite_requests_total", mode=mode) for mode in ("steady", "burst")}


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


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
