"""Faults: nothing lost, nothing hidden. Real processes on 127.0.0.1, killed, stopped and restarted by PID."""

import re
import signal

import pytest

from tests.support import (
    Proc,
    RedisServer,
    demo_cluster,
    finish,
    free_port,
    locust_args,
    master_args,
    nodes,
    run_cli,
    running,
    sample_sum,
    scrape,
    taken_port,
    worker,
)

pytestmark = pytest.mark.integration

REQUESTS = "rlsuite_requests_total"


def wait_until_t(proc: Proc, seconds: int, timeout: float = 40) -> None:
    """Until the status line (printed every second with --stats-interval 1) says the run is `seconds` old."""
    proc.wait_for(rf"\[rlsuite\] \w+ +t= *({'|'.join(str(s) for s in range(seconds, seconds + 60))})s", timeout)


def suite_run(node_hosts, tmp_path, *args):
    return Proc(
        locust_args(
            node_hosts, "--stats-interval", "1", "--metrics-linger", "30", "--json-file", str(tmp_path / "stats"), *args
        )
    )


def test_a_node_that_refuses_connections_fails_alone_and_is_back_when_it_returns(tmp_path):
    with nodes(3, "--limit", "100000") as (n1, n2, n3):
        hosts = ",".join(n.url for n in (n1, n2, n3))
        proc = suite_run(
            hosts,
            tmp_path,
            "-t",
            "9s",
            "--steady-rps",
            "60",
            "--burst-duration",
            "0",
            "--request-timeout",
            "0.5",
            "--limit",
            "100000",
        )
        with running(proc):
            wait_until_t(proc, 2)
            n2.kill()
            wait_until_t(proc, 5)
            n2.restart()
            # 4: a limit of 100000/s was never approached, so the verdict cannot pass (it overrides Locust's 1)
            samples, locust_total = finish(proc, tmp_path, exit_code=4)
        server = {n.name: n.admitted_total() for n in (n1, n2, n3)}
    total = sample_sum(samples, REQUESTS)
    assert total == locust_total == 540
    # failures on that node only, labelled by kind; the others kept their exact third of the rate
    refused = sample_sum(samples, "rlsuite_errors_total", node=n2.name, kind="refused")
    assert 20 <= refused <= 100  # 20/s to that node for the 2-3 s it was down
    assert sample_sum(samples, REQUESTS, outcome="error") == refused
    for n in (n1, n3):
        assert sample_sum(samples, REQUESTS, node=n.name, outcome="allowed") == total / 3
    # it was back after its restart, and every count reconciles: client == Prometheus == server
    for n in (n1, n2, n3):
        assert sample_sum(samples, REQUESTS, node=n.name, outcome="allowed") == server[n.name]
    assert server[n2.name] > n2.admitted_before_restart > 0
    out = proc.output
    assert f"{n2.name} " in out and "(down " in out  # the verdict's availability line names the outage
    assert "Verdict: INCONCLUSIVE" in out and "could not tell the declared limit from twice it" in out


def test_a_hanging_node_times_out_while_pacing_and_the_other_nodes_go_on(tmp_path):
    with nodes(3, "--limit", "100000") as (n1, n2, n3):
        hosts = ",".join(n.url for n in (n1, n2, n3))
        proc = suite_run(
            hosts, tmp_path, "-t", "8s", "--steady-rps", "60", "--burst-duration", "0", "--request-timeout", "0.5"
        )
        with running(proc):
            wait_until_t(proc, 2)
            n2.proc.signal(signal.SIGSTOP)  # accepts nothing, answers nothing
            wait_until_t(proc, 5)
            n2.proc.signal(signal.SIGCONT)
            samples, locust_total = finish(proc, tmp_path, exit_code=1)
        server = {n.name: n.admitted_total() for n in (n1, n2, n3)}
    total = sample_sum(samples, REQUESTS)
    assert total == locust_total == 480  # pacing went on: every slot was sent
    timeouts = sample_sum(samples, "rlsuite_errors_total", node=n2.name, kind="timeout")
    assert timeouts >= 20  # 20/s to that node for the 2-3 s it hung
    assert sample_sum(samples, REQUESTS, outcome="error") == timeouts
    assert sample_sum(samples, "rlsuite_dropped_sends_total") == 0
    for n in (n1, n3):  # untouched: their third, all answered, reconciled with the server
        assert sample_sum(samples, REQUESTS, node=n.name, outcome="allowed") == total / 3 == server[n.name]
    # the hung node answered late what it had queued: the client gave up on those, the server still counted them
    allowed_n2 = sample_sum(samples, REQUESTS, node=n2.name, outcome="allowed")
    assert allowed_n2 <= server[n2.name] <= allowed_n2 + timeouts


