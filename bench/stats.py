"""Figures of repeated runs: a series per generator with median, min and max; ratios of runs made side by side."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from bench import BenchError


@dataclass
class Series:
    values: list[float] = field(default_factory=list)

    def add(self, v: float) -> None:
        self.values.append(v)

    @property
    def ok(self) -> bool:
        return bool(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else 0.0

    @property
    def lo(self) -> float:
        return min(self.values) if self.values else 0.0

    @property
    def hi(self) -> float:
        return max(self.values) if self.values else 0.0


def paired(a: Series, b: Series) -> Series:
    """Per-repetition ratios a/b of runs made next to each other."""
    return Series([x / y for x, y in zip(a.values, b.values, strict=False) if y > 0])


def median_or_nan(values: list[float]) -> float:
    return statistics.median(values) if values else math.nan


def window_rate(per_sec: dict[int, int], lo: int, hi: int) -> float:
    """Mean requests/s over whole seconds [lo, hi)."""
    if hi <= lo:
        raise BenchError(f"empty measuring window [{lo}, {hi})")
    return sum(per_sec.get(s, 0) for s in range(lo, hi)) / (hi - lo)
