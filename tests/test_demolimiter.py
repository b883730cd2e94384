"""demolimiter: algorithms and headers (injected clock), CLI validation, and real clusters on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import math
import os
import random
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from demolimiter.algorithms import (
    ALGORITHMS,
    Algorithm,
    FixedWindow,
    LeakyBucket,
    SlidingLog,
    SlidingWindowCounter,
    TokenBucket,
    create,
)
from demolimiter.cli import main, node_parser, settings_from
from demolimiter.config import RouteLimit, Settings
from demolimiter.decision import ADMITTED, LIMITED, Decision, from_verdict
from demolimiter.headers import ceil_seconds, format_window, policy, ratelimit, ratelimit_line
from demolimiter.memory import MemoryLimiter
from demolimiter.redis_backend import decode_state, encode_state, script_for
from tests.support import ROOT, RedisServer, free_port, metrics_page, taken_port, wait_until

STARTUP = 15.0  # seconds allowed for READY (generous for a loaded CI machine; normally ~0.3 s)


# ---------------------------------------------------------------- helpers


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


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


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """A node's /metrics by (sample name, labels): the text format (checked), demolimiter_* families only."""
    text, content_type = metrics_page(f"http://127.0.0.1:{port}/metrics")
    assert content_type.startswith("text/plain; version=0.0.4"), content_type
    families = list(text_string_to_metric_families(text))
    assert all(f.name.startswith("demolimiter_") for f in families), [f.name for f in families]
    return {(s.name, frozenset(s.labels.items())): s.value for f in families for s in f.samples}


def decisions(ports: list[int]) -> Counter[str]:
    total: Counter[str] = Counter()
    for p in ports:
        for (name, labels), value in scrape(p).items():
            if name == "demolimiter_requests_total":
                total[dict(labels)["decision"]] += int(value)
    return total


needs_redis = pytest.mark.usefixtures("redis_available")  # tests/conftest.py: skips, or fails in CI


@pytest.fixture(scope="module")
def redis_server(redis_available: None) -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


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


def admitted_under_steady_load(algo: Algorithm, rps: float, seconds: float, start: float = 1_000_000.0) -> int:
    """Requests every 1/rps seconds for ``seconds`` (exact times, no float accumulation); how many were admitted."""
    n = round(rps * seconds)
    return sum(algo.hit(b"k", start + i / rps).allowed for i in range(n))


def test_token_bucket_counts_rejected_collapses_under_overload() -> None:
    # 10 tokens/s, capacity 10; 30 requests/s for 20 s. Correct: capacity + rate x time, about 210 admitted.
    assert 205 <= admitted_under_steady_load(TokenBucket(10, 1.0), 30, 20) <= 211
    broken = TokenBucket(10, 1.0, counts_rejected=True)
    admitted = admitted_under_steady_load(broken, 30, 20)
    assert admitted < 20  # the initial burst, then nothing: every rejection digs the bucket deeper
    assert broken.state[b"k"][0] >= -10.0  # floored at -capacity
    clock = FakeClock(0.0)
    tb = TokenBucket(2, 1.0, clock=clock, counts_rejected=True)
    assert [tb.hit(b"k").allowed for _ in range(4)] == [True, True, False, False]
    assert tb.state[b"k"][0] == -2.0
    v = tb.hit(b"k")
    assert not v.allowed and tb.state[b"k"][0] == -2.0 and v.retry_after == pytest.approx(1.5)  # 3 tokens at 2/s
    clock.now = 1.5
    assert tb.hit(b"k").allowed


