"""The worker's side of a distributed run: it adopts the plans the master sends (with its clock offset), ships its
counts and its progress in every ``report_to_master``, and hands its unsent slots back when it quits mid-run.
"""

from __future__ import annotations

from locust.exception import RPCError

import logging
import time
from typing import Any

import gevent

from rlsuite.pacing import Pacer
from rlsuite.plan import PROGRESS_KEY, RETURN, Plan, progress_to_message
from rlsuite.recorder import Recorder
from rlsuite.tally import DELTA_KEY

logger = logging.getLogger(__name__)

# Clocks closer than this are treated as the same clock: a correction would only add the message latency.
CLOCK_SKEW_TOLERANCE = 0.05


class WorkerLink:
    """One worker's messages to and from the master (its listeners are registered by rlsuite.suite)."""

    def __init__(self, environment: Any, pacer: Pacer, recorder: Recorder) -> None:
        self.environment = environment
        self.pacer = pacer
        self.recorder = recorder
        self._recorded = 0  # requests drained into reports since the process started (with pacer.taken: in flight)
        self._reports_sent = 0
        self._clock_offset: tuple[tuple[str, int], float] = (("", -1), 0.0)  # (epoch, run id), smallest offset seen

    @property
    def runner(self) -> Any:
        return self.environment.runner

    def on_plan_message(self, environment: Any, msg: Any, **_: Any) -> None:
        data = msg.data
        # local minus master clock, plus this message's latency: the smallest over the run's lead and first second
        # is the estimate, fixed after that (plans come five times a second: a delayed message must not move t0, nor
        # a step of the master's clock later in the run)
        now = time.time()
        offset = now - data["sent_at"]
        run = (data["epoch"], data["run_id"])
        seen_run, seen = self._clock_offset
        if run == seen_run:
            offset = min(offset, seen) if now < data["t0"] + seen + 1.0 else seen
        self._clock_offset = (run, offset)
        current = self.pacer.plan
        plan = Plan.from_message(data, offset if abs(offset) > CLOCK_SKEW_TOLERANCE else 0.0, current)
        if plan is None:
            return  # grants of a run whose plan has not reached this worker yet: the master resends it every second
        share = current.grants[-1][2:] if current and current.grants else None
        if self.pacer.apply(plan) and plan.grants and plan.grants[-1][2:] != share:
            start, _, index, count = plan.grants[-1]
            logger.debug("adopted plan v%s: share %s/%s from slot %s", plan.version, index, count, start)

    def in_flight(self) -> int:
        """Slots handed to users whose request is not recorded in a drained report yet."""
        return self.pacer.taken - self._recorded - sum(self.recorder.tally.requests.values())

    def on_report_to_master(self, data: dict, **_: Any) -> None:
        in_flight = self.in_flight()  # before the drain: the requests recorded since the last one are in it
        data[DELTA_KEY] = delta = self.recorder.drain()
        self._recorded += sum(row[-1] for row in delta["requests"])
        epoch, run_id = self.pacer.run
        self._reports_sent += 1
        data[PROGRESS_KEY] = {
            "epoch": epoch,
            "run_id": run_id,
            "seq": self._reports_sent,
            "progress": progress_to_message(self.pacer.progress()),
            "inflight": in_flight,
        }

    def on_worker_quitting(self, **_: Any) -> None:
        """This worker quits while its run goes on (SIGTERM, Ctrl-C): hand its unsent slots back to the master at
        once, let the requests in flight finish, and send a final report (Locust sends none when a worker quits by
        itself), all before Locust's own "quit" message."""
        going = self.pacer.plan is not None
        epoch, run_id, done = self.pacer.close(final=True)  # no plan is adopted any more, even one on its way
        try:
            # Also without a plan: the master may have granted this worker slots of a run whose first plan is still
            # on its way; it then grants them all again (the master ignores this when no run is going).
            self.runner.send_message(RETURN, {"epoch": epoch, "run_id": run_id, "progress": progress_to_message(done)})
            if not going:
                return  # the master stopped the run: the worker's final report went out with its stop
            timeout = float(getattr(self.environment.parsed_options, "request_timeout", 2.0)) + 0.5
            deadline = time.monotonic() + timeout
            while self.in_flight() > 0 and time.monotonic() < deadline:
                gevent.sleep(0.02)
            self.runner._send_stats()  # what Locust itself does on a "quit" from the master: report_to_master + send
        except RPCError as e:  # the master is gone: nothing to hand back to
            logger.info("rlsuite: could not hand this worker's slots back to the master: %s", e)
