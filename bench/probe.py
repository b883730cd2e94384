"""Bench add-on locustfile, loaded beside the one under test (``-f locustfiles/ratelimit.py,bench/probe.py``).

It adds no users and costs nothing per request. When Locust exits (its ``quit`` event, after the last worker
reports are in) the master or standalone process writes what the bench needs to the JSON file named by
``BENCH_PROBE_OUT``:

- Locust's own per-second request counts (``stats.total.num_reqs_per_sec``, by completion second) and totals;
- with the rate-limiter suite loaded: the run's ``t0``, its schedule and the suite's own per-second counts by
  request start second (``RunView.started_between``, the source of its status line and ``Stage rates``).

``BENCH_NO_LISTENER=1`` removes the suite's per-request listener (``events.request``) right after the suite's init
handler registered it: the suite user then runs exactly as usual, but nothing counts its requests except Locust.
This is the "B" side of the listener-overhead A/B runs.
"""

import locust
from locust.runners import MasterRunner, WorkerRunner

import json
import os
from typing import Any

_env: list[Any] = []


def runner_is_master(runner: Any) -> bool:
    return isinstance(runner, MasterRunner)


@locust.events.init.add_listener
def _on_init(environment: Any, runner: Any, **_: Any) -> None:
    _env.append(environment)
    suite = getattr(environment, "rlsuite", None)
    if os.environ.get("BENCH_NO_LISTENER") == "1" and suite is not None and not runner_is_master(runner):
        environment.events.request.remove_listener(suite.recorder.on_request)  # standalone and workers count requests


@locust.events.quit.add_listener
def _on_quit(**_: Any) -> None:
    out = os.environ.get("BENCH_PROBE_OUT")
    if not out or not _env or isinstance(_env[0].runner, WorkerRunner):
        return
    environment = _env[0]
    total = environment.runner.stats.total
    data: dict[str, Any] = {
        "locust_requests": total.num_requests,
        "locust_failures": total.num_failures,
        "locust_per_sec": {str(k): v for k, v in total.num_reqs_per_sec.items()},
    }
    suite = getattr(environment, "rlsuite", None)
    plan = suite.conductor.plan if suite is not None and suite.conductor is not None else None
    if plan is not None:
        s = plan.schedule
        data["t0"] = plan.t0
        data["schedule"] = {
            "steady_rps": s.steady_rps,
            "burst_multiplier": s.burst_multiplier,
            "burst_every": s.burst_every,
            "burst_duration": s.burst_duration,
            "run_time": s.run_time,
        }
        data["stages"] = [[st.index, st.mode, st.rps, st.start, st.end] for st in s.stages()]
        run = suite.totals.run
        data["suite_requests"] = run.count()
        # per start second, through the public RunView.started_between (the status line's own source)
        first, last = int(plan.t0) - 2, int(plan.t0 + (s.run_time or 0)) + 30
        per_sec = {second: sum(run.started_between(second, second + 1)) for second in range(first, last)}
        data["suite_per_sec"] = {str(k): v for k, v in per_sec.items() if v}
    with open(out, "w") as f:
        json.dump(data, f)
