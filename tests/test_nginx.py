"""nginx's limit_req, a limiter we did not write: its leaky bucket judged by the verdict, and paced traffic.

nginx trips on users that fire in synchronized lumps (as plain constant_throughput users spawned together do) even
when their average rate is below its limit; the suite's paced slots must not. Its zones are per nginx process:
nodes of one process share a limit, nodes of several processes each enforce it alone.
"""

import json
import os
import subprocess
import textwrap
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    INSTALL_NGINX,
    LOCUST,
    Proc,
    free_port,
    listening,
    need_command,
    run_locust,
    running,
    sample_sum,
    wait_until,
)

pytestmark = pytest.mark.integration


def wait_for_port(port: int, proc: Proc, timeout: float = 10) -> None:
    """Poll until nginx accepts connections on ``port`` (it prints nothing when ready)."""

    def up() -> bool:
        assert proc.popen.poll() is None, proc.output
        return listening(port, timeout=0.2)

    wait_until(up, timeout, f"nginx to listen on {port}")


def start_nginx(where: Path, ports: list[int], rate: int = 100, burst: int = 1, nodelay: bool = True) -> Proc:
    """One nginx whose server blocks (one per port) share a limit_req zone of ``rate`` r/s: one global limit."""
    binary = need_command("nginx", INSTALL_NGINX, "/usr/sbin/nginx")
    where.mkdir(parents=True, exist_ok=True)
    www = where / "www"
    www.mkdir(exist_ok=True)
    (www / "index.html").write_text("ok\n")
    queue = f"burst={burst}" + (" nodelay" if nodelay else "")
    servers = "\n".join(
        f"server {{ listen 127.0.0.1:{p}; location / {{ limit_req zone=cluster {queue}; root {www}; }} }}"
        for p in ports
    )
    temp = "\n".join(
        f"{name}_temp_path {where}/{name};" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = where / "nginx.conf"
    conf.write_text(
        textwrap.dedent(f"""\
        {"user root;" if os.geteuid() == 0 else ""}
        worker_processes 1;
        daemon off;
        pid {where}/nginx.pid;
        error_log {where}/error.log;
        events {{ worker_connections 1024; }}
        http {{
            access_log off;
            {temp}
            map $host $limit_key {{ default "cluster"; }}  # one key for every node: a global limit
            limit_req_zone $limit_key zone=cluster:1m rate={rate}r/s;
            {servers}
        }}
    """)
    )
    proc = Proc([binary, "-p", str(where), "-c", str(conf)])
    try:
        for p in ports:
            wait_for_port(p, proc)
    except BaseException:
        proc.stop()
        raise
    return proc


@contextmanager
def nginx_nodes(tmp_path: Path, instances: int, ports_each: int, **limit: Any) -> Iterator[str]:
    """``instances`` nginx processes (each its own zone: nodes of different instances limit alone), with
    ``ports_each`` nodes sharing each instance's zone; the --node-hosts value."""
    ports = [[free_port() for _ in range(ports_each)] for _ in range(instances)]
    with ExitStack() as stack:
        for i, mine in enumerate(ports):
            stack.enter_context(running(start_nginx(tmp_path / f"nginx{i}", mine, **limit)))
        yield ",".join(f"http://127.0.0.1:{p}" for mine in ports for p in mine)


@pytest.fixture
def nginx_cluster(tmp_path):
    """Three 'nodes' (server blocks) of one nginx sharing a limit_req zone of 100 r/s, burst 1, answering 503."""
    with nginx_nodes(tmp_path, 1, 3) as hosts:
        yield hosts


def test_paced_steady_traffic_below_the_limit_never_trips_a_strict_leaky_bucket(nginx_cluster, tmp_path):
    run = run_locust(
        nginx_cluster,
        tmp_path,
        "-t",
        "4s",
        "--steady-rps",
        "90",
        "--burst-duration",
        "0",
        "--rejection-statuses",
        "429,503",
    )
    assert sample_sum(run.metrics, "rlsuite_requests_total", outcome="allowed") == 360 == run.locust_requests
    assert sample_sum(run.metrics, "rlsuite_requests_total", outcome="limited") == 0


def test_the_same_rate_in_synchronized_lumps_does_trip_it(nginx_cluster, tmp_path):
    """The control: plain constant_throughput users spawned together, 90 requests/s on average too."""
    lumpy = tmp_path / "lumpy.py"
    lumpy.write_text(
        textwrap.dedent(f"""\
        from locust import FastHttpUser, constant_throughput, task

        NODES = {nginx_cluster.split(",")!r}

        class Lumpy(FastHttpUser):
            host = NODES[0]
            wait_time = constant_throughput(3)

            @task
            def hit(self):
                for node in NODES:
                    with self.client.get(node + "/", name=node, catch_response=True) as r:
                        if r.status_code == 503:
                            r.success()
    """)
    )
    result = subprocess.run(
        [
            *LOCUST,
            "-f",
            str(lumpy),
            "--headless",
            "-u",
            "10",
            "-r",
            "100",
            "-t",
            "4s",
            "--only-summary",
            "--json-file",
            str(tmp_path / "lumpy"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    log = (tmp_path / "nginx0" / "error.log").read_text()
    assert log.count("limiting requests") > 0  # nginx rejected some of the lumps


VERDICT_LOAD = ["-t", "5s", "--steady-rps", "300", "--burst-duration", "0", "--rejection-statuses", "429,503"]
DECLARED = ["--limit", "100", "--window", "1", "--limit-algorithm", "leaky-bucket", "--limit-burst", "5"]


@pytest.mark.parametrize(
    ("instances", "ports_each", "nodelay", "expected"),
    [(1, 3, True, "pass"), (1, 3, False, "pass"), (2, 1, True, "fail"), (3, 1, True, "fail")],
    ids=["global-nodelay", "global-delay", "per-node-2", "per-node-3"],
)
def test_the_verdict_on_nginx_limit_req(tmp_path, instances, ports_each, nodelay, expected):
    # 3x nginx's rate: one zone admits 100/s (plus its burst); zones per process admit 100/s each
    declared = [*DECLARED, *([] if nodelay else ["--limit-delay"])]
    with nginx_nodes(tmp_path, instances, ports_each, burst=5, nodelay=nodelay) as hosts:
        run = run_locust(
            hosts,
            tmp_path,
            *VERDICT_LOAD,
            *declared,
            "--verdict-json",
            str(tmp_path / "v.json"),
            exit_code=0 if expected == "pass" else 3,
        )
    verdict = json.loads((tmp_path / "v.json").read_text())
    admitted = sample_sum(run.metrics, "rlsuite_requests_total", outcome="allowed")
    assert verdict["result"] == expected, verdict["reasons"]
    if expected == "pass":
        assert admitted == pytest.approx(100 * 5 + 6, abs=8) and verdict["double_caught"] > 0
    else:
        assert admitted == pytest.approx(instances * (100 * 5 + 6), abs=8 * instances)
        assert verdict["reasons"][0].endswith(f"as if each of the {instances} nodes enforced the limit alone")
