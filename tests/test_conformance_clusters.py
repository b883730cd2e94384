"""The conformance catalogue against real clusters: the demo limiter in every algorithm (all correct: nothing FAILED)
and in each broken mode (the cases that should catch it FAIL, the others hold), distributed over a master and two
workers, and its command line (bad input, SIGTERM, /metrics). nginx limit_req: tests/test_conformance_nginx.py.

Every run is a real `locust -f locustfiles/conformance.py --headless` against a demo cluster on free ports of
127.0.0.1; runs of several clusters go three at a time. A 1 s window with a limit of 20 keeps each full catalogue
near 90 s; most runs select the cases that matter for their mode (--cases).
"""

from __future__ import annotations

import json
import signal
import sys
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support import DEMO_ALGORITHMS, LOCUST, ROOT, Proc, demo_cluster, free_port, running, scrape, worker

pytestmark = pytest.mark.integration

LOCUSTFILE = ROOT / "locustfiles" / "conformance.py"
LIMIT = ["--limit", "20", "--window", "1"]
DEMO = ["--limit", "20", "--window", "1"]


def conformance_args(node_hosts: str, where: Path, *args: str) -> list[str]:
    return [
        *LOCUST,
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "--node-hosts",
        node_hosts,
        "--metrics-port",
        "0",
        "--metrics-linger",
        "0",
        "--conformance-json",
        str(where / "c.json"),
        "--junit-xml",
        str(where / "c.xml"),
        *LIMIT,
        *args,
    ]


def run(node_hosts: str, where: Path, *args: str, exit_code: int, timeout: float = 300) -> dict:
    where.mkdir(parents=True, exist_ok=True)
    proc = Proc(conformance_args(node_hosts, where, *args))
    with running(proc):
        code = proc.wait(timeout)
    assert "Traceback" not in proc.output, proc.output[-4000:]
    data = json.loads((where / "c.json").read_text())
    assert code == exit_code == data["exit_code"], (code, grades(data), proc.output[-3000:])
    data["output"] = proc.output
    return data


def grades(data: dict) -> dict[str, str]:
    return {c["id"]: c["grade"] for c in data["cases"]}


def case(data: dict, case_id: str) -> dict:
    return next(c for c in data["cases"] if c["id"] == case_id)


def against_demo(limiter: list[str], where: Path, *args: str, exit_code: int) -> dict:
    with demo_cluster(*limiter, *DEMO) as cluster:
        return run(cluster.node_hosts, where, *args, exit_code=exit_code)


def concurrently(jobs: dict[str, callable]) -> dict[str, dict]:
    with ThreadPoolExecutor(3) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


DIFFERING = "RLC-1,RLC-2,RLC-3.1,RLC-5,RLC-6,RLC-7.1"  # where the algorithms differ; scope, headers and keys do not
ALGORITHMS = {name: options for name, options in DEMO_ALGORITHMS.items() if name != "token-bucket"}


def test_every_algorithm_of_the_demo_limiter_conforms(tmp_path):
    """A correct cluster FAILS nothing: the whole catalogue for the token bucket (with API keys, so the key cases
    run too), the cases where algorithms differ for the others; a fixed window's alignment is seen as declared."""
    jobs = {
        "token-bucket": lambda: against_demo(
            ["--algorithm", "token-bucket"], tmp_path / "tb", "--api-key-count", "4", exit_code=0
        )
    }
    for name, (limiter, declared) in ALGORITHMS.items():
        jobs[name] = lambda limiter=limiter, declared=declared, name=name: against_demo(
            limiter, tmp_path / name, *declared, "--cases", DIFFERING, exit_code=0
        )
    results = concurrently(jobs)
    tb = results["token-bucket"]
    assert len(tb["cases"]) == 19 and set(grades(tb).values()) <= {"OK", "INFORMATIONAL"}, grades(tb)
    assert case(tb, "RLC-9.2")["details"]["jain"] > 0.99
    junit = ET.parse(tmp_path / "tb" / "c.xml").getroot()
    assert junit.attrib["tests"] == "19" and junit.attrib["failures"] == "0" and junit.attrib["errors"] == "0"
    for name, data in results.items():
        assert set(grades(data).values()) <= {"OK", "INFORMATIONAL", "NON-STRICT"}, (name, grades(data))
    edges = {name: case(data, "RLC-6.1") for name, data in results.items()}
    assert edges["fixed-window epoch"]["details"]["alignment_seen"] == "epoch"
    assert edges["fixed-window epoch"]["details"]["edge_effect"] == pytest.approx(2.0, abs=0.1)
    assert edges["fixed-window first-request"]["details"]["alignment_seen"] == "first request"
    assert edges["sliding-log"]["grade"] == "OK" and edges["sliding-log"]["details"]["edge_effect"] <= 1.05
    assert edges["token-bucket"]["details"]["alignment_seen"].startswith("none")


