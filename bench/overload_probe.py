"""Bench add-on locustfile for bench/overload.py, loaded beside the one under test (``-f <locustfile>,<this>``).

Adds no users and nothing per request. When Locust quits, the standalone process writes to the JSON file named by
``BENCH_PROBE_OUT``: Locust's per-second request counts (by completion second), totals and largest response time,
and with the rate-limiter suite loaded the run's ``t0``, the suite's own per-second counts (by request start
second), its largest latencies (as Locust measures it, and from the intended send time), late and dropped sends,
failures by kind, and the achieved rate of every stage that ran to its end (``rlsuite.rates.stage_rates``, the source
of its ``Stage rates`` line).
"""

import locust
from locust.runners import MasterRunner, WorkerRunner

import json
import os
from typing import Any

_env: list[Any] = []


@locust.events.init.add_listener
def _on_init(environment: Any, **_: Any) -> None:
    _env.append(environment)


@locust.events.quit.add_listener
def _on_quit(**_: Any) -> None:
    out = os.environ.get("BENCH_PROBE_OUT")
    if not out or not _env or isinstance(_env[0].runner, MasterRunner | WorkerRunner):
        return
    environment = _env[0]
    total = environment.runner.stats.total
    data: dict[str, Any] = {
        "locust_requests": total.num_requests,
        "locust_failures": total.num_failures,
        "locust_max_ms": total.max_response_time,
        "locust_per_sec": {str(k): v for k, v in total.num_reqs_per_sec.items()},
    }
    suite = getattr(environment, "rlsuite", None)
    plan = suite.conductor.plan if suite is not None and suite.conductor is not None else None
    if plan is not None:
        suite.sync()
        run = suite.totals.run
        data["t0"] = plan.t0
        data["suite_requests"] = run.count()
        first, last = int(plan.t0) - 2, int(plan.t0 + (plan.schedule.run_time or 0)) + 30
        per_sec = {second: sum(run.started_between(second, second + 1)) for second in range(first, last)}
        data["suite_per_sec"] = {str(k): v for k, v in per_sec.items() if v}
        data["service_max_s"] = max((us for (_, _, us) in run.latency), default=0) / 1e6
        data["intended_max_s"] = max((us for (_, us) in run.intended), default=0) / 1e6
        data["sends"] = {f"{mode} {what}": n for (mode, what), n in run.sends.items()}
        errors: dict[str, int] = {}
        for (_, _, kind), n in run.errors.items():
            errors[kind] = errors.get(kind, 0) + n
        data["errors"] = errors
        data["users"] = environment.parsed_options.num_users  # -u, or the default the suite set
        from rlsuite.rates import stage_rates

        data["stages"] = [
            {
                "index": r.stage.index,
                "mode": r.stage.mode,
                "rps": r.stage.rps,
                "start": r.stage.start,
                "end": r.stage.end,
                "achieved": r.achieved,
                "first_second": r.first_second,
                "settled": r.settled,
                "spread": r.spread,
            }
            for r in stage_rates(run, plan.schedule, plan.t0, plan.schedule.run_time or 0)
        ]
    with open(out, "w") as f:
        json.dump(data, f)
