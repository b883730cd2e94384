"""The suite's benchmarks: scripts run as ``python bench/<name>.py``, and the modules they share.

Scripts: ``run.py`` (the benchmark behind RESULTS.md), ``limiter_rps.py`` (the demo limiter's requests/s),
``workers.py`` (distributed runs), ``verdict_memory.py`` (the replay's memory), ``overload.py`` (overload, latency,
CPU per request); ``probe.py``, ``plain_locustfile.py``, ``httpx_generator.py`` are what they run.

Shared modules, one concern each: ``processes`` (start, stop by PID, CPU time, pinning: psutil), ``quiet`` (other
processes' load on the machine, the gate that waits for it to pass), ``targets`` (nginx and the demo limiter as load
targets), ``wrk`` (the reference load generator), ``locust_runs`` (one headless locust run and its probe), ``stats``
(series of repeated runs), ``report`` (Markdown and the machine's description). ``suite_bench`` and ``results`` are
``run.py``'s sections and its report.
"""

from __future__ import annotations

import sys
import time


class BenchError(RuntimeError):
    """A run that cannot give figures (a process failed or timed out); the script prints it and exits 1."""


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
