"""One headless locust run to its end, with bench/probe.py (or another probe) writing its figures to a JSON file."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import BenchError
from bench.processes import cpu_seconds, stop_group


@dataclass
class LocustResult:
    probe: dict[str, Any]
    output: str
    seconds: float  # wall-clock of the whole process

    def per_sec(self, which: str) -> dict[int, int]:
        return {int(k): v for k, v in self.probe.get(f"{which}_per_sec", {}).items()}

    @property
    def t0(self) -> int:
        return int(self.probe["t0"])


_counter = itertools.count(1)


def run_locust(
    files: list[Path],
    args: list[str],
    pin: list[str],
    tmp: Path,
    timeout: float,
    cpu_samples: list[tuple[float, float]] | None = None,
    **env: str,
) -> LocustResult:
    """One headless locust run to its end (cwd: a temp dir, so no locust.conf applies); the probe's JSON read back
    (the probe writes to ``BENCH_PROBE_OUT``). ``cpu_samples``: appended every 0.1 s while it runs, (wall-clock
    time, CPU seconds of the locust process)."""
    probe_out = tmp / f"probe-{next(_counter)}.json"
    cmd = [
        *pin,
        sys.executable,
        "-m",
        "locust",
        "-f",
        ",".join(str(f) for f in files),
        "--headless",
        "--only-summary",
        *args,
    ]
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=tmp,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "BENCH_PROBE_OUT": str(probe_out), **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: forked workers are found and stopped with it
    )
    done = threading.Event()
    sampler = None
    if cpu_samples is not None:
        sampler = threading.Thread(target=_sample_cpu, args=(proc.pid, cpu_samples, done), daemon=True)
        sampler.start()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(proc)
        out = proc.stdout.read() if proc.stdout else ""  # type: ignore[union-attr]
        raise BenchError(
            f"locust still running after {timeout:.0f}s: {' '.join(cmd[:12])} ...\n{out[-3000:]}"
        ) from None
    finally:
        done.set()
        if sampler is not None:
            sampler.join(5)
        stop_group(proc)  # a worker left behind by a master that failed (its group is the PID we started)
    if proc.returncode not in (0, 1) or not probe_out.exists() or "Traceback" in out:
        raise BenchError(f"locust failed (exit {proc.returncode}): {' '.join(cmd)}\n{out[-3000:]}")
    return LocustResult(json.loads(probe_out.read_text()), out, time.monotonic() - started)


def _sample_cpu(pid: int, samples: list[tuple[float, float]], done: threading.Event) -> None:
    while not done.is_set():
        used = cpu_seconds(pid)
        if used or not samples:  # 0 once the process is gone: keep the last real sample
            samples.append((time.time(), used))
        done.wait(0.1)
