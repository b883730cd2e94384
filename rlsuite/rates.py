"""How well the load was paced: the achieved rate of each stage, counted by request start time."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from rlsuite.schedule import Schedule, Stage
from rlsuite.tally import RunView


@dataclass(frozen=True)
class StageRate:
    """How well one stage that ran to its end was paced, counted by request start time."""

    stage: Stage
    achieved: float  # requests/s over the whole stage
    first_second: float  # requests/s in its first second: how quickly the switch took effect
    settled: float | None  # requests/s after the first second (None for a one-second stage)
    spread: float | None  # standard deviation of the per-second rate after the first second, / target

    @property
    def ratio(self) -> float:
        return self.achieved / self.stage.rps


def stage_rates(run: RunView, schedule: Schedule, t0: float, elapsed: float) -> list[StageRate]:
    """Every stage that ran to its end. ``t0`` and stage boundaries are whole seconds, so per-second counts split
    exactly at stage boundaries."""
    out = []
    by_second = run.by_second()
    for stage in schedule.stages(until=elapsed):
        if stage.end > elapsed + 1e-9 or stage.duration < 1:
            continue
        first = int(t0 + stage.start)
        per_second = [sum(by_second.get(s, (0, 0, 0))) for s in range(first, int(t0 + stage.end))]
        rest = per_second[1:]
        settled = sum(rest) / len(rest) if rest else None
        spread = statistics.pstdev(rest) / stage.rps if len(rest) > 1 else None
        out.append(StageRate(stage, sum(per_second) / len(per_second), per_second[0], settled, spread))
    return out
