"""The web view model: everything the Rate limiter tab, ``/rlsuite`` (and its JSON) and the ``--html`` report show
about the current or last run, as JSON-ready data. Built here from a Suite's counts, plan and verdict so far; the
renderers (``render.py``) only format it, and the suite itself builds no presentation data."""

from __future__ import annotations

from typing import Any

from rlsuite.classify import OUTCOMES
from rlsuite.schedule import MODES
from rlsuite.tally import DROPPED, LATE


def snapshot(suite: Any) -> dict[str, Any]:
    """The current or last run of ``suite`` (a ``rlsuite.suite.Suite``): ``{"running": False, "run_id": None}``
    before the first run."""

    suite.sync()
    conductor, run, status = suite.conductor, suite.totals.run, suite.status
    plan = conductor.plan if conductor else None
    if plan is None:
        return {"running": False, "run_id": None}
    nodes = [n.name for n in plan.targets.nodes]
    elapsed = conductor.elapsed()
    seconds = plan.schedule.mode_seconds(elapsed)
    total = run.count()
    table = []
    for mode in MODES:
        for outcome in OUTCOMES:
            for node in nodes:
                n = run.count(mode=mode, outcome=outcome, node=node)
                table.append(
                    {
                        "mode": mode,
                        "outcome": outcome,
                        "node": node,
                        "count": n,
                        "rate": n / seconds[mode] if seconds[mode] > 0 else 0.0,
                        "share": n / total if total else 0.0,
                    }
                )
    by_second = run.by_second()
    base = int(plan.t0)
    series = [
        {"t": second - base, "allowed": c[0], "limited": c[1], "error": c[2]} for second, c in sorted(by_second.items())
    ]
    complete = [s for s in series if s["t"] < int(elapsed)]
    recent = complete[-5:]
    policy = conductor.policy  # the only one (several: no single line to draw)
    several = "; ".join(f"{p.name}: {p.describe()}" for p in conductor.policies) if policy is None else ""
    verdict = suite.judge()
    return {
        "running": status.running,
        "run_id": plan.run_id,
        # at the very end of a run, elapsed == run time is the start of a stage that never ran
        "mode": plan.schedule.stage_at(elapsed - 1e-6).mode,
        "target_rps": status.target_rps,
        "achieved_rps": sum(s["allowed"] + s["limited"] + s["error"] for s in recent) / max(1, len(recent)),
        "elapsed": elapsed,
        # seconds of the run whose counts are all in (the verdict's horizon too); while running, the counts trail
        # by `lag` seconds: a master hears of requests only when its workers report
        "settled": suite.settled_elapsed(),
        "distributed": suite.is_master,
        "lag": suite.counts_lag,
        "t0": plan.t0,
        "run_time": plan.schedule.run_time,
        "nodes": nodes,
        "mode_seconds": seconds,
        "table": table,
        "series": series,
        "stages": [
            {"index": s.index, "mode": s.mode, "start": s.start, "end": s.end, "rps": s.rps}
            for s in plan.schedule.stages(until=max(elapsed, 1.0))
        ],
        "limit_rps": policy.rate * plan.targets.partitions if policy else None,
        "policy": policy.describe() if policy else several or None,
        "late": run.sent(None, LATE),
        "dropped": run.sent(None, DROPPED),
        "verdict": verdict.to_json() if verdict else None,
        "metrics_url": suite.exporter.url if suite.exporter else None,
    }
