"""The generator at its limits: latencies that stay within --request-timeout, waits for a connection counted as
``pool_timeout``, only as many users sending as are needed, and a hung node that still does not starve pacing.

Real processes and sockets on 127.0.0.1: the demo limiter, locust, and a tarpit (a tiny server started here that
answers slowly or not at all), every run bounded in time, stopped by PID.
"""

from __future__ import annotations

from locust.contrib.fasthttp import FastHttpSession
from locust.env import Environment

import gc
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import gevent
import gevent.select
import pytest
from geventhttpclient.useragent import RetriesExceeded

from rlsuite import cookies, heap
from rlsuite.classify import POOL_TIMEOUT, TIMEOUT, PoolTimeout, error_kind
from rlsuite.connections import FRESH_SECONDS, PROCESS, RequestTimeout, SuiteClientPool, _Deadlines
from rlsuite.gate import BASE_ACTIVE, Gate
from tests.support import ROOT, Proc, demo_cluster, finish, locust_args, nodes, running, sample_sum, scrape

REQUESTS = "rlsuite_requests_total"
ERRORS = "rlsuite_errors_total"
DURATION = "rlsuite_request_duration_seconds"
INTENDED = "rlsuite_intended_latency_seconds"

# A server that accepts connections and reads requests, then answers each one slowly: ``drip`` sends the status
# line and headers at once and the body one byte every 0.2 s; ``hang`` never answers; ``close`` answers at once and
# closes the connection, though HTTP/1.1 keeps it open unless the answer says otherwise; ``cookie`` sets a session
# cookie on a request that has none and answers whether the request carried it.
TARPIT = r"""
import socket, sys, threading, time
mode = sys.argv[1]
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", 0))
server.listen(1024)
print("READY http://127.0.0.1:%d" % server.getsockname()[1], flush=True)

def serve(conn):
    with conn:
        try:
            while request := conn.recv(65536):
                if mode == "cookie":
                    if b"\r\ncookie: session=s1\r\n" in request.lower():
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nwith")
                    else:
                        conn.sendall(b"HTTP/1.1 200 OK\r\nSet-Cookie: session=s1\r\nContent-Length: 4\r\n\r\nnone")
                elif mode == "close":  # answers, then closes the keep-alive connection without saying so
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    return
                elif mode == "drip":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n")
                    for _ in range(50):
                        time.sleep(0.2)
                        conn.sendall(b"x")
        except OSError:
            pass

while True:
    conn, _ = server.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


@contextmanager
def tarpit(mode: str) -> Iterator[str]:
    proc = Proc([sys.executable, "-c", TARPIT, mode])
    with running(proc):
        yield proc.wait_for(r"^READY (\S+)", timeout=20).group(1)


def run_suite(node_hosts: str, tmp_path, *args: str, exit_codes: tuple[int, ...] = (0,)) -> tuple[Proc, list, int]:
    """A headless run to its end: its output, the last scrape of /metrics (taken while it lingers) and Locust's
    largest response time in ms."""
    json_file = tmp_path / "stats"
    proc = Proc(locust_args(node_hosts, "--metrics-linger", "30", "--json-file", str(json_file), *args))
    with running(proc):
        url = proc.wait_for(r"waiting up to \S+ for a last scrape of (\S+)", timeout=90).group(1)
        samples = scrape(url)
        code = proc.wait(30)
    assert code in exit_codes, proc.output[-4000:]
    assert "Traceback" not in proc.output, proc.output[-4000:]
    stats = json.loads(json_file.with_suffix(".json").read_text())
    assert sum(entry["num_requests"] for entry in stats) == sample_sum(samples, REQUESTS)
    return proc, samples, max(entry["max_response_time"] for entry in stats)


def latency_table(output: str, mode: str = "steady") -> tuple[list[float], list[float]]:
    """The summary's latency row of ``mode`` in seconds: (p50, p95, p99, max) as Locust measures it, and from the
    intended send time."""
    lines = output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Latency ms"))
    row = next(line for line in lines[header + 1 :] if line.startswith(f"{mode} "))
    values = [float(v) / 1000 for v in row.split()[1:9]]
    return values[:4], values[4:]


def histogram_max_bound(samples: list, name: str) -> float:
    """The smallest bucket bound that holds every observation of a latency histogram (inf when some are above)."""
    count = sample_sum(samples, f"{name}_count")
    bounds = sorted({float(s.labels["le"]) for s in samples if s.name == f"{name}_bucket" and s.labels["le"] != "+Inf"})
    for bound in bounds:
        if sample_sum(samples, f"{name}_bucket", le=repr(bound)) == count:
            return bound
    return float("inf")


# -- connections: one deadline per request --------------------------------------------------------------------------


def test_a_request_waiting_for_a_pooled_connection_fails_as_pool_timeout_within_the_timeout():
    # one connection per node: the first request holds it for a second (the tarpit never answers), the second
    # waits for it with a deadline of 0.3 s
    with tarpit("hang") as url:
        pool = SuiteClientPool(concurrency=1, connection_timeout=0.3, network_timeout=None)
        client = pool.get_client(url + "/")

        def send(timeout: float) -> tuple[BaseException | None, float]:
            client.timeout = timeout  # read when the request starts
            started = time.perf_counter()
            try:
                client.request("GET", "/")
            except BaseException as e:  # what the request ended with is the result
                return e, time.perf_counter() - started
            return None, time.perf_counter() - started

        first = gevent.spawn(send, 1.0)
        gevent.sleep(0.05)  # the first one has the connection
        second = gevent.spawn(send, 0.3)
        (held, held_for), (waited, waited_for) = first.get(timeout=5), second.get(timeout=5)
        semaphore = client._connection_pool._semaphore
        pool.close()
    assert isinstance(waited, PoolTimeout) and error_kind(0, waited) == POOL_TIMEOUT
    assert "pool timeout" in str(waited) and "the request was not sent" in str(waited)
    assert isinstance(held, RequestTimeout) and error_kind(0, held) == TIMEOUT
    # each ended at its own deadline (plus the event loop's turn)
    assert 0.29 <= waited_for < 0.45 and 0.99 <= held_for < 1.15
    # what Locust reports: geventhttpclient's RetriesExceeded around it, still its own kind
    assert error_kind(0, RetriesExceeded("http://x/", 0, original=waited)) == POOL_TIMEOUT
    assert error_kind(0, RetriesExceeded("http://x/", 0, original=held)) == TIMEOUT
    assert semaphore.counter == 1  # nothing leaked: the pool's one slot is free again


def test_every_request_ends_at_its_own_deadline_though_all_share_one_timer():
    # 12 requests, one every 30 ms: the odd ones are answered after 50 ms, the even ones never
    deadlines = _Deadlines(0.2)
    ended: dict[int, tuple[str, float]] = {}

    def request(i: int, answer_after: float) -> None:
        entry = deadlines.start()
        started = time.perf_counter()
        try:
            gevent.sleep(answer_after)
            ended[i] = ("answered", time.perf_counter() - started)
        except RequestTimeout:
            ended[i] = ("timeout", time.perf_counter() - started)
        finally:
            entry[1] = None

    gevent.joinall([gevent.spawn_later(i * 0.03, request, i, 0.05 if i % 2 else 60.0) for i in range(12)], timeout=5)
    assert sorted(ended) == list(range(12))
    for i, (how, seconds) in ended.items():
        if i % 2:
            assert how == "answered" and seconds < 0.15
        else:
            assert how == "timeout" and 0.2 <= seconds < 0.3  # its own deadline, plus the event loop's turn
    assert not deadlines._pending  # nothing kept once every request ended


def test_a_connection_the_node_closed_is_not_used_again():
    # the node closes every connection after its answer: a request whose pooled connection sat idle for longer than
    # FRESH_SECONDS finds it closed and opens another; one sent right after the last answer uses it, finds it closed
    # before any answer and is sent again on a new one (geventhttpclient's retry for a GET): none of them fails
    with tarpit("close") as url:
        pool = SuiteClientPool(concurrency=10, connection_timeout=2.0, network_timeout=None)
        client = pool.get_client(url + "/")
        statuses = [client.request("GET", "/").status_code]
        idle_socks = client._connection_pool._idle
        returned, sock = idle_socks[-1]
        assert gevent.select.select([sock], [], [], 2.0)[0]  # the node's close has arrived
        idle_socks[-1] = (returned - FRESH_SECONDS, sock)  # and the connection is older than FRESH_SECONDS
        statuses.append(client.request("GET", "/").status_code)
        statuses.append(client.request("GET", "/").status_code)
        idle = len(client._connection_pool._idle)
        pool.close()
    assert statuses == [200, 200, 200]
    assert idle == 1


def test_a_user_s_cookies_are_kept_and_sent_as_plain_locust_does():
    # the suite's jar skips the standard jar's work only while there is nothing to do; a node that sets a cookie gets
    # it back on the next request, as from plain FastHttpUser's jar
    with tarpit("cookie") as url:
        seen = {}  # per jar: the node's answers, and the cookies the jar kept
        for name, jar_of in (("plain", lambda s: s.cookiejar), ("suite", cookies.install)):
            session = FastHttpSession(url, Environment().events.request, None)
            jar = jar_of(session)
            seen[name] = [session.get("/").text for _ in range(3)], [c.name for c in jar]
            session.client.close()
            assert session.client.cookiejar is jar
    assert seen["suite"] == seen["plain"] == (["none", "with", "with"], ["session"])


@pytest.mark.integration
def test_a_slowly_answering_node_times_out_at_the_deadline_with_its_body(tmp_path):
    # the body comes one byte every 0.2 s: every read is quick, the whole answer would take 10 s; per-read timeouts
    # (geventhttpclient's own) let such a request run on, one deadline per request ends it at --request-timeout
    with tarpit("drip") as url:
        proc, samples, locust_max = run_suite(
            url,
            tmp_path,
            "-t",
            "3s",
            "--steady-rps",
            "10",
            "--burst-duration",
            "0",
            "--request-timeout",
            "0.5",
            "--max-send-delay",
            "0.5",
            exit_codes=(1,),
        )
    total = sample_sum(samples, REQUESTS)
    assert total == 30
    assert sample_sum(samples, ERRORS, kind="timeout") == total  # every one timed out, as a timeout
    assert 500 <= locust_max <= 1000  # ms: the timeout, within timeout + --max-send-delay
    service, intended = latency_table(proc.output)
    assert 0.5 <= service[3] <= 1.0 and intended[3] <= 1.0
    assert histogram_max_bound(samples, DURATION) <= 1.0


@pytest.mark.integration
def test_at_overload_every_latency_stays_within_the_timeout_plus_the_send_delay(tmp_path):
    # far more than one process can send, with the default users (20000 x (0.05 + 0.5 / 3) = 4334): requests used
    # to wait for a connection (and the node's address) for many seconds, all of it measured as latency
    with demo_cluster("--limit", "1000000000") as cluster:
        proc, samples, locust_max = run_suite(
            cluster.node_hosts,
            tmp_path,
            "-t",
            "5s",
            "--steady-rps",
            "20000",
            "--burst-duration",
            "0",
            "--request-timeout",
            "0.5",
            "--max-send-delay",
            "0.5",
            exit_codes=(0, 1),
        )
    bound = 0.5 + 0.5
    assert sample_sum(samples, REQUESTS) > 5000
    assert sample_sum(samples, "rlsuite_dropped_sends_total") > 0  # it was overloaded
    assert locust_max <= bound * 1000
    service, intended = latency_table(proc.output)
    assert service[3] <= bound and intended[3] <= bound + 0.1  # + the event loop's turn (a timer fires late)
    assert histogram_max_bound(samples, DURATION) <= bound
    assert histogram_max_bound(samples, INTENDED) <= 2.5  # the next bucket up: 1.0 holds up to 1.0 exactly
    # failures, if any, are waits for a connection or timeouts, each counted under its own kind
    errors = sample_sum(samples, REQUESTS, outcome="error")
    assert errors == sample_sum(samples, ERRORS, kind="pool_timeout") + sample_sum(samples, ERRORS, kind="timeout")
    # the kind exists from the first scrape, for every mode and node, like the others
    assert len([s for s in samples if s.name == ERRORS and s.labels["kind"] == "pool_timeout"]) == 2 * 3


# -- users: only as many send as are needed -------------------------------------------------------------------------


def test_the_gate_lets_more_users_send_only_while_they_all_wait_for_answers_and_the_cpu_is_spare(monkeypatch):
    monkeypatch.setattr(PROCESS, "busy", False)  # each look sets it; restored after the test
    gate = Gate(base=100)
    gate.users, gate.active = 5000, 100
    gate.peak, gate.late = 100, 300  # every sending user was waiting for an answer, 300 slots went out late
    gate.step(busy=0.5)  # and the process had time: perhaps a burst began, perhaps they wait for the network
    assert gate.limit == 100
    gate.peak, gate.late = 100, 300
    gate.step(busy=0.5)  # again: they wait for the network
    assert gate.limit == 400
    gate.active, gate.peak, gate.late = 400, 400, 10
    gate.step(busy=0.5)
    assert gate.limit == 600  # at least half as many again
    assert not PROCESS.busy  # users send at once, without letting the others run first
    gate.active, gate.peak, gate.late = 600, 600, 10_000
    gate.step(busy=0.99)  # but when the process is busy, more in flight would only queue for it
    assert gate.limit == 450
    assert PROCESS.busy  # and users let the others run before they send: requests go out in batches
    for _ in range(20):
        gate.peak, gate.late = gate.active, 10_000
        gate.step(busy=0.99)
    assert gate.limit == 100  # never below the base
    gate.active, gate.peak, gate.late = 100, 60, 50
    gate.step(busy=0.5)  # slots were late, but a sending user was free all along: more users would not help
    assert gate.limit == 100
    gate.limit, gate.active, gate.peak, gate.in_flight = 2000, 2000, 30, 20
    gate.step(busy=0.3)  # nothing late, few in flight: back down (to twice the peak, at least the base)
    assert gate.limit == 100
    gate.users, gate.active, gate.peak, gate.late = 250, 100, 100, 10_000
    gate.step(busy=0.1)
    gate.active, gate.peak, gate.late = 100, 100, 10_000
    gate.step(busy=0.1)
    assert gate.limit == 250  # never more than there are users


def test_a_run_s_users_are_out_of_the_collector_s_sight_until_it_stops():
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    made_at_first_run = []
    # The last user spawned: its greenlet makes its task set when it first runs, after spawning_complete.
    last_user = gevent.spawn(lambda: made_at_first_run.extend([i] for i in range(100)) or gevent.sleep(10))
    heap.on_spawned()  # spawning_complete
    try:
        gevent.sleep(0)  # the loop runs the user, then the freeze
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # everything of this moment, the users with it
        made_after = [[i] for i in range(100)]
        seen = gc.get_objects()  # what the collector still looks at: only what was made since
        assert len(seen) < frozen // 10 and any(o is made_after[0] for o in seen)
        assert len(made_at_first_run) == 100 and not any(o is made_at_first_run[0] for o in seen)
    finally:
        last_user.kill()
        heap.on_stopped()  # test_stop
    assert gc.get_freeze_count() == 0


def test_a_run_stopped_before_its_freeze_ran_leaves_nothing_frozen():
    gc.unfreeze()
    heap.on_spawned()  # spawning_complete
    heap.on_stopped()  # test_stop, in the same turn of the loop
    gevent.sleep(0)  # the queued freeze would have run here
    assert gc.get_freeze_count() == 0


def test_with_few_users_all_of_them_send(monkeypatch):
    monkeypatch.setattr(PROCESS, "busy", False)
    gate = Gate(base=BASE_ACTIVE)
    gate.users = BASE_ACTIVE
    for busy in (0.1, 0.99):
        gate.active = gate.peak = BASE_ACTIVE
        gate.late = 1000
        gate.step(busy)
        assert gate.limit == BASE_ACTIVE


@pytest.mark.integration
@pytest.mark.alone  # the gate adds users only while the process has CPU to spare, not beside two busy shards
def test_a_hung_node_does_not_starve_pacing_when_only_some_users_send(tmp_path):
    # 1200/s over 3 nodes, --request-timeout 0.5: the default users are 1200 x (0.05 + 0.5 / 3) = 260, of which
    # BASE_ACTIVE (50) send at first. While a node hangs, 400/s wait 0.5 s each for it: 200 requests in flight
    # there alone, so more users must send or the healthy nodes' slots wait and are dropped (662 were, with the
    # gate's growth switched off).
    assert 1200 * 0.5 / 3 > BASE_ACTIVE
    with nodes(3, "--limit", "1000000") as (n1, n2, n3):
        hosts = ",".join(n.url for n in (n1, n2, n3))
        json_file = tmp_path / "stats"
        proc = Proc(
            locust_args(
                hosts,
                "--stats-interval",
                "1",
                "--metrics-linger",
                "30",
                "--json-file",
                str(json_file),
                "-t",
                "7s",
                "--steady-rps",
                "1200",
                "--burst-duration",
                "0",
                "--request-timeout",
                "0.5",
            )
        )
        with running(proc):
            proc.wait_for(r"\[rlsuite\] \w+ +t= *(2|3|4)s", timeout=40)
            n2.proc.signal(signal.SIGSTOP)
            proc.wait_for(r"\[rlsuite\] \w+ +t= *(5|6|7)s", timeout=40)
            n2.proc.signal(signal.SIGCONT)
            samples, locust_total = finish(proc, tmp_path, exit_code=1)
        server = {n.name: n.admitted_total() for n in (n1, n2, n3)}
    total = sample_sum(samples, REQUESTS)
    assert total == locust_total == 1200 * 7  # every slot was sent
    assert sample_sum(samples, "rlsuite_dropped_sends_total") == 0
    timeouts = sample_sum(samples, ERRORS, node=n2.name, kind="timeout")
    assert timeouts >= 400  # 400/s to that node for the 2-3 s it hung
    assert sample_sum(samples, REQUESTS, outcome="error") == timeouts
    for n in (n1, n3):  # untouched: their third, all answered, reconciled with the server
        assert sample_sum(samples, REQUESTS, node=n.name, outcome="allowed") == total / 3 == server[n.name]


@pytest.mark.integration
def test_the_overload_bench_reports_its_ratios(tmp_path):
    # bench/overload.py --smoke: one short run of each generator; only that the figures come out is checked
    out = tmp_path / "OVERLOAD.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "overload.py"), "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    text = out.read_text()
    for line in ("- suite / plain: **", "- suite / paced plain, CPU per request: **"):
        assert re.search(re.escape(line) + r"\d+\.\d+x\*\*", text), text
    assert re.search(r"\| suite, default options \| [\d.]+ \| [\d.]+ \| [\d.]+ \| ", text), text
