"""The verdict against real clusters, ours and a library we did not write: every algorithm, correct and broken.

Each case starts a cluster, offers 5x its limit for a few seconds through the real CLI and reads the verdict JSON:
a correct global limit must PASS; nodes that each enforce the limit alone (2 or 3 of them) and nodes that race on
a shared state must FAIL with over-admission. Cases run a few at a time (each is a few processes at 100 req/s).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from tests.support import DEMO_ALGORITHMS, demo_cluster, processes, run_locust
from tests.thirdparty.harness import limits_cluster

pytestmark = pytest.mark.integration

LIMIT = 20
LOAD = ["-t", "4s", "--steady-rps", str(5 * LIMIT), "--burst-duration", "0", "--limit", str(LIMIT), "--window", "1"]
DEMO = DEMO_ALGORITHMS
# the limits library's strategies, and what to declare for each (see tests/thirdparty/limits_app.py)
LIMITS = {
    "fixed-window": ["--limit-algorithm", "fixed-window", "--window-alignment", "first-request"],
    "moving-window": ["--limit-algorithm", "sliding-log"],
    "sliding-window-counter": ["--limit-algorithm", "sliding-window-counter"],
}


def check(
    cluster: Callable[[], AbstractContextManager], declared: list[str], tmp_path: Path, code: int, extra=()
) -> dict:
    with cluster() as c:
        run_locust(
            c.node_hosts, tmp_path, *LOAD, *declared, *extra, "--verdict-json", str(tmp_path / "v.json"), exit_code=code
        )
    return json.loads((tmp_path / "v.json").read_text())


def run_cases(cases: list[tuple], tmp_path: Path) -> None:
    def one(case):
        name, cluster, declared, expected, nodes, extra = case
        where = tmp_path / name.replace(" ", "_")
        where.mkdir()
        code = {"pass": 0, "fail": 3}[expected]
        verdict = check(cluster, declared, where, code, extra)
        assert verdict["result"] == expected, (name, verdict["reasons"])
        over = sum(r["over"] for r in verdict["rows"])
        if expected == "pass":
            assert over == 0 and verdict["detectable"] < 2, (name, verdict)
        else:
            assert over > 0 and "the cluster over-admits" in verdict["reasons"][0], (name, verdict["reasons"])
            if nodes:
                assert f"as if each of the {nodes} nodes enforced the limit alone" in verdict["reasons"][0], (
                    name,
                    verdict["reasons"],
                )
        return name

    with ThreadPoolExecutor(3) as pool:
        done = list(pool.map(one, cases))
    assert len(done) == len(cases)


@pytest.mark.parametrize("algorithm", DEMO)
def test_demo_limiter_each_algorithm_correct_per_node_and_racing(tmp_path, algorithm):
    limiter, declared = DEMO[algorithm]
    base = [*limiter, "--limit", str(LIMIT), "--window", "1"]
    cases = [
        ("global", lambda: demo_cluster(*base), declared, "pass", 0, ()),
        ("per-node 2", lambda: demo_cluster("--nodes", "2", "--scope", "per-node", *base), declared, "fail", 2, ()),
        ("per-node 3", lambda: demo_cluster("--scope", "per-node", *base), declared, "fail", 3, ()),
        # read-then-write without atomicity: requests 2.5 ms apart overlap the 10 ms between read and write
        (
            "race",
            lambda: demo_cluster("--race", "--race-delay", "0.01", *base),
            declared,
            "fail",
            0,
            ("--steady-rps", "400"),
        ),
    ]
    if algorithm == "token-bucket":
        # the same verdicts when two worker processes share the load and the master replays their requests
        cases += [
            ("global, 2 workers", lambda: demo_cluster(*base), declared, "pass", 0, processes(2)),
            (
                "per-node 2, 2 workers",
                lambda: demo_cluster("--nodes", "2", "--scope", "per-node", *base),
                declared,
                "fail",
                2,
                processes(2),
            ),
        ]
    run_cases(cases, tmp_path)


@pytest.mark.parametrize("strategy", LIMITS)
def test_the_limits_library_on_redis_correct_and_per_node(tmp_path, strategy, redis_available):
    declared = LIMITS[strategy]
    cases = [
        ("global", lambda: limits_cluster(strategy, LIMIT, 1, nodes=3), declared, "pass", 0, ()),
        (
            "per-node 2",
            lambda: limits_cluster(strategy, LIMIT, 1, nodes=2, storage="memory"),
            declared,
            "fail",
            2,
            (),
        ),
        (
            "per-node 3",
            lambda: limits_cluster(strategy, LIMIT, 1, nodes=3, storage="memory"),
            declared,
            "fail",
            3,
            (),
        ),
    ]
    run_cases(cases, tmp_path)
