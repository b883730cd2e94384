"""demolimiter: algorithms and headers (injected clock), CLI validation, and real clusters on 127.0.0.1."""

from __future__ import annotations

import contextlib
import http.client
import math
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

from demolimiter import resp
from demolimiter.algorithms import FixedWindow, TokenBucket
from demolimiter.cli import main
from demolimiter.config import Settings
from demolimiter.decision import ADMITTED, LIMITED, from_verdict
from demolimiter.headers import ceil_seconds, format_window, policy, ratelimit, ratelimit_line
from demolimiter.redis_backend import script_for

ROOT = Path(__file__).resolve().parents[1]
T = TypeVar("T")
STARTUP = 15.0  # seconds allowed for READY (generous for a loaded CI machine; normally ~0.3 s)


# ---------------------------------------------------------------- helpers


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond: Callable[[], T], timeout: float, what: str, step: float = 0.02) -> T:
    """Poll ``cond`` (bounded) for conditions that have no event to await, e.g. a reconnect."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def read_line(proc: subprocess.Popen[bytes], timeout: float) -> bytes:
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        if not sel.select(timeout):
            raise AssertionError(f"no output within {timeout}s")
    return proc.stdout.readline()  # type: ignore[union-attr]


class Cluster:
    """``python -m demolimiter ...`` as a real process; stopped with SIGTERM, which must exit 0."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "demolimiter", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            line = read_line(self.proc, STARTUP).decode()
        except AssertionError:
            self.kill()
            raise
        if not line.startswith("READY "):
            err = self.kill()
            raise AssertionError(f"no READY line: {line!r} {err!r}")
        self.urls = line[6:].strip().split(",")
        self.ports = [int(u.rsplit(":", 1)[1]) for u in self.urls]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(10)
        finally:
            self.kill()
        return rc

    def kill(self) -> bytes:
        if self.proc.poll() is None:
            self.proc.kill()
        if self.proc.stderr is None or self.proc.stderr.closed:
            return b""
        _, err = self.proc.communicate()
        return err


@contextlib.contextmanager
def cluster(*args: str) -> Iterator[Cluster]:
    c = Cluster(*args)
    try:
        yield c
    finally:
        assert c.stop() == 0


class Client:
    """Keep-alive HTTP/1.1 connections, one per node, used round-robin."""

    def __init__(self, ports: list[int]) -> None:
        self.conns = [http.client.HTTPConnection("127.0.0.1", p, timeout=5) for p in ports]

    def get(self, node: int, path: str = "/", key: str | None = None) -> http.client.HTTPResponse:
        conn = self.conns[node % len(self.conns)]
        conn.request("GET", path, headers={"X-Api-Key": key} if key else {})
        resp_ = conn.getresponse()
        resp_.body = resp_.read()  # type: ignore[attr-defined]
        return resp_

    def burst(self, n: int, key: str | None) -> Counter[int]:
        return Counter(self.get(i, key=key).status for i in range(n))

    def close(self) -> None:
        for c in self.conns:
            c.close()


@contextlib.contextmanager
def client(ports: list[int]) -> Iterator[Client]:
    c = Client(ports)
    try:
        yield c
    finally:
        c.close()


def burst_in_one_window(c: Client, n: int, window: float) -> Counter[int]:
    """Burst with a fresh key; redo (new key) in the rare case the burst straddles an epoch-aligned window edge."""
    for _ in range(3):
        before = math.floor(time.time() / window)
        counts = c.burst(n, key=uuid.uuid4().hex)
        if math.floor(time.time() / window) == before:
            return counts
    raise AssertionError("every attempt crossed a window boundary")


