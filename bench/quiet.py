"""Other processes' load on the machine: measured per section, and waited out before each measured run.

The bench cannot stop other sessions' processes on a shared machine; it says how much of the machine they used
while it measured (``background``) and, before each run, waits briefly for their bursts to pass (``QuietGate``).
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil

from bench.processes import cpu_seconds, descendants

QUIET_SHARE = 0.10  # other processes below this share of all CPUs over half a second: quiet


def machine_busy() -> float:
    """CPU-seconds all CPUs spent busy since boot (everything but idle and iowait)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - times.iowait


def own_cpu() -> float:
    """CPU-seconds used by this process and everything it started (reaped or still running, e.g. the target)."""
    used = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        used += ru.ru_utime + ru.ru_stime
    return used + sum(cpu_seconds(pid) for pid in descendants(os.getpid()))


@dataclass
class Background:
    """How much of the machine other processes used while a section ran."""

    wall: float = 0.0
    others: float = 0.0  # CPU-seconds

    @property
    def share(self) -> float:
        return self.others / (self.wall * (os.cpu_count() or 1)) if self.wall > 0 else 0.0


class QuietGate:
    """Before each measured run, wait (briefly, within a budget for the whole bench) until other processes use
    less than ``QUIET_SHARE`` of the machine over half a second: other sessions' test runs come in bursts."""

    def __init__(self, per_run: float, budget: float) -> None:
        self.per_run, self.budget, self.waited = per_run, budget, 0.0

    def wait(self) -> None:
        if self.per_run <= 0:
            return
        deadline = time.monotonic() + min(self.per_run, max(0.0, self.budget - self.waited))
        started = time.monotonic()
        while True:
            t, busy, own = time.monotonic(), machine_busy(), own_cpu()
            time.sleep(0.5)
            others = (machine_busy() - busy) - (own_cpu() - own)
            if others / ((time.monotonic() - t) * (os.cpu_count() or 1)) < QUIET_SHARE or time.monotonic() > deadline:
                break
        self.waited += time.monotonic() - started


@contextmanager
def background(into: dict[str, Background], name: str) -> Iterator[None]:
    """Add to ``into[name]`` the wall time of the block and the CPU-seconds other processes used meanwhile."""
    t, busy, own = time.monotonic(), machine_busy(), own_cpu()
    try:
        yield
    finally:
        b = into.setdefault(name, Background())
        b.wall += time.monotonic() - t
        b.others += max(0.0, (machine_busy() - busy) - (own_cpu() - own))
