"""The verdict's memory: RSS of a standalone locust replaying every request, sampled through a long run.

10,000 API keys at 1,500 req/s against the demo cluster (token bucket 1/s, burst 1, per key), the verdict declared:
RSS must not grow with the run's length (goal: RSS at 145 s within 10 MB of RSS at 30 s). The same run without a
declared limit is measured beside it (the suite's memory without the replay), alternately.

    python bench/verdict_memory.py                 # 150 s per run, one run of each
    python bench/verdict_memory.py --seconds 40    # shorter: samples at 10 s and at the end
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: `bench` is a package of the checkout's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.processes import rss_mb, stop
from tests.support import demo_cluster  # the demo cluster launcher the tests use

ROOT = Path(__file__).resolve().parents[1]


def one_run(node_hosts: str, seconds: int, early: float, late: float, declared: bool) -> dict[str, float]:
    args = [
        str(ROOT / ".venv" / "bin" / "locust"),
        "-f",
        str(ROOT / "locustfiles" / "ratelimit.py"),
        "--headless",
        "--only-summary",
        "--node-hosts",
        node_hosts,
        "-t",
        f"{seconds}s",
        "--steady-rps",
        "1500",
        "--burst-duration",
        "0",
        "--api-key-count",
        "10000",
        "--stats-interval",
        "0",
        "--metrics-port",
        "0",
        "--metrics-linger",
        "0",
        *(["--limit", "1", "--window", "1", "--limit-burst", "1"] if declared else []),
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    started = time.monotonic()
    samples: dict[str, float] = {}
    try:
        for name, at in (("early", early), ("late", late)):
            time.sleep(max(0.0, started + at - time.monotonic()))
            if proc.poll() is not None:
                raise SystemExit(f"bench: locust exited early:\n{proc.stdout.read()[-3000:]}")
            samples[name] = rss_mb(proc.pid)
        out, _ = proc.communicate(timeout=seconds + 60)
    finally:
        stop(proc)
    verdict = next((line for line in out.splitlines() if line.startswith("Verdict:")), "no verdict declared")
    print(
        f"  {'declared' if declared else 'no limit'}: RSS {samples['early']:.1f} MB at {early:g}s, "
        f"{samples['late']:.1f} MB at {late:g}s; {verdict}",
        flush=True,
    )
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=150)
    ns = parser.parse_args()
    seconds = ns.seconds
    early, late = (30.0, 145.0) if seconds >= 150 else (10.0, seconds - 3.0)
    with demo_cluster("--limit", "1", "--window", "1", "--burst", "1") as cluster:
        declared = one_run(cluster.node_hosts, seconds, early, late, declared=True)
        plain = one_run(cluster.node_hosts, seconds, early, late, declared=False)
    growth = declared["late"] - declared["early"]
    print(
        f"verdict replay, 10,000 keys at 1,500 req/s: RSS {declared['early']:.1f} MB at {early:g}s -> "
        f"{declared['late']:.1f} MB at {late:g}s (growth {growth:+.1f} MB; goal within 10 MB); without a declared "
        f"limit {plain['early']:.1f} -> {plain['late']:.1f} MB"
    )
    return 0 if abs(growth) <= 10 else 1


if __name__ == "__main__":
    sys.exit(main())
