"""Evenly spaced requests against a strict leaky bucket: nginx's limit_req with a burst of 1.

nginx trips on users that fire in synchronized lumps (as plain constant_throughput users spawned together do) even
when their average rate is below its limit; the suite's paced slots must not.
"""

import os
import subprocess
import textwrap

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


@pytest.fixture
def nginx_cluster(tmp_path):
    """Three 'nodes' (server blocks) of one nginx sharing a limit_req zone of 100 r/s, burst 1, answering 503."""
    binary = need_command("nginx", INSTALL_NGINX, "/usr/sbin/nginx")
    www = tmp_path / "www"
    www.mkdir()
    (www / "index.html").write_text("ok\n")
    ports = [free_port() for _ in range(3)]
    servers = "\n".join(
        f"server {{ listen 127.0.0.1:{p}; location / {{ limit_req zone=cluster burst=1 nodelay; root {www}; }} }}"
        for p in ports
    )
    temp = "\n".join(
        f"{name}_temp_path {tmp_path}/{name};" for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        textwrap.dedent(f"""\
        {"user root;" if os.geteuid() == 0 else ""}
        worker_processes 1;
        daemon off;
        pid {tmp_path}/nginx.pid;
        error_log {tmp_path}/error.log;
        events {{ worker_connections 1024; }}
        http {{
            access_log off;
            {temp}
            map $host $limit_key {{ default "cluster"; }}  # one key for every node: a global limit
            limit_req_zone $limit_key zone=cluster:1m rate=100r/s;
            {servers}
        }}
    """)
    )
    proc = Proc([binary, "-p", str(tmp_path), "-c", str(conf)])
    with running(proc):
        for p in ports:
            wait_for_port(p, proc)
        yield ",".join(f"http://127.0.0.1:{p}" for p in ports)


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
    log = (tmp_path / "error.log").read_text()
    assert log.count("limiting requests") > 0  # nginx rejected some of the lumps
