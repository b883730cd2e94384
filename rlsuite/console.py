"""What the suite prints: a status line every --stats-interval seconds, and a summary at the end of each run.

``status_line`` and ``summary`` are pure functions of the run's counts and schedule, so they are tested without
running anything; ``Console`` prints them on the master or standalone process (the suite calls it every second while
a run goes, and with the end-of-run text from ``rlsuite.report``).
"""

from __future__ import annotations

import time
from typing import Any

from rlsuite import options
from rlsuite.classify import OUTCOMES
from rlsuite.options import Option
from rlsuite.plan import Plan
from rlsuite.rates import stage_rates
from rlsuite.schedule import MODES, Schedule
from rlsuite.tally import DROPPED, INTENDED, LATE, SERVICE, RunView

OPTIONS = (
    Option(
        "stats-interval",
        "Console output",
        type=float,
        default=10.0,
        minimum=0,
        help="Seconds between status lines (mode, target vs achieved requests/s, outcome counts); 0 = none.",
    ),
)


def check_options(opts: Any) -> None:
    options.check(opts, OPTIONS)


def status_line(
    mode: str, elapsed: float, target_rps: float, achieved_rps: float, run: RunView, window: tuple[float, float]
) -> str:
    """The status line: mode, target vs achieved rate, outcome counts so far."""
    allowed, limited, error = (run.count(outcome=o) for o in OUTCOMES)
    lo, hi = window
    return (
        f"[rlsuite] {mode.upper():<6} t={elapsed:5.0f}s  target {target_rps:8.1f}/s  achieved {achieved_rps:8.1f}/s"
        f" (requests started {lo:.0f}-{hi:.0f}s)  allowed {allowed}  limited {limited}  error {error}"
        f"  late {run.sent(None, LATE)}  dropped {run.sent(None, DROPPED)}"
    )


class Console:
    """The console output of one process: ``start()`` at each run's start, ``tick()`` every ``step`` seconds while
    it goes, ``show()`` for the text at its end."""

    def __init__(self) -> None:
        self.interval = 0.0
        self.lag = 0.0
        self._next_line = 0.0

    def start(self, interval: float, lag: float) -> None:
        """A run starts: a status line every ``interval`` seconds (0 = none) from now, over the complete seconds of
        counts that are ``lag`` seconds behind."""
        self.interval, self.lag = interval, lag
        self._next_line = time.monotonic() + interval

    @property
    def step(self) -> float:
        """Seconds between ticks: at most one, so the counts and the verdict are brought up to date every second."""
        return min(1.0, self.interval) if self.interval > 0 else 1.0

    def tick(self, plan: Plan, run: RunView) -> None:
        """Print the status line when it is due: rates over the last ``interval`` complete seconds of requests."""
        interval = self.interval
        if interval <= 0 or time.monotonic() < self._next_line - 1e-3:
            return
        self._next_line += interval
        now = time.time()
        hi = int(now - self.lag)
        lo = max(hi - interval, plan.t0)
        if hi <= lo:
            return
        started = run.started_between(lo, hi)
        target = (plan.schedule.offered(hi - plan.t0) - plan.schedule.offered(lo - plan.t0)) / (hi - lo)
        mode = plan.schedule.stage_at(now - plan.t0).mode
        self.show(status_line(mode, now - plan.t0, target, sum(started) / (hi - lo), run, (lo - plan.t0, hi - plan.t0)))

    def show(self, text: str) -> None:
        print(text, flush=True)


def summary(
    run: RunView, schedule: Schedule, t0: float, elapsed: float, nodes: list[str], locust_requests: int | None
) -> str:
    """The end-of-run table: per mode x outcome, achieved vs target rate per mode and per stage, and per node."""
    seconds = schedule.mode_seconds(elapsed)
    total = run.count()
    lines = [
        f"Rate-limiter summary: {len(nodes)} node(s), {elapsed:.0f}s of load "
        f"(steady {seconds['steady']:.0f}s, burst {seconds['burst']:.0f}s), {total} requests",
        f"{'Mode':<8}{'Outcome':<9}{'Requests':>10}{'Req/s':>10}{'Share':>9}",
    ]
    for mode in MODES:
        in_mode = run.count(mode=mode)
        for outcome in OUTCOMES:
            n = run.count(mode=mode, outcome=outcome)
            lines.append(f"{mode:<8}{outcome:<9}{n:>10}{_rate(n, seconds[mode]):>10.1f}{_share(n, in_mode):>9}")
    lines.append(f"{'Mode':<8}{'Target/s':>12}{'Achieved/s':>12}{'Ratio':>8}")
    for mode in MODES:
        target = schedule.steady_rps if mode == "steady" else schedule.burst_rps
        achieved = _rate(run.count(mode=mode), seconds[mode])
        ratio = f"{achieved / target:.3f}" if seconds[mode] > 0 else "-"
        lines.append(f"{mode:<8}{target:>12.1f}{achieved:>12.1f}{ratio:>8}")
    rates = stage_rates(run, schedule, t0, elapsed)
    if rates:
        lo, hi = min(rates, key=lambda r: r.ratio), max(rates, key=lambda r: r.ratio)
        lines.append(
            f"Stage rates: {len(rates)} stages; achieved/target from {lo.ratio:.3f} (stage {lo.stage.index}, "
            f"{lo.stage.mode}) to {hi.ratio:.3f} (stage {hi.stage.index}, {hi.stage.mode})"
        )
        settled = [r.settled / r.stage.rps for r in rates if r.settled is not None]
        spreads = [r.spread for r in rates if r.spread is not None]
        first = min(r.first_second / r.stage.rps for r in rates)
        if settled:
            lines.append(
                f"Pacing: after each stage's first second, achieved/target from {min(settled):.4f} to "
                f"{max(settled):.4f}; per-second std dev at most {100 * max(spreads or [0]):.2f}% of target; "
                f"the first second of each stage at least {first:.3f} of its target"
            )
    lines.append(f"{'Node':<24}{'Allowed':>9}{'Limited':>9}{'Error':>8}{'Share':>9}")
    for node in nodes:
        counts = [run.count(node=node, outcome=o) for o in OUTCOMES]
        lines.append(f"{node:<24}{counts[0]:>9}{counts[1]:>9}{counts[2]:>8}{_share(sum(counts), total):>9}")
    lines.append(
        f"{'Latency ms':<12}{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}   from intended send:"
        f"{'p50':>8}{'p95':>8}{'p99':>8}{'max':>8}{'late':>8}{'dropped':>8}"
    )
    for mode in MODES:
        cells = [_ms(run.percentile(mode, kind, q)) for kind in (SERVICE, INTENDED) for q in (0.5, 0.95, 0.99, 1.0)]
        lines.append(
            f"{mode:<12}{''.join(f'{c:>8}' for c in cells[:4])}{'':>22}{''.join(f'{c:>8}' for c in cells[4:])}"
            f"{run.sent(mode, LATE):>8}{run.sent(mode, DROPPED):>8}"
        )
    if locust_requests is not None:
        lines.append(f"Locust counted {locust_requests} requests; the suite counted {total}.")
    return "\n".join(lines)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f}"


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else 0.0


def _share(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "-"
