"""End to end: `locust -f locustfiles/ratelimit.py --headless` against the demo cluster, all real processes."""

import csv
import json
import re
import signal

import pytest

from tests.support import (
    Proc,
    demo_cluster,
    locust_args,
    processes,
    redis_server,
    run_locust,
    running,
    sample_sum,
    scrape,
)

pytestmark = pytest.mark.integration

REQUESTS = "rlsuite_requests_total"


def per(run, **labels):
    return sample_sum(run.metrics, REQUESTS, **labels)


def stage_ratio_range(output):
    m = re.search(r"Stage rates: \d+ stages; achieved/target from ([\d.]+) .* to ([\d.]+) ", output)
    assert m, output
    return float(m.group(1)), float(m.group(2))


def test_steady_and_burst_run_counts_exactly_and_paces_every_stage(tmp_path):
    # limit 120/s: steady (60/s) stays under it, bursts (240/s) are about half limited
    with demo_cluster("--limit", "120", "--window", "1") as cluster:
        run = run_locust(
            cluster.node_hosts,
            tmp_path,
            "--limit",
            "120",
            "--window",
            "1",
            "-t",
            "15s",
            "--steady-rps",
            "60",
            "--burst-multiplier",
            "4",
            "--burst-every",
            "6",
            "--burst-duration",
            "3",
            "--stats-interval",
            "2",
            "--csv",
            str(tmp_path / "out"),
        )
        server = cluster.server_counts()

    out = run.proc.output
    # 429s are successes, nothing failed, and the suite's counters add up to Locust's own count
    assert run.locust_failures == 0
    assert per(run, outcome="error") == 0
    assert per(run, outcome="limited") > 100
    assert per(run) == run.locust_requests == 60 * 9 + 240 * 6  # every slot of the schedule was sent
    # client counts == what the limiter itself counted
    assert per(run, outcome="allowed") == sum(n.get("admitted", 0) for n in server.values())
    assert per(run, outcome="limited") == sum(n.get("limited", 0) for n in server.values())
    # the burst rate is the multiplier times the steady rate (9 s steady, 6 s burst)
    steady_rate, burst_rate = per(run, mode="steady") / 9, per(run, mode="burst") / 6
    assert burst_rate / steady_rate == pytest.approx(4, rel=0.05)
    # every stage within 5% of its target, counted by request start time
    lo, hi = stage_ratio_range(out)
    assert 0.95 <= lo <= hi <= 1.05
    # round-robin: each node got a third of the requests, within 2%
    for url in cluster.urls:
        node = url.removeprefix("http://")
        assert per(run, node=node) / per(run) == pytest.approx(1 / 3, abs=0.02)
    # steady traffic below the limit is (almost) never limited; bursts are
    assert per(run, mode="steady", outcome="limited") <= 0.01 * per(run, mode="steady")
    assert per(run, mode="burst", outcome="limited") >= 0.3 * per(run, mode="burst")
    # the status line (mode, target vs achieved rate, outcome counts) and the end-of-run summary
    assert re.search(
        r"\[rlsuite\] STEADY .*target +\d+\.\d/s +achieved +\d+\.\d/s .*allowed \d+ +limited \d+ +error 0", out
    )
    assert re.search(r"\[rlsuite\] BURST ", out)
    assert "Rate-limiter summary: 3 node(s), 15s of load (steady 9s, burst 6s)" in out
    assert f"Locust counted {run.locust_requests} requests; the suite counted {run.locust_requests}." in out
    # the cluster enforces what was declared: the verdict passes, and says what the target advertised
    assert "Verdict: PASS  (declared: token bucket, 120 per 1s, capacity 120; global)" in out
    # 3 s bursts at twice the limit: a cluster admitting 1.4x the limit would have been caught
    detectable = float(re.search(r"Detectable: a cluster admitting ([\d.]+)x the limit", out).group(1))
    assert 1.0 < detectable < 1.5
    assert 'Advertised by the target: RateLimit-Policy "default" q=120 w=1' in out
    assert "Header findings: none" in out
    assert sample_sum(run.metrics, "rlsuite_verdict", result="pass") == 1
    # --csv: the suite's files beside Locust's, the same counts as /metrics, a row per node and second
    with (tmp_path / "out_rlsuite.csv").open() as f:
        totals = list(csv.DictReader(f))
    for row in totals:
        node = {} if row["Node"] == "all" else {"node": row["Node"]}
        assert int(row["Requests"]) == per(run, mode=row["Mode"], outcome=row["Outcome"], **node), row
    with (tmp_path / "out_rlsuite_history.csv").open() as f:
        history = list(csv.DictReader(f))
    seconds = [int(r["Elapsed"]) for r in history if r["Node"] == "all"]
    assert seconds[:15] == list(range(15)) and len(seconds) <= 16  # (a request may start just after the end)
    for outcome in ("Allowed", "Limited", "Error"):
        assert sum(int(r[outcome]) for r in history if r["Node"] == "all") == per(run, outcome=outcome.lower())
    assert (tmp_path / "out_stats.csv").exists()  # Locust's own files are still there


