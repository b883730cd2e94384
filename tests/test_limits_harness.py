"""The third-party `limits` library (5.8.0) behind tests/thirdparty/limits_app.py: real numbers from real processes.

Each test starts its own nodes (and redis-server) on 127.0.0.1 and sends a bounded number of requests over keep-alive
connections, round-robin over the nodes, so what these tests pin down is what the suite's verdict has to model; the
semantics are written up in the docstring of tests/thirdparty/limits_app.py.
"""

from __future__ import annotations

import http.client
import math
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
import redis

from tests.support import ROOT, RedisServer, taken_port
from tests.thirdparty.harness import APP, LimitsCluster, limits_cluster

pytestmark = pytest.mark.integration


@dataclass
class Answer:
    status: int
    retry_after: str | None
    node: int
    sent: float  # time.time() just before the request was written
    answered: float  # time.time() once the answer was read


class Client:
    """One keep-alive connection per node, requests round-robin; fails if a node would close a connection."""

    def __init__(self, cluster: LimitsCluster) -> None:
        self.header = cluster.key_header
        self.conns = []
        for url in cluster.urls:
            host, port = url.removeprefix("http://").rsplit(":", 1)
            self.conns.append(http.client.HTTPConnection(host, int(port), timeout=5))
        self.next = 0

    def get(self, key: str | None) -> Answer:
        node = self.next % len(self.conns)
        self.next += 1
        conn = self.conns[node]
        sent = time.time()
        conn.request("GET", "/", headers={self.header: key} if key is not None else {})
        response = conn.getresponse()
        body = response.read()
        answered = time.time()
        assert not response.will_close, "the node asked to close a keep-alive connection"
        assert int(response.getheader("Content-Length", "-1")) == len(body)
        return Answer(response.status, response.getheader("Retry-After"), node, sent, answered)

    def burst(self, count: int, key: str | None) -> list[Answer]:
        return [self.get(key) for _ in range(count)]

    def close(self) -> None:
        for conn in self.conns:
            conn.close()


@contextmanager
def client(cluster: LimitsCluster) -> Iterator[Client]:
    c = Client(cluster)
    try:
        yield c
    finally:
        c.close()


def admitted(answers: list[Answer]) -> int:
    return sum(a.status == 200 for a in answers)


def assert_refusals(answers: list[Answer], lowest: int, highest: int) -> None:
    """Every answer is 200 or 429, and each 429 has Retry-After in whole seconds within [lowest, highest]."""
    for a in answers:
        assert a.status in (200, 429), a
        if a.status == 429:
            assert a.retry_after is not None and a.retry_after.isdigit(), a
            assert lowest <= int(a.retry_after) <= highest, a


def sleep_until(t: float) -> None:
    time.sleep(max(0.0, t - time.time()))


def wait_phase(period: float, phase: float) -> None:
    """Sleep until ``time.time() % period`` is ``phase`` (at most one period)."""
    time.sleep((phase - time.time() % period) % period)


def redis_client(cluster: LimitsCluster) -> redis.Redis:
    return redis.Redis.from_url(cluster.redis_url, socket_timeout=5)


# ---------------------------------------------------------------- fixed window


def test_fixed_window_redis_cluster_admits_exactly_the_limit(redis_available: None) -> None:
    with limits_cluster("fixed-window", limit=20, window=1, nodes=3) as cluster, client(cluster) as c:
        answers = c.burst(60, "fixed-a")
        elapsed = answers[-1].answered - answers[0].sent
        assert elapsed < 0.5, f"60 requests took {elapsed:.3f}s: too slow to stay in one 1 s window"
        assert [a.status for a in answers] == [200] * 20 + [429] * 40, "the first 20 in, then none, over 3 nodes"
        assert_refusals(answers, 1, 1)  # redis TTL of a 1 s window rounds to 0 or 1 s; Retry-After is >= 1
        # refused hits are counted too (INCRBY before the comparison), the expiry is set on the first hit only
        r = redis_client(cluster)
        assert int(r.get(cluster.redis_key("fixed-a"))) == 60
        assert 0 < r.pttl(cluster.redis_key("fixed-a")) <= 1000
        # keys are independent; no header is a key of its own
        assert admitted(c.burst(30, "fixed-b")) == 20
        assert admitted(c.burst(30, None)) == 20
        assert admitted(c.burst(5, "fixed-a")) == 0
        finals = cluster.stop()
    assert sum(f["admitted"] for f in finals.values()) == 60
    assert sum(f["limited"] for f in finals.values()) == 40 + 10 + 10 + 5
    assert all(f["errors"] == 0 for f in finals.values())


