"""The run as it stands right now, on the master or standalone process.

The conductor writes where the run is (mode, target rate, running, start); the suite keeps the latest verdict it
judged. /metrics, the web view and the exit code read them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Status:
    mode: str | None = None  # None when no run is going
    target_rps: float = 0.0
    running: bool = False
    run_started: float = 0.0  # wall-clock start (t0) of the current or last run
    verdict: Any = None  # the latest rlsuite.verdict.Verdict, when a limit is declared
