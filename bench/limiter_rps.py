"""Requests/s of the demo limiter (python -m demolimiter) under wrk, per backend; prints a small table.

Server side (nodes and the private redis-server) is pinned to one CPU and wrk to another when the machine has
two or more, so each figure is "one server core". Limits are set so high that nothing is limited (the numbers
measure the server), except the *-429 cases, where nearly every request takes the 429 path.

    python bench/limiter_rps.py            # 3 s x 3 runs per case, median
    python bench/limiter_rps.py --smoke    # ~1 s per case, one run: checks the figures come out (CI)
    python bench/limiter_rps.py --root /tmp/base --root .   # two checkouts side by side, runs alternating

With more than one ``--root`` every case runs a limiter from each checkout at the same time (same server CPU; the
one not under load idles) and wrk alternates between them, so that drift on the machine hits them alike.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: `bench` is a package of the checkout's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.processes import cpus
from bench.targets import HIGH, LOW, ROOT, demo_limiter, redis_server
from bench.wrk import Run, wrk


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


def measure(case: Case, reps: int, duration: float, connections: int, roots: list[Path]) -> list[list[Run]]:
    """Per root, ``reps`` wrk runs against the case's limiter started from that checkout; the roots alternate."""
    server_pin, load_pin = cpus()
    with ExitStack() as stack:
        targets = []
        for root in roots:
            args = case.args
            if case.redis:
                args = [*args, "--redis-url", stack.enter_context(redis_server(server_pin))]
            targets.append(stack.enter_context(demo_limiter(args, server_pin, root)))
        for urls in targets:
            wrk(urls, connections, 1, load_pin)  # warm-up: connections, redis script cache
        runs: list[list[Run]] = [[] for _ in roots]
        for rep in range(reps):
            order = list(range(len(roots)))
            k = rep % len(order)
            for i in order[k:] + order[:k]:  # rotated, so that no checkout always runs first
                runs[i].append(wrk(targets[i], connections, duration, load_pin))
        return runs


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="one ~1 s run per case (CI check that figures come out)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run (default 3)")
    p.add_argument("--reps", type=int, default=3, help="runs per case; the median is reported (default 3)")
    p.add_argument("--connections", type=int, default=50, help="keep-alive connections in total (default 50)")
    p.add_argument("--cases", default="", help="comma-separated substrings selecting cases (default all)")
    p.add_argument(
        "--root",
        type=Path,
        action="append",
        help="checkout whose demolimiter runs (default: this one); give it twice to measure two side by side",
    )
    ns = p.parse_args()
    if ns.smoke:
        ns.duration, ns.reps = 1.0, 1
    roots = [r.resolve() for r in ns.root or [ROOT]]
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
    if len(roots) > 1:
        print("checkouts, runs alternating: " + "; ".join(f"[{i + 1}] {root}" for i, root in enumerate(roots)))
    width = 28 if len(roots) == 1 else 32
    print(f"{'case':<{width}} {'req/s (median)':>15} {'runs':>26} {'limited':>8} {'errors':>7}")
    for case in cases:
        per_root = measure(case, ns.reps, ns.duration, ns.connections, roots)
        for i, runs in enumerate(per_root):
            median = statistics.median(r.rps for r in runs)
            limited = sum(r.non2xx for r in runs) / max(1, sum(r.requests for r in runs))
            listed = ", ".join(f"{r.rps:,.0f}" for r in runs)
            name = case.name if len(roots) == 1 else f"{case.name} [{i + 1}]"
            print(
                f"{name:<{width}} {median:>15,.0f} {listed:>26} {limited:>8.1%} {sum(r.errors for r in runs):>7}",
                flush=True,
            )
        for i in range(1, len(roots)):  # runs made next to each other: drift on the machine mostly cancels out
            ratios = [b.rps / a.rps for a, b in zip(per_root[0], per_root[i], strict=True)]
            print(
                f"  [{i + 1}]/[1] per repetition: median {statistics.median(ratios):.3f} "
                f"(min {min(ratios):.3f}, max {max(ratios):.3f})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