def test_fixed_window_first_request_anchors_at_first_hit() -> None:
    clock = FakeClock(1003.25)
    fw = FixedWindow(3, 10.0, clock=clock, alignment="first-request")
    seen = [fw.hit(b"k") for _ in range(4)]
    assert [v.allowed for v in seen] == [True, True, True, False]
    assert [v.remaining for v in seen] == [2, 1, 0, 0]
    assert seen[0].reset == pytest.approx(10.0)  # the window is [1003.25, 1013.25), not epoch-aligned
    clock.now = 1010.0  # past the epoch boundary 1010 but inside the key's own window
    v = fw.hit(b"k")
    assert not v.allowed and v.retry_after == pytest.approx(3.25)
    clock.now = 1013.25  # the window has lasted exactly 10 s: the next request opens a new one here
    v = fw.hit(b"k")
    assert v.allowed and v.remaining == 2 and v.reset == pytest.approx(10.0)
    clock.now = 1030.0  # long idle: the next window starts at this request, not at 1023.25
    assert [fw.hit(b"k").allowed for _ in range(4)] == [True, True, True, False]
    assert fw.hit(b"k").reset == pytest.approx(10.0)
    epoch = FixedWindow(3, 10.0, clock=FakeClock(1003.25))
    assert epoch.hit(b"k").reset == pytest.approx(6.75)


def test_fixed_window_counts_rejected_counts_but_admits_the_same() -> None:
    times = [0.0, 0.1, 0.2, 0.3, 0.4, 1.0, 1.5, 1.6, 1.7, 2.5]
    plain, broken = FixedWindow(2, 1.0), FixedWindow(2, 1.0, counts_rejected=True)
    assert [plain.hit(b"k", t).allowed for t in times] == [broken.hit(b"k", t).allowed for t in times]
    assert broken.hit(b"x", 7.0).allowed
    for _ in range(4):
        broken.hit(b"x", 7.0)
    assert broken.state[b"x"][1] == 5  # INCR on every request


def test_sliding_log_admits_limit_in_any_window_span() -> None:
    sl = SlidingLog(3, 10.0)
    assert [sl.hit(b"k", t).allowed for t in (100.0, 102.0, 104.0)] == [True, True, True]
    v = sl.hit(b"k", 105.0)
    assert not v.allowed and v.remaining == 0 and v.retry_after == pytest.approx(5.0)  # 100 leaves at 110
    assert not sl.hit(b"k", 109.99).allowed
    v = sl.hit(b"k", 110.0)  # (100, 110] no longer holds 100: the 4th admission, exactly when the first expires
    assert v.allowed and v.remaining == 0 and v.reset == pytest.approx(2.0)  # then 102 leaves at 112
    v = sl.hit(b"k", 110.5)
    assert not v.allowed and v.retry_after == pytest.approx(1.5)
    assert sl.hit(b"k", 112.0).allowed
    assert list(sl.state[b"k"]) == [104.0, 110.0, 112.0]
    v = SlidingLog(3, 10.0).hit(b"k", 0.0)
    assert (v.remaining, v.reset) == (2, 10.0)


def test_sliding_log_matches_its_definition_on_random_traffic() -> None:
    rng = random.Random(7)
    limit, window = 5, 2.0
    sl = SlidingLog(limit, window)
    t, admitted = 50.0, []
    for _ in range(2000):
        t += rng.choice((0.0, 0.0, 0.01, 0.1, 0.37, 1.0))
        in_span = sum(1 for a in admitted if a > t - window)
        v = sl.hit(b"k", t)
        assert v.allowed == (in_span < limit)
        if v.allowed:
            admitted.append(t)
    assert len(admitted) > 100


def test_sliding_log_counts_rejected_logs_rejections() -> None:
    plain, broken = SlidingLog(2, 1.0), SlidingLog(2, 1.0, counts_rejected=True)
    for sl in (plain, broken):
        assert [sl.hit(b"k", t).allowed for t in (0.0, 0.0, 0.5)] == [True, True, False]
    assert [plain.hit(b"k", 1.0).allowed for _ in range(3)] == [True, True, False]
    assert [broken.hit(b"k", 1.0).allowed for _ in range(3)] == [True, False, False]  # 0.5 was logged
    assert list(broken.state[b"k"]) == [1.0, 1.0]  # only the newest --limit entries can matter
    # 3x overload: the log always holds --limit entries younger than the window.
    assert 190 <= admitted_under_steady_load(SlidingLog(10, 1.0), 30, 20) <= 200
    assert admitted_under_steady_load(SlidingLog(10, 1.0, counts_rejected=True), 30, 20) == 10