def test_fixed_window_memory_storage_counts_per_node() -> None:
    """``--storage memory``: each of 3 nodes admits its own 20, so the cluster admits 3 x the declared limit."""
    with limits_cluster("fixed-window", limit=20, window=1, nodes=3, storage="memory") as cluster, client(cluster) as c:
        answers = c.burst(90, "mem")
        assert answers[-1].answered - answers[0].sent < 0.5
        assert admitted(answers) == 60
        assert [sum(a.status == 200 for a in answers if a.node == n) for n in range(3)] == [20, 20, 20]
        assert_refusals(answers, 1, 1)
        finals = cluster.stop()
    assert sorted(f["admitted"] for f in finals.values()) == [20, 20, 20]


def test_fixed_window_is_anchored_at_the_first_hit_not_the_epoch(redis_available: None) -> None:
    """W=2: first hit at epoch phase ~1.3 s; 1 s later (past an epoch boundary) the window is still the same one."""
    with limits_cluster("fixed-window", limit=5, window=2, nodes=3) as cluster, client(cluster) as c:
        wait_phase(2.0, 1.3)
        first = c.burst(10, "anchor")
        assert admitted(first) == 5
        assert_refusals(first, 1, 2)
        t0 = first[0].sent
        sleep_until(t0 + 1.0)  # the epoch-aligned window [.., t0 + 0.7] has ended; the anchored one has not
        assert time.time() % 2.0 < 1.0
        second = c.burst(10, "anchor")
        assert admitted(second) == 0, "an epoch-aligned fixed window would have admitted 5 here"
        assert_refusals(second, 1, 1)
        sleep_until(first[0].answered + 2.05)  # the key expired 2 s after the first hit: a new window
        third = c.burst(10, "anchor")
        assert [a.status for a in third] == [200] * 5 + [429] * 5
        assert_refusals(third, 1, 2)


# ---------------------------------------------------------------- moving window


def test_moving_window_admits_the_limit_then_refuses_with_retry_after(redis_available: None) -> None:
    with limits_cluster("moving-window", limit=20, window=1, nodes=3) as cluster, client(cluster) as c:
        answers = c.burst(60, "move-a")
        assert answers[-1].answered - answers[0].sent < 0.5
        assert [a.status for a in answers] == [200] * 20 + [429] * 40
        assert_refusals(answers, 1, 1)
        r = redis_client(cluster)
        assert r.llen(cluster.redis_key("move-a")) == 20  # the log: admitted timestamps only (LTRIM keeps L)
        assert admitted(c.burst(30, "move-b")) == 20  # keys are independent
        # refused hits are not logged: hammering until just before the oldest admitted hit leaves the window ...
        last_admitted = answers[19].answered
        while time.time() < last_admitted + 0.8:
            assert c.get("move-a").status == 429
        # ... does not delay the moment the whole log has left it
        sleep_until(last_admitted + 1.05)
        again = c.burst(30, "move-a")
        assert [a.status for a in again] == [200] * 20 + [429] * 10


def test_moving_window_slides_over_the_log(redis_available: None) -> None:
    """L=10 per 2 s: 5 at t0, 10 at t0+1 (5 fit), 10 at t0+2.05: only the 5 of t0 have left the window."""
    with limits_cluster("moving-window", limit=10, window=2, nodes=3) as cluster, client(cluster) as c:
        a = c.burst(5, "slide")
        assert admitted(a) == 5
        sleep_until(a[0].sent + 1.0)
        b = c.burst(10, "slide")
        assert [x.status for x in b] == [200] * 5 + [429] * 5
        assert_refusals(b, 1, 1)  # the oldest entry (from t0) leaves the window ~1 s later
        sleep_until(a[-1].answered + 2.05)
        assert time.time() < b[0].sent + 2.0, "too slow: the second burst would have left the window too"
        c_ = c.burst(10, "slide")
        assert [x.status for x in c_] == [200] * 5 + [429] * 5, "a fixed window anchored at t0 would admit 10"
        assert_refusals(c_, 1, 1)


# ---------------------------------------------------------------- sliding window counter


def test_sliding_window_counter_weights_the_previous_window(redis_available: None) -> None:
    """20 per 1 s: a burst at t0, then one at t0 + 1.5 s, when the previous window weighs about half."""
    limit = 20
    with limits_cluster("sliding-window-counter", limit=limit, window=1, nodes=3) as cluster, client(cluster) as c:
        wait_phase(1.0, 0.5)  # so that t0 + 1.5 s is at an epoch-window start: epoch-aligned windows would admit 20
        first = c.burst(60, "swc")
        assert first[-1].answered - first[0].sent < 0.5
        assert [a.status for a in first] == [200] * 20 + [429] * 40
        assert_refusals(first, 1, 1)
        r = redis_client(cluster)
        current, previous = cluster.sliding_keys("swc")
        assert int(r.get(current)) == 20, "refused hits are not counted"
        assert 1000 < r.pttl(current) <= 2000, "the current window's key lives 2 W from the first hit"
        assert not r.exists(previous)
        anchor_lo, anchor_hi = first[0].sent, first[0].answered  # the first hit's redis time is in between
        sleep_until(anchor_hi + 1.5)
        second = c.burst(30, "swc")
        assert_refusals(second, 1, 1)
        # admitted while floor(20 * (1 - f)) + n < 20, f the elapsed fraction of the current window [t0+1, t0+2)
        f_lo = second[0].sent - anchor_hi - 1.0
        f_hi = second[-1].answered - anchor_lo - 1.0
        lowest, highest = limit - math.floor(limit * (1 - f_lo)), limit - math.floor(limit * (1 - f_hi))
        n = admitted(second)
        assert lowest <= n <= highest, (n, f_lo, f_hi)
        assert 8 <= n <= 12
        assert int(r.get(previous)) == 20, "the first window was shifted to the previous key"
        assert admitted(c.burst(30, "swc-other")) == 20  # keys are independent