@pytest.mark.parametrize(
    ("scope", "workers", "factor", "code"),
    [("global", 0, 1, 0), ("per-node", 0, 3, 3), ("per-node", 2, 3, 3)],
    ids=["global", "per-node", "per-node-distributed"],
)
def test_the_verdict_catches_a_cluster_that_enforces_the_limit_per_node(tmp_path, scope, workers, factor, code):
    # fixed window of 20 per second, offered 150/s: a global limit admits 20/s, a per-node one 3 x 20/s
    declared = ["--limit", "20", "--window", "1", "--limit-algorithm", "fixed-window", "--window-alignment", "epoch"]
    with demo_cluster("--algorithm", "fixed-window", "--limit", "20", "--window", "1", "--scope", scope) as cluster:
        run = run_locust(
            cluster.node_hosts,
            tmp_path,
            "-t",
            "5s",
            "--steady-rps",
            "150",
            "--burst-duration",
            "0",
            *declared,
            "--verdict-json",
            str(tmp_path / "verdict.json"),
            *(processes(workers) if workers else ()),
            exit_code=code,
        )
        admitted = cluster.server_total("admitted")
    assert per(run, outcome="allowed") == admitted
    assert admitted / 5 == pytest.approx(20 * factor, rel=0.05)
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["exit_code"] == code
    if factor == 1:
        assert verdict["result"] == "pass" and verdict["reasons"] == []
    else:
        assert verdict["result"] == "fail"
        reason = verdict["reasons"][0]
        assert re.search(
            r"\d+ admissions more than the model allows \(fixed window, 20 per 1s, windows aligned: ", reason
        )
        over = sum(row["over"] for row in verdict["rows"])
        assert admitted - over <= 20 * 5 + 20  # what a global limit could admit in 5 s (and the 6th window begun)
        assert float(re.search(r"([\d.]+)x what it could admit", reason).group(1)) == pytest.approx(3, abs=0.3)
        assert reason.endswith("the cluster over-admits, as if each of the 3 nodes enforced the limit alone")
        assert "Verdict: FAIL" in run.proc.output and "Shutting down (exit code 3)" in run.proc.output


def test_a_limiter_stricter_than_declared_fails_with_under_admission(tmp_path):
    # the cluster admits 60/s, the policy says 120/s: steady 100/s should pass untouched, but 40% is limited
    with demo_cluster("--limit", "60", "--window", "1") as cluster:
        run = run_locust(
            cluster.node_hosts,
            tmp_path,
            "-t",
            "4s",
            "--steady-rps",
            "100",
            "--burst-duration",
            "0",
            "--limit",
            "120",
            "--window",
            "1",
            exit_code=3,
        )
    reason = re.search(r"Reason: (\d+) requests were limited although the model \(token bucket, .*", run.proc.output)
    assert reason and int(reason.group(1)) > 100, run.proc.output[-3000:]
    assert "would have admitted them at any timing" in reason.group(0) and "the cluster under-admits" in reason.group(0)


@pytest.mark.parametrize(("strict", "code"), [(False, 0), (True, 3)], ids=["findings-reported", "strict-headers"])
def test_a_target_without_retry_after_is_a_finding_that_fails_only_when_strict(tmp_path, strict, code):
    with demo_cluster("--limit", "40", "--window", "1", "--no-retry-after") as cluster:
        run = run_locust(
            cluster.node_hosts,
            tmp_path,
            "-t",
            "5s",
            "--steady-rps",
            "30",
            "--burst-multiplier",
            "4",
            "--burst-every",
            "3",
            "--burst-duration",
            "2",
            "--limit",
            "40",
            "--window",
            "1",
            *(["--strict-headers"] if strict else []),
            exit_code=code,
        )
    out = run.proc.output
    limited = int(per(run, outcome="limited"))
    assert limited > 0
    assert f"Header findings: retry_after_missing x{limited}" in out
    assert "e.g. retry_after_missing: 127.0.0.1:" in out and "a limited answer without Retry-After" in out
    assert sample_sum(run.metrics, "rlsuite_header_findings_total", rule="retry_after_missing") == limited
    assert ("Verdict: FAIL" in out) == strict


def test_redis_backend_shares_one_global_limit_across_node_processes(tmp_path, redis_available):
    with (
        redis_server() as redis_url,
        demo_cluster(
            "--backend",
            "redis",
            "--redis-url",
            redis_url,
            "--algorithm",
            "fixed-window",
            "--limit",
            "50",
            "--window",
            "1",
        ) as cluster,
    ):
        run = run_locust(
            cluster.node_hosts,
            tmp_path,
            "-t",
            "8s",
            "--steady-rps",
            "30",
            "--burst-multiplier",
            "4",
            "--burst-every",
            "4",
            "--burst-duration",
            "2",
        )
        server = cluster.server_counts()
    assert run.locust_failures == 0
    assert per(run, outcome="allowed") == sum(n.get("admitted", 0) for n in server.values())
    assert per(run, outcome="limited") == sum(n.get("limited", 0) for n in server.values())
    # steady 30/s is all admitted; bursts offer 120/s and get the global 50/s, not 3 x 50
    assert per(run, mode="steady", outcome="limited") == 0
    assert per(run, mode="burst", outcome="allowed") / 2 == pytest.approx(50, rel=0.05)  # one 2 s burst


def test_sigterm_stops_prints_and_exports_the_final_counts(tmp_path):
    with demo_cluster("--limit", "1000") as cluster:
        proc = Proc(
            locust_args(
                cluster.node_hosts,
                "--steady-rps",
                "50",
                "--stats-interval",
                "1",
                "--metrics-linger",
                "30",
                "--json-file",
                str(tmp_path / "stats"),
            )
        )
        with running(proc):
            proc.wait_for(r"\[rlsuite\] STEADY ", timeout=30)
            proc.signal(signal.SIGTERM)
            url = proc.wait_for(r"waiting up to \S+ for a last scrape of (\S+)", timeout=30).group(1)
            total = sample_sum(scrape(url), REQUESTS)
            assert proc.wait(30) == 0
    import json

    locust_total = sum(e["num_requests"] for e in json.loads((tmp_path / "stats.json").read_text()))
    assert total == locust_total > 0
    assert "Rate-limiter summary:" in proc.output and "Traceback" not in proc.output
