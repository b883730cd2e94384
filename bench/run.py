"""The suite's benchmark: generator throughput per core, listener overhead, rate accuracy, workers, limiter req/s.

Everything runs on this machine against 127.0.0.1 only, every run bounded in time, every process stopped by PID.
The load generator is pinned to one core (``taskset -c 0``) and the target to another (``taskset -c 1``) when the
machine has two; repetitions alternate the generators so that drift hits them all alike; medians with min/max.

1. requests/s per core at full speed: the suite's user with its request listener (locustfiles/ratelimit.py at
   --steady-rps 50000, far above one core; counted by the suite) vs the same user with the listener removed vs a
   plain FastHttpUser (bench/plain_locustfile.py) vs wrk -t1 -c50 (the ceiling) vs an asyncio + httpx generator
   (bench/httpx_generator.py, 100 in flight / 100 connections), the common way to write a Python load generator;
2. the listener's overhead: the ratio of the alternating A/B runs above (A with the listener, B without);
3. rate accuracy at 25%, 50% and 90% of the suite's max from 1, with bursts (steady x/3, multiplier 3), with the
   users of 1 and (90% only) with the suite's default users;
4. distributed: --processes 1 vs --processes 2 (generator unpinned, target pinned);
5. the demo limiter's requests/s per backend (bench/limiter_rps.py).

    python bench/run.py                           # the full set, ~9 minutes; writes bench/RESULTS.md
    python bench/run.py --smoke --out /tmp/R.md   # a few seconds per item (CI: figures come out)

Needs wrk (apt-get install wrk), httpx in the venv (pip install httpx) and, for the static target and the redis
figures, nginx and redis-server; without nginx the demo limiter is the target.

The sections are in bench/suite_bench.py, the report in bench/results.py, the parts they share in the other modules
of bench/ (see bench/__init__.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: `bench` is a package of the checkout's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import BenchError, log
from bench.processes import cpus
from bench.quiet import QuietGate, background
from bench.report import commit
from bench.results import render
from bench.suite_bench import DEFAULT_OUT, Results, accuracy, distributed, limiter, settings, throughput
from bench.targets import target


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="a few seconds per item, one repetition (CI)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the report (default {DEFAULT_OUT})")
    p.add_argument("--target", choices=("nginx", "demolimiter"), help="static target (default nginx if installed)")
    p.add_argument("--nodes", type=int, default=1, help="target nodes (ports) the suite round-robins over (default 1)")
    p.add_argument("--reps", type=int, help="repetitions of sections 1-2 (default 5; smoke 1)")
    p.add_argument("--seconds", type=int, help="seconds per throughput run (default 5; smoke 1)")
    ns = p.parse_args()
    s = settings(ns)
    started = time.monotonic()
    r = Results(s)
    r.commit_start = commit()
    if not s.smoke:
        r.gate = QuietGate(per_run=5.0, budget=120.0)
    server_pin, load_pin = cpus()
    if not server_pin:
        r.notes.append("fewer than 2 CPUs or no taskset: nothing was pinned")
    with tempfile.TemporaryDirectory(prefix="rlsuite-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with target(s.target, s.nodes, server_pin, tmp) as urls:
            r.urls = urls
            log(f"target {s.target}: {', '.join(urls)}")
            with background(r.background, "1-2"):
                throughput(r, s, urls, load_pin, tmp)
            core_max = r.throughput["suite"].median
            with background(r.background, "3"):
                accuracy(r, s, urls, load_pin, tmp, core_max)
            with background(r.background, "4"):
                distributed(r, s, urls, tmp)
    with background(r.background, "5"):
        limiter(r, s)
    r.elapsed = time.monotonic() - started
    r.commit_end = commit()
    argv = " ".join(sys.argv[1:])
    command = f"python bench/run.py {argv}".strip()
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(render(r, command))
    log(f"wrote {ns.out} in {r.elapsed:.0f}s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(1)