def test_sliding_window_counter_estimate_mid_window() -> None:
    swc = SlidingWindowCounter(10, 10.0)  # windows [1000, 1010), [1010, 1020), ...
    assert all(swc.hit(b"k", 1005.0).allowed for _ in range(8))
    # 3 s into the next window: estimate = 0 + floor(8 x 7 / 10) = 5, so 5 more fit.
    seen = [swc.hit(b"k", 1013.0) for _ in range(6)]
    assert [v.allowed for v in seen] == [True] * 5 + [False]
    assert [v.remaining for v in seen] == [4, 3, 2, 1, 0, 0]
    # floor(8 (10 - e) / 10) drops to 4 once e > 3.75: remaining grows, and a request fits, 0.75 s from now.
    assert seen[0].reset == pytest.approx(0.75)
    assert seen[5].retry_after == pytest.approx(0.75)
    assert not swc.hit(b"k", 1013.7).allowed
    assert swc.hit(b"k", 1013.8).allowed  # 5 + 1 + floor(4.96) = 10 after it
    assert not swc.hit(b"k", 1013.8).allowed
    assert swc.state[b"k"] == [101, 6, 8]
    # At the next boundary the 6 of [1010, 1020) weigh fully: 4 fit. Two windows later nothing remains.
    assert [swc.hit(b"k", 1020.0).allowed for _ in range(5)] == [True] * 4 + [False]
    assert [swc.hit(b"k", 1040.0).allowed for _ in range(11)] == [True] * 10 + [False]
    v = swc.hit(b"k", 1040.0)
    assert v.retry_after == pytest.approx(10.0)  # next window: floor(10 (10 - e) / 10) < 10 once e > 0


def test_sliding_window_counter_counts_rejected() -> None:
    plain, broken = SlidingWindowCounter(4, 1.0), SlidingWindowCounter(4, 1.0, counts_rejected=True)
    for swc in (plain, broken):
        assert [swc.hit(b"k", 10.0).allowed for _ in range(6)] == [True] * 4 + [False] * 2
    assert plain.state[b"k"][1] == 4 and broken.state[b"k"][1] == 6
    # Half-way through the next window: plain 0 + floor(4 x 0.5) = 2, broken floor(6 x 0.5) = 3.
    assert sum(plain.hit(b"k", 11.5).allowed for _ in range(4)) == 2
    assert sum(broken.hit(b"k", 11.5).allowed for _ in range(4)) == 1
    assert admitted_under_steady_load(SlidingWindowCounter(10, 1.0), 30, 20) >= 195
    assert admitted_under_steady_load(SlidingWindowCounter(10, 1.0, counts_rejected=True), 30, 20) < 30


def test_leaky_bucket_nodelay_admits_burst_plus_one_then_one_per_interval() -> None:
    lb = LeakyBucket(10, 1.0, burst=4, nodelay=True)  # rate 10/s: one per 0.1 s
    seen = [lb.hit(b"k", 500.0) for _ in range(6)]
    assert [v.allowed for v in seen] == [True] * 5 + [False]
    assert [v.remaining for v in seen] == [4, 3, 2, 1, 0, 0]
    assert all(v.delay == 0 for v in seen)
    assert seen[5].retry_after == pytest.approx(0.1)
    assert seen[0].reset == pytest.approx(0.1)
    assert lb.state[b"k"] == [5.0, 500.0]  # the rejection left the state alone (nginx)
    assert not lb.hit(b"k", 500.05).allowed
    assert lb.state[b"k"] == [5.0, 500.0]
    for i in range(1, 20):  # then exactly one per 1/rate, the next one at the same instant rejected
        t = 500.0 + i / 10
        assert lb.hit(b"k", t).allowed, t
        assert not lb.hit(b"k", t).allowed, t
    default = LeakyBucket(10, 1.0, nodelay=True)  # burst 0: a strict 1 per 0.1 s
    assert [default.hit(b"k", 0.0).allowed, default.hit(b"k", 0.05).allowed, default.hit(b"k", 0.1).allowed] == [
        True,
        False,
        True,
    ]


