"""The conformance catalogue against nginx limit_req, a limiter we did not write: declared as what it is (a leaky
bucket, burst 5, rejecting with 503), it passes, with and without nodelay. It sends neither Retry-After nor rate-limit
fields: those cases are NON-STRICT or informational, never FAILED."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.test_conformance_clusters import case, grades, run
from tests.test_nginx import nginx_nodes

pytestmark = pytest.mark.integration

DECLARED = ["--limit-algorithm", "leaky-bucket", "--limit-burst", "5", "--rejection-statuses", "429,503"]


@pytest.mark.alone  # its bursts must go out at once: beside two busy shards, RLC-2.3 came out INCONCLUSIVE (rightly)
def test_nginx_limit_req_passes_as_configured(tmp_path):
    def one(nodelay: bool) -> dict:
        where = tmp_path / ("nodelay" if nodelay else "delay")
        with nginx_nodes(where, 1, 3, rate=20, burst=5, nodelay=nodelay) as hosts:
            return run(hosts, where / "run", *DECLARED, *([] if nodelay else ["--limit-delay"]), exit_code=0)

    def per_node() -> dict:
        """Two nginx instances, each its own zone: declared per node, they conform too."""
        where = tmp_path / "per-node"
        with nginx_nodes(where, 2, 1, rate=20, burst=5, nodelay=True) as hosts:
            return run(
                hosts,
                where / "run",
                *DECLARED,
                "--limit-scope",
                "per-node",
                "--cases",
                "RLC-1,RLC-2,RLC-3.1,RLC-4,RLC-5",
                exit_code=0,
            )

    with ThreadPoolExecutor(3) as pool:
        runs = [pool.submit(one, True), pool.submit(one, False), pool.submit(per_node)]
        nodelay, delay, instances = (f.result() for f in runs)
    assert set(grades(instances).values()) == {"OK"}, grades(instances)
    for data in (nodelay, delay):
        g = grades(data)
        assert FAILED_OR_WORSE.isdisjoint(g.values()), g
        assert g["RLC-1.1"] == g["RLC-2.2"] == g["RLC-3.1"] == g["RLC-4.1"] == g["RLC-5.1"] == "OK", g
        assert g["RLC-8.1"] == "NON-STRICT" and "without Retry-After" in case(data, "RLC-8.1")["reason"]
        assert g["RLC-8.2"] == "INFORMATIONAL" and g["RLC-9.1"] == "NOT APPLICABLE"
    assert case(nodelay, "RLC-2.3")["details"]["measured"] == pytest.approx(6, abs=1.5)


FAILED_OR_WORSE = {"FAILED", "INCONCLUSIVE"}