SAMPLE = re.compile(r"^([a-z_]+)\{([^}]*)\} (\S+)$")


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        r = conn.getresponse()
        assert r.status == 200
        assert r.getheader("Content-Type", "").startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    finally:
        conn.close()
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) demolimiter_\w+ ", line), line
            continue
        m = SAMPLE.match(line)
        assert m, f"bad sample line {line!r}"
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def decisions(ports: list[int]) -> Counter[str]:
    total: Counter[str] = Counter()
    for p in ports:
        for (name, labels), value in scrape(p).items():
            if name == "demolimiter_requests_total":
                total[dict(labels)["decision"]] += int(value)
    return total


class RedisServer:
    """A private redis-server on a free port, stopped by PID."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(self.ping, 10, "redis-server to answer PING")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, *args: bytes | str | int | float) -> resp.Reply:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(resp.encode(*args))
            buf = b""
            while True:
                buf += s.recv(65536)
                try:
                    return resp.parse(buf, 0)[0]
                except resp._Incomplete:
                    continue

    def ping(self) -> bool:
        try:
            return self.command("PING") == b"PONG"
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer()
    yield server
    server.stop()


# ---------------------------------------------------------------- algorithms (injected clock, no sleeps)


def test_token_bucket_admits_burst_then_refills_at_rate() -> None:
    clock = FakeClock(1000.0)
    tb = TokenBucket(limit=4, window=2.0, burst=3, clock=clock)  # 2 tokens/s, capacity 3
    seen = [tb.hit(b"k") for _ in range(4)]
    assert [v.allowed for v in seen] == [True, True, True, False]
    assert [v.remaining for v in seen] == [2, 1, 0, 0]
    assert seen[0].reset == pytest.approx(0.5)  # 2.0 tokens left: the next one arrives after 1/rate
    assert seen[3].retry_after == pytest.approx(0.5)
    clock.now += 0.25  # half a token: still limited, retry in the remaining quarter second
    v = tb.hit(b"k")
    assert not v.allowed and v.retry_after == pytest.approx(0.25)
    clock.now += 0.25
    assert tb.hit(b"k").allowed
    assert not tb.hit(b"k").allowed
    clock.now += 100.0  # refill caps at the burst, not limit
    assert [tb.hit(b"k").allowed for _ in range(4)] == [True, True, True, False]


def test_token_bucket_keys_are_independent_and_burst_defaults_to_limit() -> None:
    tb = TokenBucket(limit=2, window=1.0, clock=FakeClock(5.0))
    assert [tb.hit(b"a").allowed for _ in range(3)] == [True, True, False]
    assert tb.hit(b"b").allowed


def test_token_bucket_prunes_full_buckets() -> None:
    clock = FakeClock(0.0)
    tb = TokenBucket(limit=1, window=1.0, clock=clock, max_keys=2)
    tb.hit(b"a")
    tb.hit(b"b")
    clock.now = 10.0
    tb.hit(b"c")
    assert set(tb.state) == {b"c"}


def test_fixed_window_aligns_to_epoch_and_resets_at_boundary() -> None:
    clock = FakeClock(1_000_003.0)  # window 10 s: [1_000_000, 1_000_010)
    fw = FixedWindow(limit=3, window=10.0, clock=clock)
    seen = [fw.hit(b"k") for _ in range(4)]
    assert [v.allowed for v in seen] == [True, True, True, False]
    assert [v.remaining for v in seen] == [2, 1, 0, 0]
    assert all(v.reset == pytest.approx(7.0) for v in seen)
    assert seen[3].retry_after == pytest.approx(7.0)
    clock.now = 1_000_009.75  # still the same window
    assert not fw.hit(b"k").allowed
    clock.now = 1_000_010.0  # boundary belongs to the next window
    v = fw.hit(b"k")
    assert v.allowed and v.remaining == 2 and v.reset == pytest.approx(10.0)


def test_fixed_window_fractional_window() -> None:
    clock = FakeClock(100.3)
    fw = FixedWindow(limit=1, window=0.5, clock=clock)
    assert fw.hit(b"k").allowed
    v = fw.hit(b"k")
    assert not v.allowed and v.retry_after == pytest.approx(0.2)
    clock.now = 100.5
    assert fw.hit(b"k").allowed


# ---------------------------------------------------------------- headers


def test_header_values() -> None:
    assert policy(100, 60.0) == '"default";q=100;w=60'
    assert policy(5, 0.5) == '"default";q=5;w=0.5'
    assert format_window(2.25) == "2.25"
    assert ratelimit(7, 3) == '"default";r=7;t=3'
    assert ratelimit(-1, 3) == '"default";r=0;t=3'
    assert ratelimit_line(7, 3) == b'RateLimit: "default";r=7;t=3\r\n'
    assert [ceil_seconds(s) for s in (0.0, 0.2, 1.0, 1.0000000002, 1.5, 59.99)] == [1, 1, 1, 1, 2, 60]


def test_decision_rounds_up_and_never_below_one() -> None:
    d = from_verdict(FixedWindow(1, 10.0, clock=FakeClock(2.5)).hit(b"k"))
    assert (d.outcome, d.remaining, d.reset) == (ADMITTED, 0, 8)
    tb = TokenBucket(1, 0.1, clock=FakeClock(0.0))
    tb.hit(b"k")
    d = from_verdict(tb.hit(b"k"))
    assert (d.outcome, d.reset, d.retry_after) == (LIMITED, 1, 1)


# ---------------------------------------------------------------- CLI validation


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--nodes", "0"], "--nodes"),
        (["--limit", "-1"], "--limit"),
        (["--limit", "abc"], "--limit"),
        (["--window", "0"], "--window"),
        (["--window", "nan"], "--window"),
        (["--burst", "0"], "--burst"),
        (["--algorithm", "leaky"], "--algorithm"),
        (["--scope", "cluster"], "--scope"),
        (["--base-port", "70000"], "--base-port"),
        (["--base-port", "65535", "--nodes", "3"], "--base-port"),
        (["--node-names", "a,b"], "--node-names"),
        (["--key-header", "X Api"], "--key-header"),
        (["--backend", "redis", "--redis-url", "http://x"], "--redis-url"),
        (["--redis-failure", "maybe"], "--redis-failure"),
        (["node", "--port", "-5"], "--port"),
        (["--bogus"], "--bogus"),
    ],
)
def test_cli_rejects_bad_values(args: list[str], option: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        rc = main(args)
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    assert rc == 2
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and option in lines[0] and "Traceback" not in err, err


@pytest.mark.integration
def test_cli_errors_in_a_real_process() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for args, option in (
            (["--nodes", "1", "--base-port", str(port)], "--base-port"),
            (["--window", "-3"], "--window"),
        ):
            r = subprocess.run(
                [sys.executable, "-m", "demolimiter", *args],
                cwd=ROOT,
                capture_output=True,
                timeout=STARTUP,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
            lines = r.stderr.decode().splitlines()
            assert r.returncode == 2 and r.stdout == b""
            assert len(lines) == 1 and option in lines[0] and "Traceback" not in lines[0], r.stderr


# ---------------------------------------------------------------- memory backend, real processes


@pytest.fixture(scope="module")
def fixed_global() -> Iterator[Cluster]:
    with cluster("--base-port", "0", "--algorithm", "fixed-window", "--limit", "20", "--window", "3600") as c:
        yield c


@pytest.mark.integration
def test_memory_global_limit_across_nodes_and_metrics_match(fixed_global: Cluster) -> None:
    before = decisions(fixed_global.ports)
    with client(fixed_global.ports) as c:
        counts = burst_in_one_window(c, 45, 3600)
    assert counts == {200: 20, 429: 25}
    after = decisions(fixed_global.ports)
    assert after["admitted"] - before["admitted"] == 20
    assert after["limited"] - before["limited"] == 25
    assert set(after) == {"admitted", "limited"}


@pytest.mark.integration
def test_metrics_series_and_labels(fixed_global: Cluster) -> None:
    port = fixed_global.ports[1]
    samples = scrape(port)
    node = f"127.0.0.1:{port}"
    for decision in ("admitted", "limited"):
        assert ("demolimiter_requests_total", frozenset({("node", node), ("decision", decision)})) in samples
    info = [dict(labels) for name, labels in samples if name == "demolimiter_limit_info"]
    assert info == [
        {
            "node": node,
            "backend": "memory",
            "algorithm": "fixed-window",
            "scope": "global",
            "limit": "20",
            "window": "3600",
            "burst": "20",
            "key_header": "X-Api-Key",
            "retry_after": "true",
        }
    ]
    assert samples[("demolimiter_limit_requests", frozenset({("node", node)}))] == 20


@pytest.mark.integration
def test_rate_limit_headers_on_200_and_429(fixed_global: Cluster) -> None:
    key = uuid.uuid4().hex
    with client(fixed_global.ports) as c:
        first = c.get(0, key=key)
        assert first.status == 200 and first.body == b"ok\n"  # type: ignore[attr-defined]
        assert first.getheader("RateLimit-Policy") == '"default";q=20;w=3600'
        m = re.fullmatch(r'"default";r=(\d+);t=(\d+)', first.getheader("RateLimit", ""))
        assert m and int(m.group(1)) == 19
        expected_t = math.ceil(3600 - time.time() % 3600)
        assert abs(int(m.group(2)) - expected_t) <= 1
        for i in range(19):
            c.get(i, key=key)
        limited = c.get(1, key=key)
    assert limited.status == 429
    rl = re.fullmatch(r'"default";r=0;t=(\d+)', limited.getheader("RateLimit", ""))
    assert rl and limited.getheader("Retry-After") == rl.group(1)
    assert limited.getheader("Content-Length") == str(len(limited.body))  # type: ignore[attr-defined]


@pytest.mark.integration
def test_healthz_is_not_limited_or_counted(fixed_global: Cluster) -> None:
    port = fixed_global.ports[2]
    before = decisions([port])
    with client([port]) as c:
        assert all(c.get(0, "/healthz").status == 200 for _ in range(30))
    assert decisions([port]) == before


def raw_exchange(port: int, payload: bytes, timeout: float = 5.0) -> bytes:
    """Send ``payload``, read until the server closes (callers make it close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.integration
def test_keep_alive_pipelining_and_connection_close(fixed_global: Cluster) -> None:
    port = fixed_global.ports[0]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rb")
        for _ in range(200):  # many requests, one connection
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert f.readline() == b"HTTP/1.1 200 OK\r\n"
            length = 0
            while (line := f.readline()) != b"\r\n":
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                assert not line.lower().startswith(b"connection: close")
            assert f.read(length) == b"ok\n"
        f.close()
    # Pipelined requests (one with a body), answered in order; the last asks to close.
    body = b"hello"
    reqs = (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"
        + body
        + b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    answers = raw_exchange(port, reqs).split(b"HTTP/1.1 ")[1:]  # returns because the server closed
    assert [a[:6] for a in answers] == [b"200 OK"] * 4
    assert [a.endswith(b"\r\n\r\nok\n") for a in answers] == [True, True, False, True]  # HEAD: no body
    assert [b"Connection: close\r\n" in a for a in answers] == [False, False, False, True]


@pytest.mark.integration
def test_http10_and_garbage(fixed_global: Cluster) -> None:
    port = fixed_global.ports[0]
    out = raw_exchange(port, b"GET /healthz HTTP/1.0\r\n\r\n")  # 1.0 without keep-alive: server closes
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"\r\n\r\nok\n")
    assert raw_exchange(port, b"\x16\x03\x01garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_exchange(port, b"GET / HTTP/1.1\r\nno colon here\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw_exchange(port, b"DELETE / HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 405 ")
    assert raw_exchange(port, b"GET / HTTP/2.0\r\n\r\n").startswith(b"HTTP/1.1 505 ")


@pytest.mark.integration
def test_memory_token_bucket_global_and_keys_apart() -> None:
    with cluster("--base-port", "0", "--limit", "10", "--window", "3600") as c, client(c.ports) as cl:
        assert cl.burst(25, key="a") == {200: 10, 429: 15}
        assert cl.burst(12, key="b") == {200: 10, 429: 2}
        assert cl.burst(12, key=None) == {200: 10, 429: 2}  # no header: the shared anonymous key
        assert cl.get(0, key="anonymous").status == 429


@pytest.mark.integration
def test_memory_per_node_scope_admits_limit_per_node() -> None:
    with (
        cluster("--base-port", "0", "--scope", "per-node", "--limit", "10", "--window", "3600") as c,
        client(c.ports) as cl,
    ):
        counts = cl.burst(60, key="shared")
        assert counts == {200: 30, 429: 30}  # 3 nodes x 10: the broken setting's signature
        assert decisions(c.ports) == {"admitted": 30, "limited": 30}


@pytest.mark.integration
def test_no_retry_after_and_node_names() -> None:
    with (
        cluster(
            "--base-port",
            "0",
            "--nodes",
            "2",
            "--limit",
            "1",
            "--window",
            "60",
            "--no-retry-after",
            "--node-names",
            "alpha,beta",
        ) as c,
        client(c.ports) as cl,
    ):
        assert cl.get(0).status == 200
        limited = cl.get(1)
        assert limited.status == 429
        assert limited.getheader("Retry-After") is None
        assert limited.getheader("RateLimit", "").startswith('"default";r=0;t=')
        nodes = {dict(labels)["node"] for name, labels in scrape(c.ports[1]) if name == "demolimiter_requests_total"}
        assert nodes == {"beta"}


# ---------------------------------------------------------------- redis backend, real processes


@pytest.mark.integration
def test_lua_scripts_match_python_algorithms(redis_server: RedisServer) -> None:
    """Same inputs (explicit ``now``), same answers: the two backends cannot drift apart."""
    cases = [
        (Settings(algorithm="token-bucket", limit=4, window=2.0, burst=3), TokenBucket(4, 2.0, 3)),
        (Settings(algorithm="fixed-window", limit=3, window=10.0), FixedWindow(3, 10.0)),
    ]
    times = [1_700_000_003.0 + dt for dt in (0, 0, 0.1, 0.2, 0.3, 0.55, 1.0, 1.0, 6.9, 7.0, 7.0, 7.2, 30.0)]
    for settings, algo in cases:
        script, argv = script_for(settings)
        key = f"equiv:{uuid.uuid4().hex}"
        clock = FakeClock(0.0)
        algo.clock = clock
        for now in times:
            clock.now = now
            expected = algo.hit(b"k")
            reply = redis_server.command("EVAL", script, 1, key, *argv, repr(now))
            assert isinstance(reply, list), reply
            allowed, remaining, reset_us, retry_us = reply
            assert (bool(allowed), remaining) == (expected.allowed, expected.remaining), (settings.algorithm, now)
            assert reset_us / 1e6 == pytest.approx(expected.reset, abs=1e-5)
            assert retry_us / 1e6 == pytest.approx(expected.retry_after, abs=1e-5)


@pytest.mark.integration
def test_redis_global_limit_across_processes(redis_server: RedisServer) -> None:
    with (
        cluster(
            "--base-port",
            "0",
            "--backend",
            "redis",
            "--redis-url",
            redis_server.url,
            "--algorithm",
            "fixed-window",
            "--limit",
            "20",
            "--window",
            "3600",
        ) as c,
        client(c.ports) as cl,
    ):
        assert len(set(c.ports)) == 3
        counts = burst_in_one_window(cl, 45, 3600)
        assert counts == {200: 20, 429: 25}
        assert decisions(c.ports) == {"admitted": 20, "limited": 25, "redis_error_open": 0}
        # NOSCRIPT (redis restarted or flushed its scripts): reloaded transparently, not a redis error.
        assert redis_server.command("SCRIPT", "FLUSH") == b"OK"
        assert cl.burst(6, key=uuid.uuid4().hex) == {200: 6}
        assert decisions(c.ports)["redis_error_open"] == 0


@pytest.mark.integration
def test_redis_per_node_scope(redis_server: RedisServer) -> None:
    with (
        cluster(
            "--base-port",
            "0",
            "--backend",
            "redis",
            "--redis-url",
            redis_server.url,
            "--scope",
            "per-node",
            "--limit",
            "5",
            "--window",
            "3600",
        ) as c,
        client(c.ports) as cl,
    ):
        assert cl.burst(30, key="shared") == {200: 15, 429: 15}


@pytest.mark.integration
@needs_redis
def test_redis_failure_open_and_closed_and_recovery() -> None:
    port = free_port()  # nothing listens yet: nodes must start anyway and answer by policy
    common = (
        "--base-port",
        "0",
        "--nodes",
        "1",
        "--backend",
        "redis",
        "--redis-url",
        f"redis://127.0.0.1:{port}/0",
        "--limit",
        "1000",
        "--redis-timeout",
        "0.3",
    )
    with (
        cluster(*common, "--redis-failure", "open") as op,
        cluster(*common, "--redis-failure", "closed") as cl,
        client(op.ports + cl.ports) as c,
    ):
        admitted = c.get(0)
        assert admitted.status == 200 and admitted.getheader("RateLimit") is None
        rejected = c.get(1)
        assert rejected.status == 503 and rejected.getheader("Retry-After") == "1"
        assert decisions(op.ports)["redis_error_open"] == 1
        assert decisions(cl.ports)["redis_error_closed"] == 1
        server = RedisServer(port)
        try:
            for node in (0, 1):  # reconnect with backoff (capped at 2 s)
                wait_until(lambda node=node: c.get(node).getheader("RateLimit"), 10, "redis reconnect")
            assert {
                dict(labels)["node"]: v
                for (name, labels), v in scrape(cl.ports[0]).items()
                if name == "demolimiter_redis_up"
            } == {f"127.0.0.1:{cl.ports[0]}": 1.0}
        finally:
            server.stop()
        assert c.get(0).status == 200
        assert c.get(1).status == 503
        assert decisions(cl.ports)["redis_error_closed"] >= 2


@pytest.mark.integration
def test_redis_cluster_stops_when_a_node_dies(redis_server: RedisServer) -> None:
    c = Cluster("--base-port", "0", "--backend", "redis", "--redis-url", redis_server.url)
    try:
        children = [int(p) for p in Path(f"/proc/{c.proc.pid}/task/{c.proc.pid}/children").read_text().split()]
        assert len(children) == 3
        os.kill(children[1], signal.SIGKILL)
        assert c.proc.wait(10) != 0
        for pid in children:  # the others were stopped, not orphaned
            wait_until(
                lambda pid=pid: (
                    not Path(f"/proc/{pid}").exists()
                    or Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] == "Z"
                ),
                5,
                f"pid {pid} gone",
            )
        assert b"exited" in c.kill()
    finally:
        c.kill()


@pytest.mark.integration
def test_redis_cluster_port_in_use_exits_2(redis_server: RedisServer) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "demolimiter",
                "--backend",
                "redis",
                "--redis-url",
                redis_server.url,
                "--nodes",
                "2",
                "--base-port",
                str(port - 1),
            ],
            cwd=ROOT,
            capture_output=True,
            timeout=STARTUP,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    assert r.returncode == 2 and b"READY" not in r.stdout
    assert b"--base-port" in r.stderr and b"Traceback" not in r.stderr
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port - 1), timeout=1):
        pass  # the node that did start was stopped