def test_leaky_bucket_without_nodelay_delays_instead_of_rejecting() -> None:
    lb = LeakyBucket(10, 1.0, burst=4)
    seen = [lb.hit(b"k", 500.0) for _ in range(6)]
    assert [v.allowed for v in seen] == [True] * 5 + [False]
    assert [v.delay for v in seen] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.0])
    v = lb.hit(b"k", 500.25)  # 2.5 leaked: excess 2.5 + 1, answered once it has drained to 1
    assert v.allowed and v.delay == pytest.approx(0.25)
    assert lb.hit(b"k", 600.0).delay == 0.0  # drained: no wait
    strict = LeakyBucket(10, 1.0)  # burst 0: nothing to queue, so nothing is delayed
    assert [(v.allowed, v.delay) for v in (strict.hit(b"k", 0.0), strict.hit(b"k", 0.0))] == [(True, 0), (False, 0)]


def test_leaky_bucket_counts_rejected_collapses_under_overload() -> None:
    # 10/s, burst 4, 30 requests/s for 20 s. Correct: about rate x time + burst.
    assert 200 <= admitted_under_steady_load(LeakyBucket(10, 1.0, burst=4, nodelay=True), 30, 20) <= 206
    broken = LeakyBucket(10, 1.0, burst=4, nodelay=True, counts_rejected=True)
    assert admitted_under_steady_load(broken, 30, 20) < 10
    assert broken.state[b"k"][0] == 10.0  # capped at 2 x (burst + 1)
    lb = LeakyBucket(10, 1.0, counts_rejected=True, nodelay=True)
    lb.hit(b"k", 0.0)
    lb.hit(b"k", 0.0)
    assert lb.state[b"k"][0] == 2.0
    assert not lb.hit(b"k", 0.1).allowed  # 2 - 1 + 1 = 2 > 1: the rejection was counted