def test_each_broken_mode_fails_the_cases_that_catch_it(tmp_path):
    tb = ["--algorithm", "token-bucket"]
    jobs = {
        "per-node": lambda: against_demo(
            [*tb, "--scope", "per-node"], tmp_path / "per-node", "--cases", "RLC-2.2,RLC-4,RLC-5", exit_code=3
        ),
        "per-node declared": lambda: against_demo(
            [*tb, "--scope", "per-node"],
            tmp_path / "per-node-declared",
            "--cases",
            "RLC-2.2,RLC-2.3,RLC-4,RLC-5",
            "--limit-scope",
            "per-node",
            exit_code=0,
        ),
        "race": lambda: against_demo(
            [*tb, "--race", "--race-delay", "0.002"], tmp_path / "race", "--cases", "RLC-1,RLC-4.1,RLC-5", exit_code=3
        ),
        "counts-rejected": lambda: against_demo(
            [*tb, "--counts-rejected"], tmp_path / "counts", "--cases", "RLC-3.1", exit_code=3
        ),
        "counts-rejected declared": lambda: against_demo(
            [*tb, "--counts-rejected"],
            tmp_path / "counts-declared",
            "--cases",
            "RLC-3.1",
            "--limit-counts-rejected",
            exit_code=0,
        ),
        "no-retry-after": lambda: against_demo(
            [*tb, "--no-retry-after"], tmp_path / "no-ra", "--cases", "RLC-7.2,RLC-8.1", exit_code=0
        ),
        "no-retry-after strict": lambda: against_demo(
            [*tb, "--no-retry-after"],
            tmp_path / "no-ra-strict",
            "--cases",
            "RLC-8.1",
            "--strict-headers",
            exit_code=3,
        ),
    }
    r = concurrently(jobs)
    per_node = grades(r["per-node"])
    assert per_node == {"RLC-2.2": "FAILED", "RLC-4.1": "FAILED", "RLC-4.2": "FAILED", "RLC-5.1": "FAILED"}
    assert case(r["per-node"], "RLC-4.1")["details"]["scope_seen"] == "per node (each of the 3 nodes alone)"
    assert "each of the 3 nodes enforcing the limit alone" in case(r["per-node"], "RLC-4.1")["reason"]
    # declared as what it is, the same cluster conforms: each node is offered the multiple of its own limit
    declared = r["per-node declared"]
    assert set(grades(declared).values()) == {"OK"}, grades(declared)
    assert case(declared, "RLC-4.1")["details"]["scope_seen"] == "per node"
    race = grades(r["race"])
    assert race == {"RLC-1.1": "OK", "RLC-4.1": "OK", "RLC-5.1": "FAILED"}, race
    assert "lost each other's updates" in case(r["race"], "RLC-5.1")["reason"]
    counts = case(r["counts-rejected"], "RLC-3.1")
    assert counts["grade"] == "FAILED" and "--limit-counts-rejected" in counts["reason"]
    assert counts["details"]["goodput"] < 0.2 * counts["details"]["limit_rate"]
    assert grades(r["counts-rejected declared"]) == {"RLC-3.1": "OK"}
    assert grades(r["no-retry-after"]) == {"RLC-7.2": "NON-STRICT", "RLC-8.1": "NON-STRICT"}
    assert grades(r["no-retry-after strict"]) == {"RLC-8.1": "FAILED"}


def test_distributed_over_a_master_and_two_workers(tmp_path):
    """The master deals each phase's shots over its workers and grades their records: the same grades as
    standalone, volleys released across both workers."""
    with demo_cluster("--algorithm", "token-bucket", *DEMO) as cluster:
        port = free_port()
        args = conformance_args(cluster.node_hosts, tmp_path, "--cases", "RLC-1,RLC-2.2,RLC-5,RLC-7.1")
        master = Proc(
            [
                *args,
                "--master",
                "--master-bind-host",
                "127.0.0.1",
                "--master-bind-port",
                str(port),
                "--expect-workers",
                "2",
                "--expect-workers-max-wait",
                "30",
            ]
        )
        with running(master):
            workers = [worker(port, locustfile=LOCUSTFILE) for _ in range(2)]
            try:
                code = master.wait(240)
            finally:
                for w in workers:
                    w.stop()
    data = json.loads((tmp_path / "c.json").read_text())
    assert code == 0, (grades(data), master.output[-3000:])
    assert grades(data) == {"RLC-1.1": "OK", "RLC-2.2": "OK", "RLC-5.1": "OK", "RLC-7.1": "OK"}


def test_bad_input_is_one_line_and_exit_code_2(tmp_path):
    for args, words in (
        (["--limit", "0"], "--limit is 0"),
        (["--cases", "RLC-99"], "--cases names 'RLC-99'"),
        (["--limit-algorithm", "auto"], "--limit-algorithm is auto"),
    ):
        proc = Proc([*LOCUST, "-f", str(LOCUSTFILE), "--headless", "--node-hosts", "http://127.0.0.1:1", *LIMIT, *args])
        with running(proc):
            assert proc.wait(60) == 2
        errors = [line for line in proc.lines if line.startswith("error:")]
        assert len(errors) == 1 and words in errors[0], proc.output


def test_metrics_and_sigterm_report_what_was_graded(tmp_path):
    """/metrics carries a gauge per case and grade while it runs; SIGTERM stops after the phase under way, prints
    the table with the cases not run as INCONCLUSIVE, and exits 4."""
    with demo_cluster("--algorithm", "token-bucket", *DEMO) as cluster:
        args = conformance_args(cluster.node_hosts, tmp_path, "--cases", "RLC-1,RLC-2,RLC-3")
        args[args.index("--metrics-linger") + 1] = "10"
        proc = Proc(args)
        with running(proc):
            url = proc.wait_for(r"Prometheus metrics at (\S+)", timeout=30).group(1)
            proc.wait_for(r"RLC-1.1 OK", timeout=60)
            samples = scrape(url, "rlsuite_conformance_case")
            on = {(s.labels["case"], s.labels["grade"]) for s in samples if s.value == 1}
            assert ("RLC-1.1", "ok") in on and ("RLC-3.1", "pending") in on
            assert len(samples) == 6 * 7  # 6 cases x (6 grades + pending)
            proc.signal(signal.SIGTERM)
            code = proc.wait(60)
    data = json.loads((tmp_path / "c.json").read_text())
    assert code == 4 == data["exit_code"], proc.output[-3000:]
    assert grades(data)["RLC-1.1"] == "OK" and grades(data)["RLC-3.1"] == "INCONCLUSIVE"
    assert "the run was stopped" in case(data, "RLC-3.1")["reason"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