def test_sliding_window_counter_memory_storage_is_epoch_aligned() -> None:
    """The memory storage keys windows by ``int(now / W)``: 0.675 s after a full burst at phase 0.45 the window is new
    and the previous one weighs 0.875, so floor(20 * 0.875) = 17 leaves 3 (redis, anchored at t0, would admit 0)."""
    limit = 20
    with limits_cluster("sliding-window-counter", limit=limit, window=1, nodes=1, storage="memory") as cluster:
        with client(cluster) as c:
            wait_phase(1.0, 0.45)
            first = c.burst(30, "epoch")
            assert admitted(first) == limit
            second_start = math.floor(first[0].sent) + 1.0
            assert first[-1].answered < second_start, "the burst crossed an epoch second"
            sleep_until(second_start + 0.125)
            second = c.burst(10, "epoch")
            f_lo, f_hi = second[0].sent - second_start, second[-1].answered - second_start
            lowest, highest = limit - math.floor(limit * (1 - f_lo)), limit - math.floor(limit * (1 - f_hi))
            assert lowest <= admitted(second) <= highest, (admitted(second), f_lo, f_hi)
            assert 2 <= admitted(second) <= 4


# ---------------------------------------------------------------- the HTTP layer and failures


def test_http_keep_alive_pipelining_head_and_http10() -> None:
    with limits_cluster("fixed-window", limit=3, window=60, nodes=1, storage="memory") as cluster:
        port = int(cluster.urls[0].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            one = b"GET /a HTTP/1.1\r\nHost: x\r\nx-api-KEY: p\r\n\r\n"
            post = b"POST /b HTTP/1.1\r\nHost: x\r\nX-Api-Key: p\r\nContent-Length: 5\r\n\r\nhello"
            head = b"HEAD / HTTP/1.1\r\nHost: x\r\nX-Api-Key: p\r\n\r\n"
            s.sendall(one + post + head + one[:10])  # pipelined, the last one split in two writes
            time.sleep(0.05)
            s.sendall(one[10:])
            data = b""
            while data.count(b"HTTP/1.1 ") < 4 or not data.endswith(b"rate limited\n"):
                chunk = s.recv(65536)
                assert chunk, data
                data += chunk
        assert data.count(b"HTTP/1.1 200 OK") == 3 and data.count(b"HTTP/1.1 429 Too Many Requests") == 1
        assert b"Connection: close" not in data
        assert data.count(b"ok\n") == 2, "HEAD answers carry no body"
        assert b"Retry-After: 60\r\n" in data  # the in-memory window of the first hit, 60 s from it
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := s.recv(65536):  # HTTP/1.0 without keep-alive: the node closes
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"Connection: close\r\n" in data
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"nonsense\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 400 Bad Request")


def test_redis_down_answers_503(redis_available: None) -> None:
    with RedisServer() as server, limits_cluster("moving-window", 5, 1, nodes=2, redis_url=server.url) as cluster:
        with client(cluster) as c:
            assert admitted(c.burst(4, "down")) == 4
            server.stop()
            answers = c.burst(4, "down")
            assert [(a.status, a.retry_after) for a in answers] == [(503, "1")] * 4
        finals = cluster.stop()
    assert sum(f["errors"] for f in finals.values()) == 4
    assert any("STORAGE ERROR" in p.output for p in cluster.procs)


def test_app_rejects_bad_arguments_and_an_unreachable_redis() -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*APP, *args], cwd=ROOT, capture_output=True, text=True, timeout=30)

    base = ["--strategy", "fixed-window", "--limit", "5", "--window", "1"]
    assert run(*base).returncode == 2  # redis storage without --redis-url
    assert run(*base, "--storage", "memory", "--window", "0").returncode == 2
    with taken_port(listen=False) as port:  # nobody listening
        dead = run(*base, "--redis-url", f"redis://127.0.0.1:{port}/0")
    assert dead.returncode == 2 and "does not answer" in dead.stderr