def quota_settings(algorithm: str, limit: int = 2, window: float = 3600.0, **extra: object) -> Settings:
    """Settings whose quota (back-to-back admissions of a fresh key) is ``limit`` for every algorithm."""
    if algorithm == "leaky-bucket":
        extra = {"burst": limit - 1, "nodelay": True, **extra}
    return Settings(algorithm=algorithm, limit=limit, window=window, **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_race_read_then_write_loses_updates(algorithm: str) -> None:
    clock = FakeClock(1_000_000.5)
    algo = create(quota_settings(algorithm), clock)
    reads = [algo.read(b"k") for _ in range(5)]  # five requests read before any writes back
    verdicts = [algo.step(st, now) for now, st in reads]
    for (_, st), _v in zip(reads, verdicts, strict=True):
        algo.write(b"k", st)
    assert all(v.allowed for v in verdicts)  # 5 admitted against a limit of 2
    fresh = create(quota_settings(algorithm), clock)
    one_at_a_time = []
    for _ in range(5):  # read, step, write, then the next: correct
        now, st = fresh.read(b"k")
        one_at_a_time.append(fresh.step(st, now).allowed)
        fresh.write(b"k", st)
    assert one_at_a_time == [True, True, False, False, False]


def test_policy_quota_per_algorithm() -> None:
    assert policy(Settings(algorithm="leaky-bucket", burst=4, limit=100).quota, 1.0) == '"default";q=5;w=1'
    assert Settings(algorithm="leaky-bucket").quota == 1
    for algorithm in ("token-bucket", "fixed-window", "sliding-log", "sliding-window-counter"):
        assert Settings(algorithm=algorithm, limit=7, burst=3).quota == 7


def run_limiter(limiter: MemoryLimiter, keys: list[bytes]) -> list[tuple[int, float]]:
    """Check every key in one event-loop iteration; (outcome, seconds until answered) in order."""

    async def go() -> list[tuple[int, float]]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        futures = []
        for key in keys:
            fut: asyncio.Future[tuple[int, float]] = loop.create_future()

            def done(d: Decision, fut: asyncio.Future[tuple[int, float]] = fut) -> None:
                fut.set_result((d.outcome, loop.time() - start))

            now = limiter.check(key, done)
            if now is not None:
                done(now)
            futures.append(fut)
        return list(await asyncio.wait_for(asyncio.gather(*futures), 10))

    return asyncio.run(go())


def test_memory_limiter_holds_delayed_leaky_bucket_answers() -> None:
    limiter = MemoryLimiter(Settings(algorithm="leaky-bucket", limit=20, window=1.0, burst=2))
    answers = run_limiter(limiter, [b"k"] * 4)
    assert [o for o, _ in answers] == [ADMITTED, ADMITTED, ADMITTED, LIMITED]
    waits = [t for _, t in answers]
    assert waits[0] < 0.04 and waits[3] < 0.04  # answered at once: the first, and the rejection
    assert 0.045 <= waits[1] < 1.0 and 0.095 <= waits[2] < 1.0  # (excess - 1) / rate: 0.05 s, 0.1 s


def test_memory_limiter_race_admits_concurrent_requests_beyond_the_limit() -> None:
    racy = MemoryLimiter(Settings(algorithm="fixed-window", limit=3, window=3600.0, race=True, race_delay=0.01))
    assert [o for o, _ in run_limiter(racy, [b"k"] * 9)] == [ADMITTED] * 9
    sequential = [run_limiter(racy, [b"s"])[0][0] for _ in range(5)]
    assert sequential == [ADMITTED] * 3 + [LIMITED] * 2


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
        (["--algorithm", "sliding-window"], "--algorithm"),
        (["--window-alignment", "first-request"], "--window-alignment"),
        (["--algorithm", "sliding-log", "--window-alignment", "epoch"], "--window-alignment"),
        (["--algorithm", "fixed-window", "--window-alignment", "sideways"], "--window-alignment"),
        (["--nodelay"], "--nodelay"),
        (["--algorithm", "fixed-window", "--nodelay"], "--nodelay"),
        (["--race-delay", "0.1"], "--race-delay"),
        (["--race", "--race-delay", "-1"], "--race-delay"),
        (["--algorithm", "sliding-log", "--burst", "0"], "--burst"),
        (["--algorithm", "leaky-bucket", "--burst", "-1"], "--burst"),
        (["--route", "/a"], "--route"),
        (["--route", "a=5/1"], "--route"),
        (["--route", "/a=0/1"], "--route"),
        (["--route", "/a=5/1:cluster"], "--route"),
        (["--route", "/a=5/1", "--route", "/a=6/1"], "--route"),
        (["--cost-header", "X Cost"], "--cost-header"),
        (["--backend", "redis", "--route", "/a=5/1"], "--route"),
        (["--backend", "redis", "--cost-header", "X-Cost"], "--cost-header"),
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


def test_help_explains_ports_and_every_option(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option: no hyphenated wrapping to match across
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "the first node listens on the base port itself and node i (counting from 0) on base + i" in out
    for option in ("--window-alignment", "--nodelay", "--race ", "--race-delay", "--counts-rejected"):
        assert option in out
    for algorithm in ALGORITHMS:
        assert algorithm in out


@pytest.mark.parametrize(
    "settings",
    [
        Settings(algorithm="fixed-window", window_alignment="first-request", counts_rejected=True),
        Settings(algorithm="leaky-bucket", burst=0, nodelay=True, limit=5, window=0.5),
        Settings(algorithm="sliding-log", race=True, race_delay=0.0),
        Settings(algorithm="sliding-window-counter", race=True, scope="per-node", retry_after=False),
        Settings(algorithm="token-bucket", burst=7, counts_rejected=True, race=True, race_delay=0.25),
        Settings(routes=(RouteLimit("/a", 20, 1.0), RouteLimit("/b", 5, 0.5, "per-node")), cost_header="X-Cost"),
    ],
    ids=lambda s: s.algorithm,
)
def test_node_args_reproduce_the_settings(settings: Settings) -> None:
    """The redis cluster starts its nodes with ``node_args``: every new option must survive the trip."""
    assert settings_from(node_parser().parse_args(["--port", "0", *settings.node_args()])) == settings


@pytest.mark.integration
def test_cli_errors_in_a_real_process() -> None:
    with taken_port() as port:
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


def test_a_request_of_several_units_is_admitted_only_when_all_fit_and_spends_them_all() -> None:
    now = [0.0]
    for algorithm in ALGORITHMS:
        limiter = create(
            Settings(algorithm=algorithm, limit=10, window=3600, burst=9 if algorithm == "leaky-bucket" else None),
            lambda: now[0],
        )
        seen = [limiter.hit(b"k", None, cost).allowed for cost in (4, 4, 3, 2)]
        assert seen == [True, True, False, True], algorithm  # 4 + 4 leave 2 units: 3 do not fit, 2 do
        assert not limiter.hit(b"k").allowed, algorithm


@pytest.mark.integration
def test_routes_have_limits_of_their_own_and_requests_say_their_cost() -> None:
    with (
        cluster(
            "--base-port",
            "0",
            "--limit",
            "10",
            "--window",
            "3600",
            "--route",
            "/a=4/3600",
            "--route",
            "/b=2/3600:per-node",
            "--cost-header",
            "X-Cost",
        ) as c,
        client(c.ports) as cl,
    ):
        assert Counter(cl.get(i, "/a?x=1", key="k").status for i in range(6)) == {200: 4, 429: 2}
        assert Counter(cl.get(i, "/b", key="k").status for i in range(9)) == {200: 6, 429: 3}  # 2 per node
        assert cl.get(0, "/a", key="k").getheader("RateLimit-Policy") == '"default";q=4;w=3600'
        conn = cl.conns[0]
        for cost, status in ((7, 200), (4, 429), (3, 200), (1, 429)):  # the other paths share 10 units
            conn.request("GET", "/", headers={"X-Api-Key": "k", "X-Cost": str(cost)})
            answer = conn.getresponse()
            answer.read()
            assert answer.status == status, cost
        conn.request("GET", "/", headers={"X-Cost": "lots"})
        assert conn.getresponse().status == 400


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


def quota_args(algorithm: str, limit: int = 10, window: str = "3600") -> list[str]:
    """CLI options under which a fresh key gets exactly ``limit`` admissions back to back, for any algorithm."""
    extra = ["--burst", str(limit - 1), "--nodelay"] if algorithm == "leaky-bucket" else []
    return ["--algorithm", algorithm, "--limit", str(limit), "--window", window, *extra]


def concurrent(ports: list[int], n: int, key: str) -> list[tuple[int, float]]:
    """``n`` requests at once, one connection each, spread over the nodes: (status, seconds until answered) each."""
    socks = [socket.create_connection(("127.0.0.1", ports[i % len(ports)]), timeout=10) for i in range(n)]
    request = f"GET / HTTP/1.1\r\nHost: x\r\nX-Api-Key: {key}\r\nConnection: close\r\n\r\n".encode()
    replies: dict[socket.socket, bytes] = {s: b"" for s in socks}
    answered: dict[socket.socket, float] = {}
    try:
        with selectors.DefaultSelector() as sel:
            start = time.monotonic()
            for s in socks:
                s.sendall(request)
                sel.register(s, selectors.EVENT_READ)
            deadline = start + 20
            while len(answered) < n and time.monotonic() < deadline:
                for event, _ in sel.select(1.0):
                    s = event.fileobj
                    chunk = s.recv(65536)  # type: ignore[union-attr]
                    replies[s] += chunk  # type: ignore[index]
                    if not chunk:  # the server closes after answering (Connection: close)
                        answered[s] = time.monotonic() - start  # type: ignore[index]
                        sel.unregister(s)
    finally:
        for s in socks:
            s.close()
    assert len(answered) == n, "not every request was answered"
    return [(int(replies[s][9:12]), answered[s]) for s in socks]


AGREEMENT = [
    Settings(algorithm="token-bucket", limit=4, window=2.0, burst=3),
    Settings(algorithm="token-bucket", limit=4, window=2.0, burst=3, counts_rejected=True),
    Settings(algorithm="fixed-window", limit=3, window=10.0),
    Settings(algorithm="fixed-window", limit=3, window=2.0, counts_rejected=True),
    Settings(algorithm="fixed-window", limit=3, window=2.0, window_alignment="first-request"),
    Settings(algorithm="fixed-window", limit=3, window=2.0, window_alignment="first-request", counts_rejected=True),
    Settings(algorithm="sliding-log", limit=3, window=2.0),
    Settings(algorithm="sliding-log", limit=3, window=2.0, counts_rejected=True),
    Settings(algorithm="sliding-window-counter", limit=3, window=2.0),
    Settings(algorithm="sliding-window-counter", limit=5, window=2.0),
    Settings(algorithm="sliding-window-counter", limit=5, window=2.0, counts_rejected=True),
    Settings(algorithm="leaky-bucket", limit=4, window=2.0),
    Settings(algorithm="leaky-bucket", limit=4, window=2.0, burst=2),
    Settings(algorithm="leaky-bucket", limit=4, window=2.0, burst=2, nodelay=True),
    Settings(algorithm="leaky-bucket", limit=4, window=2.0, burst=2, counts_rejected=True),
]
# Bursts at one instant, gaps shorter and longer than refills and windows, a window edge (…004.0) hit exactly.
AGREEMENT_OFFSETS = (0, 0, 0, 0, 0.1, 0.2, 0.3, 0.55, 0.9, 1.0, 1.0, 1.0, 1.0, 1.3, 1.9, 2.0, 2.0, 2.05, 2.6, 2.6)
AGREEMENT_OFFSETS += (2.6, 2.6, 3.3, 3.3, 3.3, 3.3, 4.1, 4.99, 5.0, 5.0, 5.0, 5.5, 5.5, 6.9, 7.0, 7.0, 7.2, 30.0, 30.0)
AGREEMENT_TIMES = [1_700_000_003.0 + dt for dt in (*AGREEMENT_OFFSETS, 30.0, 30.4)]


def settings_id(s: Settings) -> str:
    flags = [
        f"burst{s.burst}" if s.burst is not None else "",
        "first-request" if s.window_alignment != "epoch" else "",
        "nodelay" if s.nodelay else "",
        "counts-rejected" if s.counts_rejected else "",
    ]
    return "-".join([s.algorithm, f"L{s.limit}", *filter(None, flags)])


@pytest.mark.integration
@pytest.mark.parametrize("settings", AGREEMENT, ids=settings_id)
def test_lua_scripts_match_python_algorithms(redis_server: RedisServer, settings: Settings) -> None:
    """Same inputs (explicit ``now``), same answers: the two backends cannot drift apart."""
    script, argv = script_for(settings)
    key = f"equiv:{uuid.uuid4().hex}"
    algo = create(settings)
    outcomes = Counter()
    for now in AGREEMENT_TIMES:
        expected = algo.hit(b"k", now)
        reply = redis_server.command("EVAL", script, 1, key, *argv, repr(now))
        assert isinstance(reply, list), reply
        allowed, remaining, reset_us, retry_us, delay_us = reply
        where = (settings_id(settings), now - AGREEMENT_TIMES[0])
        assert (bool(allowed), remaining) == (expected.allowed, expected.remaining), where
        assert reset_us / 1e6 == pytest.approx(expected.reset, abs=1e-5), where
        assert retry_us / 1e6 == pytest.approx(expected.retry_after, abs=1e-5), where
        assert delay_us / 1e6 == pytest.approx(expected.delay, abs=1e-5), where
        outcomes[expected.allowed] += 1
    assert outcomes[True] >= 5 and outcomes[False] >= 5  # the sequence exercises both answers
    # --race keeps the same state as one string; it must round-trip exactly.
    st = algo.state[b"k"]
    assert algo.load(decode_state(encode_state(st))) == st


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["memory", "redis"])
@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_every_algorithm_limits_the_cluster_with_headers(
    request: pytest.FixtureRequest, backend: str, algorithm: str
) -> None:
    args = ["--base-port", "0", *quota_args(algorithm)]
    if backend == "redis":
        args += ["--backend", "redis", "--redis-url", request.getfixturevalue("redis_server").url]
    with cluster(*args) as c, client(c.ports) as cl:
        counts = burst_in_one_window(cl, 25, 3600)
        assert counts == {200: 10, 429: 15}
        key = uuid.uuid4().hex
        first = cl.get(0, key=key)
        assert first.getheader("RateLimit-Policy") == '"default";q=10;w=3600'
        assert re.fullmatch(r'"default";r=9;t=\d+', first.getheader("RateLimit", ""))
        for i in range(9):
            cl.get(i, key=key)
        limited = cl.get(2, key=key)
        assert limited.status == 429
        m = re.fullmatch(r'"default";r=0;t=(\d+)', limited.getheader("RateLimit", ""))
        assert m and int(limited.getheader("Retry-After", "0")) >= 1
        assert decisions(c.ports)["admitted"] == 20


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_leaky_bucket_delays_answers_in_a_real_cluster(request: pytest.FixtureRequest, backend: str) -> None:
    args = ["--base-port", "0", "--algorithm", "leaky-bucket", "--limit", "4", "--window", "1", "--burst", "3"]
    if backend == "redis":
        args += ["--backend", "redis", "--redis-url", request.getfixturevalue("redis_server").url]
    with cluster(*args) as c:
        answers = concurrent(c.ports, 5, uuid.uuid4().hex)
    assert sorted(s for s, _ in answers) == [200, 200, 200, 200, 429]
    waits = sorted(t for s, t in answers if s == 200)
    # 4/s with 3 queued: answered after 0, 0.25, 0.5, 0.75 s (less the few ms between the requests' arrivals).
    for wait, expected in zip(waits, (0.0, 0.25, 0.5, 0.75), strict=True):
        assert expected - 0.05 <= wait < expected + 5.0
    rejected = next(t for s, t in answers if s == 429)
    assert rejected < waits[-1]  # the request over the burst is turned away at once, not held


@pytest.mark.integration
@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_memory_race_admits_more_than_the_limit_under_concurrency(algorithm: str) -> None:
    with (
        cluster("--base-port", "0", *quota_args(algorithm), "--race", "--race-delay", "0.02") as c,
        client(c.ports) as cl,
    ):
        answers = concurrent(c.ports, 30, uuid.uuid4().hex)
        admitted = sum(1 for s, _ in answers if s == 200)
        assert admitted > 10, answers
        # One request at a time: every read sees the previous write, so the limit holds exactly.
        assert burst_in_one_window(cl, 30, 3600) == {200: 10, 429: 20}


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
def test_redis_race_admits_more_than_the_limit_under_concurrency(redis_server: RedisServer) -> None:
    args = ("--backend", "redis", "--redis-url", redis_server.url, "--race", "--race-delay", "0.02")
    with cluster("--base-port", "0", *quota_args("fixed-window"), *args) as c, client(c.ports) as cl:
        answers = concurrent(c.ports, 30, uuid.uuid4().hex)
        assert sum(1 for s, _ in answers if s == 200) > 10, answers
        assert burst_in_one_window(cl, 30, 3600) == {200: 10, 429: 20}
        assert decisions(c.ports)["redis_error_open"] == 0
        keys = redis_server.command("KEYS", "demolimiter:fixed-window:race:*")
        assert isinstance(keys, list) and len(keys) >= 2
        assert redis_server.command("TYPE", keys[0]) == b"string"  # plain GET / SET, no script


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
    with taken_port() as port:
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