@pytest.mark.parametrize(("failure", "code"), [("open", 3), ("closed", 4)])
def test_redis_down_under_the_limiter_shows_its_failure_policy_in_the_counts(tmp_path, redis_available, failure, code):
    # 20 admitted per second (fixed window, global through redis); 60/s offered; redis dies 2 s into the run
    limiter = [
        "--algorithm",
        "fixed-window",
        "--limit",
        "20",
        "--window",
        "1",
        "--redis-failure",
        failure,
        "--redis-timeout",
        "0.2",
    ]
    declared = ["--limit", "20", "--window", "1", "--limit-algorithm", "fixed-window"]
    with RedisServer() as redis, nodes(3, "--backend", "redis", "--redis-url", redis.url, *limiter) as cluster:
        hosts = ",".join(n.url for n in cluster)
        proc = suite_run(hosts, tmp_path, "-t", "6s", "--steady-rps", "60", "--burst-duration", "0", *declared)
        with running(proc):
            wait_until_t(proc, 2)
            redis.stop()
            samples, locust_total = finish(proc, tmp_path, exit_code=code)
        server = [n.counts() for n in cluster]
    allowed = sample_sum(samples, REQUESTS, outcome="allowed")
    errors = sample_sum(samples, REQUESTS, outcome="error")
    assert sample_sum(samples, REQUESTS) == locust_total == 360
    assert allowed == sum(c.get("admitted", 0) + c.get("redis_error_open", 0) for c in server)
    if failure == "open":  # fail-open admits everything while redis is down: the verdict sees the over-admission
        assert sum(c.get("redis_error_open", 0) for c in server) > 60 and errors == 0
        assert "Verdict: FAIL" in proc.output and "over-admits" in proc.output
    else:  # fail-closed answers 503: errors by status class, never counted as limited
        assert errors == sum(c.get("redis_error_closed", 0) for c in server) > 60
        assert sample_sum(samples, "rlsuite_errors_total", kind="http_5xx") == errors
        # most requests failed: the limit was hardly tested, and the verdict says so rather than pass
        assert "Verdict: INCONCLUSIVE" in proc.output and "of the requests were answered" in proc.output


def test_5xx_counts_as_limited_only_when_declared_a_rejection_status(tmp_path):
    # a limiter behind nginx limit_req answers 503 when it limits: --rejection-statuses 429,503 says so
    no_redis = f"redis://127.0.0.1:{free_port()}/0"
    with nodes(3, "--backend", "redis", "--redis-url", no_redis, "--redis-failure", "closed") as cluster:
        hosts = ",".join(n.url for n in cluster)
        proc = suite_run(
            hosts,
            tmp_path,
            "-t",
            "3s",
            "--steady-rps",
            "30",
            "--burst-duration",
            "0",
            "--rejection-statuses",
            "429,503",
        )
        with running(proc):
            samples, locust_total = finish(proc, tmp_path, exit_code=0)
        server_closed = sum(n.counts().get("redis_error_closed", 0) for n in cluster)
    assert sample_sum(samples, REQUESTS, outcome="limited") == locust_total == server_closed == 90
    assert sample_sum(samples, REQUESTS, outcome="error") == 0


def test_a_worker_killed_mid_run_makes_the_verdict_inconclusive(tmp_path):
    with demo_cluster("--limit", "100000") as cluster:
        args, port = master_args(
            cluster.node_hosts,
            tmp_path,
            2,
            "--stats-interval",
            "1",
            "-t",
            "12s",
            "--steady-rps",
            "40",
            "--burst-duration",
            "0",
            "--limit",
            "100000",
        )
        with running(Proc(args)) as master, running(worker(port)) as w1, running(worker(port)) as w2:
            url = master.wait_for(r"Prometheus metrics at (\S+)", timeout=30).group(1)
            wait_until_t(master, 2)
            w2.signal(signal.SIGKILL)
            previous = 0.0
            for t in range(3, 11):  # counters never go down, lost worker or not
                wait_until_t(master, t)
                now = sample_sum(scrape(url), REQUESTS)
                assert now >= previous
                previous = now
            samples, locust_total = finish(master, tmp_path, exit_code=4)  # 4: inconclusive
            assert w1.wait(30) == 0
    assert sample_sum(samples, REQUESTS) == locust_total >= previous
    out = master.output
    assert "Verdict: INCONCLUSIVE" in out and "was lost" in out and "(no heartbeat)" in out
    assert re.search(r"Worker \S+ was LOST \(no heartbeat\) \d+(\.\d)?s into the run", out)
    assert "The last worker went missing" not in out  # the master carried on with the other worker


def test_master_sigterm_collects_the_final_worker_reports(tmp_path):
    with demo_cluster("--limit", "100000") as cluster:
        args, port = master_args(cluster.node_hosts, tmp_path, 1, "--stats-interval", "1", "--steady-rps", "40")
        with running(Proc(args)) as master, running(worker(port)) as w:
            wait_until_t(master, 2)
            master.signal(signal.SIGTERM)
            samples, locust_total = finish(master, tmp_path)  # also: the summary has the final worker report
            assert w.wait(30) == 0
    assert sample_sum(samples, REQUESTS) == locust_total > 0
    assert "Rate-limiter summary" in master.output and "Got SIGTERM" in master.output


def test_workers_that_never_connect_give_a_clear_error_not_a_hang():
    result = run_cli(
        [
            "--master",
            "--master-bind-host",
            "127.0.0.1",
            "--master-bind-port",
            str(free_port()),
            "--expect-workers",
            "2",
            "--expect-workers-max-wait",
            "2",
        ]
    )
    assert result.returncode == 1
    assert "error: only 0 of --expect-workers 2 workers connected within --expect-workers-max-wait 2s" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_metrics_port_in_use_is_a_one_line_error():
    with taken_port() as port:
        result = run_cli(["--web-host", "127.0.0.1", "--metrics-port", str(port)])
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"error: --metrics-port {port} is already in use; free the port or choose another one"]
    assert "Traceback" not in result.stderr and "Shape test starting" not in result.stderr
