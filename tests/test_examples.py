"""The extension API end to end: each locustfile of locustfiles/examples/ builds its own requests (PacedUser), runs
headless against the demo cluster and gets the right verdict; a policy file with two routes fails exactly the route
the cluster breaks; the suite installed with pip into a fresh virtualenv runs an example from another directory."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT, demo_cluster, processes, run_locust, sample_sum

pytestmark = pytest.mark.integration

EXAMPLES = ROOT / "locustfiles" / "examples"
REQUESTS = "rlsuite_requests_total"
# a few seconds at a steady rate well above each limit: enough for the verdict to tell twice the limit
SHORT_RUN = ["-t", "4s", "--burst-duration", "0", "--stats-interval", "0"]


def test_a_json_post_with_a_bearer_token_per_tenant_is_paced_counted_and_judged_per_tenant(tmp_path):
    # the cluster tells tenants apart by their token; the suite by its API keys: 10/s for each of them
    with demo_cluster("--key-header", "Authorization", "--limit", "10", "--window", "1") as cluster:
        run = run_locust(
            cluster.node_hosts,
            tmp_path,
            *SHORT_RUN,
            "--steady-rps",
            "100",
            "--api-keys",
            "acme,globex",
            "--limit",
            "10",
            "--window",
            "1",
            locustfile=EXAMPLES / "tenant_post.py",
        )
        admitted = cluster.server_total("admitted")
    out = run.proc.output
    assert "Verdict: PASS  (declared: token bucket, 10 per 1s, capacity 10; global)" in out
    stats = json.loads(run.json_file.read_text())
    assert {(e["method"], e["name"]) for e in stats} == {("POST", "POST /v1/orders")}  # the user's own request
    assert sample_sum(run.metrics, REQUESTS) == run.locust_requests == 400
    assert sample_sum(run.metrics, REQUESTS, outcome="allowed") == admitted
    # two partitions of 10/s over 4 s: about twice what one would admit, far below the 400 offered
    assert 2 * (10 + 10 * 4) * 0.8 <= admitted <= 2 * (10 + 10 * 4) + 2


def test_a_policy_file_with_two_routes_fails_exactly_the_route_whose_limit_the_cluster_breaks(tmp_path):
    # search holds its global 20/s; export is limited per node: 3 nodes admit about 3 x 5/s
    with demo_cluster("--route", "/v1/search=20/1", "--route", "/v1/export=5/1:per-node") as cluster:
        run = run_locust(
            cluster.node_hosts,
            tmp_path,
            *SHORT_RUN,
            "--steady-rps",
            "150",
            *processes(2),  # workers match requests to policies with the routes the master's plan carries
            "--policy-file",
            str(EXAMPLES / "two_routes.toml"),
            "--verdict-json",
            str(tmp_path / "verdict.json"),
            "--csv",
            str(tmp_path / "out"),
            locustfile=EXAMPLES / "two_routes.py",
            exit_code=3,
        )
    out = run.proc.output
    assert "Verdict: FAIL  (2 policies: search PASS, export FAIL)" in out
    assert "Policy search: PASS  (declared: token bucket, 20 per 1s, capacity 20; global; route /v1/search, GET)" in out
    assert "Policy export: FAIL" in out and "as if each of the 3 nodes enforced the limit alone" in out
    verdict = json.loads((tmp_path / "verdict.json").read_text())
    assert verdict["result"] == "fail" and verdict["exit_code"] == 3
    assert {p["name"]: p["result"] for p in verdict["policies"]} == {"search": "pass", "export": "fail"}
    search, export = verdict["policies"]
    assert sum(r["over"] + r["under"] for r in search["rows"]) == 0 and sum(r["over"] for r in export["rows"]) > 0
    # /metrics: every request under its policy (every other slot each), a verdict per policy
    assert sample_sum(run.metrics, REQUESTS, policy="search") == sample_sum(run.metrics, REQUESTS, policy="export")
    assert sample_sum(run.metrics, REQUESTS) == run.locust_requests == 600
    assert sample_sum(run.metrics, REQUESTS, policy="unmatched") == 0
    assert sample_sum(run.metrics, "rlsuite_policy_verdict", policy="search", result="pass") == 1
    assert sample_sum(run.metrics, "rlsuite_policy_verdict", policy="export", result="fail") == 1
    assert sample_sum(run.metrics, "rlsuite_verdict", result="fail") == 1
    assert sample_sum(run.metrics, "rlsuite_verdict_disagreements", policy="search") == 0
    assert sample_sum(run.metrics, "rlsuite_verdict_disagreements", policy="export", kind="over") > 0
    # --csv: the files parse, and every row of the policy column is what /metrics says
    with (tmp_path / "out_rlsuite.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["Policy"] for r in rows} == {"search", "export"}
    for row in rows:
        node = {} if row["Node"] == "all" else {"node": row["Node"]}
        labels = {"policy": row["Policy"], "mode": row["Mode"], "outcome": row["Outcome"], **node}
        assert int(row["Requests"]) == sample_sum(run.metrics, REQUESTS, **labels), row
    with (tmp_path / "out_rlsuite_history.csv").open() as f:
        history = [r for r in csv.DictReader(f) if r["Node"] == "all"]
    assert sum(int(r["Allowed"]) + int(r["Limited"]) for r in history) == 600


def test_weighted_requests_are_judged_by_their_cost(tmp_path):
    # 1 to 4 units a request, 60 requests/s (150 units/s) against 40 units/s
    with demo_cluster("--cost-header", "X-Cost", "--limit", "40", "--window", "1") as cluster:
        run = run_locust(
            cluster.node_hosts,
            tmp_path,
            *SHORT_RUN,
            "--steady-rps",
            "60",
            "--limit",
            "40",
            "--window",
            "1",
            locustfile=EXAMPLES / "weighted.py",
        )
        admitted = cluster.server_total("admitted")
    out = run.proc.output
    assert "Verdict: PASS  (declared: token bucket, 40 per 1s, capacity 40; global)" in out
    assert "replayed on this run's requests: caught" in out
    assert sample_sum(run.metrics, REQUESTS, outcome="allowed") == admitted
    # admitted in units: at most the capacity and 4 s of refill; as requests far fewer than 40 + 160
    assert admitted < 40 + 40 * 4


def test_pip_install_into_a_fresh_virtualenv_runs_an_example_from_another_directory(tmp_path):
    venv, elsewhere = tmp_path / "venv", tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # the package's real dependencies resolve from the machine's index or wheel cache (pip's own configuration)
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(ROOT)], capture_output=True, text=True, timeout=300
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    example = elsewhere / "tenant_post.py"  # a copy: nothing of the repository is on the path
    example.write_text((EXAMPLES / "tenant_post.py").read_text())
    located = subprocess.run(
        [str(python), "-c", "import rlsuite; print(rlsuite.__file__)"], cwd=elsewhere, capture_output=True, text=True
    )
    assert Path(located.stdout.strip()).is_relative_to(venv), located
    with demo_cluster(
        "--key-header", "Authorization", "--limit", "10", command=[str(venv / "bin" / "rlsuite-demo")], cwd=elsewhere
    ) as cluster:
        run = run_locust(
            cluster.node_hosts,
            tmp_path,
            *SHORT_RUN,
            "--steady-rps",
            "50",
            "--api-keys",
            "acme,globex",
            "--limit",
            "10",
            locustfile=example,
            locust=[str(python), "-m", "locust"],
            cwd=elsewhere,
        )
    assert "Verdict: PASS" in run.proc.output
    assert sample_sum(run.metrics, REQUESTS) == run.locust_requests == 200


UNSENT_SOME = """
from locust import events
from rlsuite import PacedUser, SteadyBurstShape, register

register(events)


class EveryFifthFails(PacedUser):
    def send(self, slot):
        if slot.number % 5 == 0:
            raise RuntimeError("no request for this slot")
        if slot.number % 5 == 1:
            return  # nothing sent either
        self.client.get(slot.url, name="GET /")
"""


def test_a_slot_whose_send_makes_no_request_is_counted_dropped_not_lost(tmp_path):
    locustfile = tmp_path / "unsent.py"
    locustfile.write_text(UNSENT_SOME)
    with demo_cluster("--limit", "100000") as cluster:
        # 3 s at 50/s: 150 slots, of which numbers 0, 5, 10, ... raise and 1, 6, 11, ... return without a request
        run = run_locust(
            cluster.node_hosts,
            tmp_path,
            *SHORT_RUN[2:],
            "-t",
            "3s",
            "--steady-rps",
            "50",
            locustfile=locustfile,
            exit_code=1,  # Locust's: a user's task raised
            user_error=True,
        )
    assert sample_sum(run.metrics, REQUESTS) == run.locust_requests == 90
    assert sample_sum(run.metrics, "rlsuite_dropped_sends_total", mode="steady") == 60
    assert run.proc.output.count("returned or raised without making a request") == 1
