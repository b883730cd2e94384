"""The steady/burst stage schedule: a pure function of time since the run started.

Stage 0 is steady. A burst starts every ``burst_every`` seconds (at ``burst_every``, ``2 * burst_every``, ...) and
lasts ``burst_duration`` seconds, at ``burst_multiplier`` times the steady rate; steady traffic fills the rest.

Requests are planned as numbered *slots*: slot ``g`` is due at ``slot_time(g)``, the moment the cumulative target
``offered(t)`` (the integral of the rate) reaches ``g``. Every process derives the same slot times from the same
schedule, so pacing, round-robin and mode labels need no coordination beyond the schedule itself.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

from rlsuite import options
from rlsuite.options import Option, OptionError

STEADY = "steady"
BURST = "burst"
MODES = (STEADY, BURST)


@dataclass(frozen=True)
class Stage:
    index: int
    mode: str
    rps: float
    start: float
    end: float  # math.inf when the run has no end

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Schedule:
    steady_rps: float
    burst_multiplier: float
    burst_every: float
    burst_duration: float
    run_time: float | None = None  # seconds; None runs until stopped

    @property
    def burst_rps(self) -> float:
        return self.steady_rps * self.burst_multiplier

    @property
    def peak_rps(self) -> float:
        return self.burst_rps if self.burst_duration > 0 else self.steady_rps

    def _bursts(self) -> bool:
        return self.burst_duration > 0

    def stage_at(self, elapsed: float) -> Stage:
        """The stage running at ``elapsed`` seconds (clamped to 0)."""
        elapsed = max(elapsed, 0.0)
        p, d = self.burst_every, self.burst_duration
        if not self._bursts() or elapsed < p:
            end = p if self._bursts() else math.inf
            return self._clip(Stage(0, STEADY, self.steady_rps, 0.0, end))
        n = int(elapsed // p)  # period n >= 1 starts with its burst
        start = n * p
        if elapsed < start + d:
            return self._clip(Stage(2 * n - 1, BURST, self.burst_rps, start, start + d))
        return self._clip(Stage(2 * n, STEADY, self.steady_rps, start + d, start + p))

    def _clip(self, stage: Stage) -> Stage:
        if self.run_time is None or stage.end <= self.run_time:
            return stage
        return Stage(stage.index, stage.mode, stage.rps, stage.start, self.run_time)

    def stages(self, until: float | None = None) -> list[Stage]:
        """All stages that start before ``until`` (default: the run's end, which must then be set)."""
        limit = self.run_time if until is None else until
        if limit is None:
            raise ValueError("stages() of an endless run needs 'until'")
        out: list[Stage] = []
        t = 0.0
        while t < limit:
            stage = self.stage_at(t)
            out.append(stage)
            if stage.end >= limit:
                break
            t = stage.end
        return out

    def burst_seconds_before(self, elapsed: float) -> float:
        """Seconds spent in burst stages in [0, elapsed)."""
        p, d = self.burst_every, self.burst_duration
        if not self._bursts() or elapsed <= p:
            return 0.0
        n = int(elapsed // p)
        return (n - 1) * d + min(elapsed - n * p, d)

    def offered(self, elapsed: float) -> float:
        """Target number of requests in [0, elapsed): the integral of the rate."""
        elapsed = max(elapsed, 0.0)
        if self.run_time is not None:
            elapsed = min(elapsed, self.run_time)
        return self.steady_rps * (elapsed + (self.burst_multiplier - 1) * self.burst_seconds_before(elapsed))

    @functools.cached_property
    def total_slots(self) -> int | None:
        """Number of slots in the run; None when it has no end (computed once: it is read for every slot)."""
        if self.run_time is None:
            return None
        return math.ceil(self.offered(self.run_time) - 1e-9)

    def slot(self, slot: int) -> tuple[float, str] | None:
        """When slot number ``slot`` is due (elapsed seconds) and in which mode; None when it falls after the end.

        The mode comes from the same branch that computes the time, so a slot due exactly at a stage boundary
        is never labelled with the neighbouring stage by a rounding error.
        """
        place = self.place(slot)
        return None if place is None else (place[0], place[1])

    def place(self, slot: int) -> tuple[float, str, int] | None:
        """``slot``'s due time (elapsed seconds), mode and stage index, all from one branch (see ``slot``); None when
        it falls after the end. The stage index never decreases from one slot to the next."""
        total = self.total_slots
        if total is not None and slot >= total:
            return None
        r, p, d = self.steady_rps, self.burst_every, self.burst_duration
        first_period = r * p
        if not self._bursts() or slot < first_period:
            return slot / r, STEADY, 0
        per_period = r * (p + (self.burst_multiplier - 1) * d)
        burst_slots = self.burst_rps * d
        rest = slot - first_period
        n = int(rest // per_period)
        within = rest - n * per_period
        start = (n + 1) * p
        if within < burst_slots:
            return start + within / self.burst_rps, BURST, 2 * n + 1
        return start + d + (within - burst_slots) / r, STEADY, 2 * n + 2

    def first_slot_at(self, elapsed: float) -> int:
        """The first slot due at or after ``elapsed``."""
        return max(0, math.ceil(self.offered(elapsed) - 1e-9))

    def mode_seconds(self, until: float) -> dict[str, float]:
        """Seconds spent in each mode in [0, until)."""
        if self.run_time is not None:
            until = min(until, self.run_time)
        burst = self.burst_seconds_before(until)
        return {STEADY: max(until, 0.0) - burst, BURST: burst}


GROUP = "Steady and burst traffic"
OPTIONS = (
    Option(
        "steady-rps",
        GROUP,
        type=float,
        default=100.0,
        above=0,
        help="Target requests/s across all nodes and workers.",
    ),
    Option(
        "burst-multiplier",
        GROUP,
        type=float,
        default=3.0,
        minimum=1,
        help="Burst stages send this many times --steady-rps.",
    ),
    Option(
        "burst-every",
        GROUP,
        type=int,
        default=30,
        minimum=1,
        help="Seconds from one burst start to the next; the first burst starts this long after the run starts.",
    ),
    Option("burst-duration", GROUP, type=int, default=10, minimum=0, help="Seconds each burst lasts; 0 = no bursts."),
)


def from_options(opts: Any) -> Schedule:
    """The schedule the options describe; the run's length is Locust's own --run-time (None = until stopped)."""
    values = options.check(opts, OPTIONS)
    steady, multiplier = values["steady-rps"], values["burst-multiplier"]
    every, duration = values["burst-every"], values["burst-duration"]
    for name, value in (("burst-every", every), ("burst-duration", duration)):
        if value != int(value):
            raise OptionError(
                name, f"must be whole seconds, got {value:g}", f"set e.g. --{name} {max(1, round(value))}"
            )
    if duration >= every:
        raise OptionError(
            "burst-duration",
            f"({duration:g}s) must be shorter than --burst-every ({every:g}s)",
            "shorten the burst or space bursts further apart",
        )
    run_time = getattr(opts, "run_time", None)
    if run_time is not None:
        run_time = float(run_time)
        if run_time <= 0:
            raise OptionError("run-time", f"must be above 0, got {run_time:g}", "set e.g. --run-time 60s")
    return Schedule(steady, multiplier, float(every), float(duration), run_time)
