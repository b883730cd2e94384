"""Alternating steady and burst stages, in requests per second rather than users.

Locust calls ``tick()`` about once a second, on the master only. The rate itself is not set here: the plan that
``begin_run`` sends out carries the whole stage schedule (``--steady-rps``, ``--burst-multiplier``,
``--burst-every``, ``--burst-duration``) and every process paces its slots from it, so a stage switch takes effect
on the second it is due rather than at the next tick, and bursts never wait for users to spawn (Locust #2242).
The shape keeps the user count (requests in flight at most) steady and ends the run after Locust's own
``--run-time`` (``use_common_options``), or runs until stopped without one.
"""

from __future__ import annotations

from locust import LoadTestShape
from locust.runners import STATE_INIT


class SteadyBurstShape(LoadTestShape):
    use_common_options = True  # honour -u/--users, -r/--spawn-rate and -t/--run-time, and show them in the web UI

    def tick(self) -> tuple[int, float] | None:
        suite = self.runner.environment.rlsuite
        # The runner is in its init state only on the first tick of a run (start_shape sets it; the first start()
        # leaves it). reset_time() is no such signal: a master calls it again when the first spawn goes out.
        if self.runner.state == STATE_INIT and not suite.begin_run():
            return None
        return suite.conductor.tick(self.runner.environment.parsed_options)
