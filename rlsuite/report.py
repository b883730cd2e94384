"""The end of a run on the master or standalone process: the summary with where the rest is and the verdict, the
verdict JSON, the process's exit code, and a last scrape of /metrics before a headless run exits."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from rlsuite import console
from rlsuite.conductor import Conductor
from rlsuite.exporter import Exporter
from rlsuite.tally import RunView
from rlsuite.verdict import PASS, Verdict

logger = logging.getLogger(__name__)


def summary(
    run: RunView,
    conductor: Conductor,
    locust_requests: int | None,
    metrics_url: str | None,
    verdict: Verdict | None,
    verdict_json: str,
) -> str:
    """The end-of-run text of the conductor's current plan: the counts (``console.summary``), where /metrics is,
    the workers that left, and the verdict (written to ``verdict_json`` too, when given)."""
    plan = conductor.plan
    text = console.summary(
        run, plan.schedule, plan.t0, conductor.elapsed(), [n.name for n in plan.targets.nodes], locust_requests
    )
    where = f"\nPrometheus metrics: {metrics_url}" if metrics_url else ""
    where += departures(conductor)
    if verdict is not None:
        where += "\n\n" + verdict.render()
        if verdict_json:
            write_json(verdict_json, verdict.to_json())
            where += f"\nVerdict JSON: {verdict_json}"
    elif not conductor.policies:
        where += "\nNo limit declared (--limit or --policy-file): no verdict."
    return f"\n{text}{where}\n"


def departures(conductor: Conductor) -> str:
    """A line per worker that left the run: quit (and what it handed back), missing and back, or lost (and how many
    of its requests at most went uncounted)."""
    lines = ""
    for d in conductor.departures:
        if not d.lost:
            handed = f": handed back {d.returned} unsent slot(s), sent by the others" if d.returned else ""
            lines += f"\nWorker {d.worker} left (quit) {d.at:g}s into the run{handed}"
        elif d.back:
            lines += f"\nWorker {d.worker} went missing {d.at:g}s into the run and came back (its counts are in)"
        else:
            bound, at = conductor.unaccounted(d.worker)
            since = "from the start of the run" if at is None else f"after its last report, {at:g}s into the run"
            heard = "" if d.heard is None else f" (last heard {d.heard:g}s)"
            lines += (
                f"\nWorker {d.worker} was LOST (no heartbeat) {d.at:g}s into the run{heard}: at most {bound} of "
                f"its requests are unaccounted for (the slots it held {since}, and those then in flight)"
            )
    return lines


def write_json(path: str, data: dict) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, indent=2) + "\n")


def exit_code(verdict: Verdict | None) -> int | None:
    """The process's exit code for the verdict: 3 when the cluster did not honour its limit, 4 when the run could
    not tell; None when it passed (or none was judged), so Locust's own 1 (failures) and 2 (bad input) stand."""
    if verdict is None or verdict.result == PASS:
        return None
    return verdict.exit_code


def last_scrape(exporter: Exporter, linger: float) -> None:
    """Keep /metrics up until it is scraped once more (the final counts), at most ``linger`` seconds, then stop it."""
    if linger > 0 and exporter.url:
        logger.info("rlsuite: waiting up to %gs for a last scrape of %s", linger, exporter.url)
        scraped = exporter.linger(linger)
        logger.info("rlsuite: %s", "final counts scraped" if scraped else "no scrape came; exiting")
    exporter.stop()
