"""The suite's data in Locust's own CSV output: with ``--csv PREFIX``, ``PREFIX_rlsuite.csv`` (counts and rates per
declared policy x mode x outcome x node, rewritten every second like ``PREFIX_stats.csv``) and
``PREFIX_rlsuite_history.csv`` (one row per node and second of the run, appended as each second's counts are
complete, like ``PREFIX_stats_history.csv``).

Written by the process that owns the totals (master or standalone): workers drop ``--csv`` under ``--processes``.
"""

from __future__ import annotations

from locust.stats import StatsCSVFileWriter

import csv
import os
from pathlib import Path
from typing import Any

import gevent

from rlsuite.classify import OUTCOMES
from rlsuite.routes import DEFAULT
from rlsuite.schedule import MODES, Schedule
from rlsuite.tally import RunView


def stop_locust_csv_writer_before_close() -> None:
    """Locust (2.47) closes its CSV files at exit without stopping the greenlet that rewrites them every second
    (main.py's shutdown calls ``close_files()`` after the ``quit`` event), so that greenlet may wake once more during
    the exit and print a ``ValueError: I/O operation on closed file`` traceback under the summary. Make
    ``close_files`` stop the writer first: the files keep what it last wrote, as Locust intends."""
    if getattr(StatsCSVFileWriter.close_files, "stops_writer", False):
        return
    write, close = StatsCSVFileWriter.stats_writer, StatsCSVFileWriter.close_files

    def stats_writer(self: Any) -> None:
        self._rlsuite_writer = gevent.getcurrent()
        write(self)

    def close_files(self: Any) -> None:
        writer = getattr(self, "_rlsuite_writer", None)
        if writer is not None:
            writer.kill()
        close(self)

    close_files.stops_writer = True  # type: ignore[attr-defined]
    StatsCSVFileWriter.stats_writer = stats_writer
    StatsCSVFileWriter.close_files = close_files


TOTALS_HEADER = ["Policy", "Mode", "Outcome", "Node", "Requests", "Requests/s", "Share"]
HISTORY_HEADER = ["Timestamp", "Elapsed", "Mode", "Target/s", "Node", "Allowed", "Limited", "Error"]
ALL_NODES = "all"


class CsvFiles:
    def __init__(self, prefix: str) -> None:
        self.totals_path = Path(f"{prefix}_rlsuite.csv")
        self.history_path = Path(f"{prefix}_rlsuite_history.csv")
        self._history_until = -1  # run second up to which the history is written
        self._run_id: int | None = None

    def write(
        self,
        run: RunView,
        schedule: Schedule,
        t0: float,
        elapsed: float,
        settled: float,
        nodes: list[str],
        final: bool = False,
        policies: list[str] | None = None,
    ) -> None:
        """Rewrite the totals; append the history of the seconds settled since the last call (``final``: every
        second with a request, also one that started a moment after the run's end)."""
        if run.run_id != self._run_id:
            self._run_id, self._history_until = run.run_id, -1
            _write_rows(self.history_path, [HISTORY_HEADER])
        _write_rows(self.totals_path, [TOTALS_HEADER, *totals_rows(run, schedule, elapsed, nodes, policies)])
        upto = int(settled)
        if final and run.seconds:
            upto = max(upto, max(second for second, _ in run.seconds) - int(t0) + 1)
        if upto > self._history_until + 1:
            rows = history_rows(run, schedule, t0, self._history_until + 1, upto, nodes)
            with self.history_path.open("a", newline="") as f:
                csv.writer(f).writerows(rows)
            self._history_until = upto - 1


def totals_rows(
    run: RunView, schedule: Schedule, elapsed: float, nodes: list[str], policies: list[str] | None = None
) -> list[list[Any]]:
    """Per declared policy (and ``unmatched``, once a request matched none), mode, outcome and node."""
    seconds = schedule.mode_seconds(elapsed)
    total = run.count()
    rows = []
    seen = run.policies()
    for policy in [*(policies or [DEFAULT]), *(p for p in seen if p not in (policies or [DEFAULT]))]:
        for mode in MODES:
            for outcome in OUTCOMES:
                for node in [*nodes, ALL_NODES]:
                    n = run.count(mode=mode, outcome=outcome, node=None if node == ALL_NODES else node, policy=policy)
                    rate = n / seconds[mode] if seconds[mode] > 0 else 0.0
                    share = f"{n / total if total else 0.0:.6f}"
                    rows.append([policy, mode, outcome, node, n, f"{rate:.3f}", share])
    return rows


def history_rows(
    run: RunView, schedule: Schedule, t0: float, first: int, upto: int, nodes: list[str]
) -> list[list[Any]]:
    """Rows for the run's seconds [first, upto): per node and for all nodes, by request start time."""
    base = int(t0)
    rows = []
    for i in range(max(0, first), upto):
        stage = schedule.stage_at(i + 0.5)
        target = schedule.offered(i + 1) - schedule.offered(i)
        everyone = [0, 0, 0]
        for node in nodes:
            counts = run.seconds.get((base + i, node), (0, 0, 0))
            everyone = [a + b for a, b in zip(everyone, counts, strict=True)]
            rows.append([base + i, i, stage.mode, f"{target:g}", node, *counts])
        rows.append([base + i, i, stage.mode, f"{target:g}", ALL_NODES, *everyone])
    return rows


def _write_rows(path: Path, rows: list[list[Any]]) -> None:
    """Write the whole file at once, through a temporary file: a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    os.replace(tmp, path)
