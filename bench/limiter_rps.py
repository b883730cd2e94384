"""Requests/s of the demo limiter (python -m demolimiter) under wrk, per backend; prints a small table.

Server side (nodes and the private redis-server) is pinned to one CPU and wrk to another when the machine has
two or more, so each figure is "one server core". Limits are set so high that nothing is limited (the numbers
measure the server), except the *-429 cases, where nearly every request takes the 429 path.

    python bench/limiter_rps.py            # 3 s x 3 runs per case, median
    python bench/limiter_rps.py --smoke    # ~1 s per case, one run: checks the figures come out (CI)
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# the tests' helpers: one free_port (bench/run.py uses it from here too) and one redis-server launcher
from tests.support import RedisServer, free_port  # noqa: E402, F401

HIGH = ["--limit", "1000000000", "--window", "1"]
LOW = ["--limit", "1", "--window", "3600"]  # first request admitted, the rest limited


@dataclass(frozen=True)
class Case:
    name: str
    args: list[str]  # python -m demolimiter ...
    redis: bool = False


CASES = [
    Case("memory: 3 nodes, 1 process", ["--nodes", "3", *HIGH]),
    Case("memory: 3 nodes, 429 path", ["--nodes", "3", *LOW]),
    Case("redis: 1 node process", ["--nodes", "1", "--backend", "redis", *HIGH], redis=True),
    Case("redis: 3 node processes", ["--nodes", "3", "--backend", "redis", *HIGH], redis=True),
    Case("redis: 3 nodes, 429 path", ["--nodes", "3", "--backend", "redis", *LOW], redis=True),
]


@dataclass(frozen=True)
class Run:
    rps: float
    requests: int
    non2xx: int
    errors: int


def cpus() -> tuple[list[str], list[str]]:
    """taskset prefixes (server, load generator): separate cores when there are two."""
    if shutil.which("taskset") and len(os.sched_getaffinity(0)) >= 2:
        a, b = sorted(os.sched_getaffinity(0))[:2]
        return ["taskset", "-c", str(b)], ["taskset", "-c", str(a)]
    return [], []


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def redis_server(pin: list[str]) -> Iterator[str]:
    with RedisServer(prefix=pin) as server:
        yield server.url


@contextmanager
def limiter(args: list[str], pin: list[str]) -> Iterator[list[str]]:
    proc = subprocess.Popen(
        [*pin, sys.executable, "-m", "demolimiter", "--base-port", "0", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
            line = proc.stdout.readline().decode() if sel.select(20) else ""  # type: ignore[union-attr]
        if not line.startswith("READY "):
            raise SystemExit(f"bench: demolimiter {' '.join(args)} did not start")
        yield line[6:].strip().split(",")
    finally:
        stop(proc)
        proc.stdout.close()  # type: ignore[union-attr]


def wrk(urls: list[str], connections: int, duration: float, pin: list[str]) -> Run:
    """One wrk per node URL, all at once; connections split between them; totals summed."""
    per = max(1, connections // len(urls))
    procs = [
        subprocess.Popen(
            [*pin, "wrk", "-t1", f"-c{per}", f"-d{max(1, round(duration))}s", url + "/"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        for url in urls
    ]
    rps = 0.0
    requests = non2xx = errors = 0
    for p in procs:
        out, _ = p.communicate(timeout=duration + 30)
        text = out.decode()
        m = re.search(r"Requests/sec:\s+([\d.]+)", text)
        if p.returncode != 0 or not m:
            raise SystemExit(f"bench: wrk failed:\n{text}")
        rps += float(m.group(1))
        requests += int(re.search(r"(\d+) requests in", text).group(1))  # type: ignore[union-attr]
        if n := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
            non2xx += int(n.group(1))
        if e := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
            errors += sum(int(x) for x in e.groups())
    return Run(rps, requests, non2xx, errors)


def measure(case: Case, reps: int, duration: float, connections: int) -> list[Run]:
    server_pin, load_pin = cpus()
    with ExitStack() as stack:
        args = case.args
        if case.redis:
            args = [*args, "--redis-url", stack.enter_context(redis_server(server_pin))]
        urls = stack.enter_context(limiter(args, server_pin))
        wrk(urls, connections, 1, load_pin)  # warm-up: connections, redis script cache
        return [wrk(urls, connections, duration, load_pin) for _ in range(reps)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="one ~1 s run per case (CI check that figures come out)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run (default 3)")
    p.add_argument("--reps", type=int, default=3, help="runs per case; the median is reported (default 3)")
    p.add_argument("--connections", type=int, default=50, help="keep-alive connections in total (default 50)")
    p.add_argument("--cases", default="", help="comma-separated substrings selecting cases (default all)")
    ns = p.parse_args()
    if ns.smoke:
        ns.duration, ns.reps = 1.0, 1
    if not shutil.which("wrk"):
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    wanted = [w.strip() for w in ns.cases.split(",") if w.strip()]
    cases = [c for c in CASES if not wanted or any(w in c.name for w in wanted)]
    if any(c.redis for c in cases) and not shutil.which("redis-server"):
        print("bench: redis-server not installed; skipping redis cases", file=sys.stderr)
        cases = [c for c in cases if not c.redis]
    server_pin, load_pin = cpus()
    print(
        f"server cpu: {' '.join(server_pin) or 'unpinned'}; wrk cpu: {' '.join(load_pin) or 'unpinned'}; "
        f"{ns.connections} connections; {ns.reps} x {ns.duration:g}s per case"
    )
    print(f"{'case':<28} {'req/s (median)':>15} {'runs':>26} {'limited':>8} {'errors':>7}")
    for case in cases:
        runs = measure(case, ns.reps, ns.duration, ns.connections)
        median = statistics.median(r.rps for r in runs)
        limited = sum(r.non2xx for r in runs) / max(1, sum(r.requests for r in runs))
        listed = ", ".join(f"{r.rps:,.0f}" for r in runs)
        print(
            f"{case.name:<28} {median:>15,.0f} {listed:>26} {limited:>8.1%} {sum(r.errors for r in runs):>7}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
