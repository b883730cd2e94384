"""Counting the requests of a process that sends them (standalone or worker): Locust's request listener.

Each request that carries a slot (rlsuite.users puts it in the request context) is classified (allowed, limited, an
error of some kind), matched to its declared policy (rlsuite.routes) and recorded in the ``Tally``: counts, latency,
the per-second timeline and one replay event for the verdict; the limiter's headers are checked on the way. This is
the suite's hot path: a couple of microseconds per request, no allocation it can avoid.
"""

from __future__ import annotations

import logging
from typing import Any

from rlsuite.classify import ERROR, LIMITED, NEVER_SENT, error_kind, outcome_of
from rlsuite.headers import HeaderChecker
from rlsuite.plan import Plan
from rlsuite.replay import ADMITTED, BURST_FLAG, MAX_COST, UNKNOWN, UNSENT, cost_bits, policy_bits
from rlsuite.replay import LIMITED as LIMITED_CODE
from rlsuite.routes import ALL, Router
from rlsuite.schedule import BURST
from rlsuite.tally import Tally
from rlsuite.users import CONTEXT_KEY, COST_KEY

logger = logging.getLogger(__name__)


class Recorder:
    """The request listener and the tally it fills; ``adopt`` follows the plan (its policies and header rules)."""

    def __init__(self) -> None:
        self.headers = HeaderChecker(window_based=False)
        self.tally = Tally()
        self.router = Router(ALL)  # which declared policy each request falls under (the plan's routes)
        self.run_id = -1  # of the last plan adopted: the run the counts in the tally belong to
        self._bad_cost_logged = False

    def on_request(
        self,
        context: dict,
        exception: Any,
        response_time: float,
        start_time: float,
        response: Any,
        request_type: str = "GET",
        url: str = "",
        **_: Any,
    ) -> None:
        slot = context.get(CONTEXT_KEY)
        if slot is None:
            return  # not one of ours
        router = self.router
        policy = 0 if router.trivial else router.index(request_type, url, slot.key)
        bits = router.bits[policy]
        cost = context.get(COST_KEY)
        if cost is not None:
            bits = self._cost_bits(policy, cost, bits)
        seconds = response_time / 1000.0
        status = response.status_code or 0
        outcome = outcome_of(status, exception is not None)
        if outcome == ERROR:
            kind = error_kind(status, getattr(response, "error", None) or exception)
            # a refused connection, or a request that never got one (pool_timeout), never reached the limiter
            code = UNSENT if kind in NEVER_SENT else UNKNOWN
        else:
            kind = None
            code = LIMITED_CODE if outcome == LIMITED else ADMITTED
            self.headers.check(
                response.headers,
                outcome == LIMITED,
                slot.node.name,
                slot.key,
                start_time,
                start_time + seconds,
                self.tally.found,
            )
        if slot.mode == BURST:
            code |= BURST_FLAG
        code |= bits
        self.tally.record(
            slot.mode,
            outcome,
            slot.node.name,
            seconds,
            start_time,
            kind,
            slot.key,
            start_time - slot.due,
            code,
            slot.node_index,
            router.names[policy],
        )

    def _cost_bits(self, policy: int, cost: Any, bits: int) -> int:
        """The event bits of a request that said what it costs (context ``cost``)."""
        if type(cost) is not int or not 1 <= cost <= MAX_COST:
            if not self._bad_cost_logged:
                self._bad_cost_logged = True
                logger.error(
                    "rlsuite: a request's context cost is %r; give whole units from 1 to %d (its policy's cost is "
                    "used instead)",
                    cost,
                    MAX_COST,
                )
            return bits
        return policy_bits(policy) | cost_bits(cost)

    def dropped(self, mode: str, slots: range) -> None:
        """The pacer dropped these slots (too late to send): counted, never sent."""
        self.tally.dropped(mode, len(slots))

    def adopt(self, plan: Plan) -> None:
        self.run_id = plan.run_id
        router = self.router
        if plan.routes != router.routes or plan.targets.api_keys != router.keys:
            self.router = Router(plan.routes, plan.targets.api_keys)
        if plan.window_rule != self.headers.window_based:
            self.headers = HeaderChecker(plan.window_rule)

    def drain(self) -> dict:
        """Everything recorded since the last drain, as a delta of the last plan's run (also after test_stop cleared
        the plan: a worker's final report is drained after that)."""
        self.tally.advertised |= self.headers.advertised
        return self.tally.drain(self.run_id)
