"""Load-test suite for HTTP rate-limiter clusters, built on Locust.

Public names, for a locustfile of your own (``locustfiles/examples/``)::

    import locust
    from rlsuite import PacedUser, SteadyBurstShape, register

    register(locust.events)  # the suite's options, counting, /metrics and verdict

    class Orders(PacedUser):
        def send(self, slot):
            self.client.post(slot.node.url + "/v1/orders", json={"qty": 1}, name="orders")

They are imported when first used, so ``import rlsuite.models`` (and the like) does not import Locust.

Modules, one concept each: ``schedule`` (steady/burst stages as a function of time), ``targets`` (limiter nodes
and what their answers mean), ``plan`` (what the master tells every process about a run), ``pacing`` (open-model
send times), ``routes`` (which declared policy a request falls under), ``policyfile`` (several declared policies),
``tally`` (per-request counting and its worker-to-master deltas), ``metrics`` (Prometheus view), ``exporter``
(serving /metrics), ``console`` (periodic line and end-of-run summary), ``users`` (the Locust users), ``suite``
(wiring it all into a Locust environment).
"""

from __future__ import annotations

from typing import Any

__all__ = ["PacedUser", "RateLimitUser", "Slot", "SteadyBurstShape", "register"]


def __getattr__(name: str) -> Any:
    if name in ("PacedUser", "RateLimitUser"):
        from rlsuite import users

        return getattr(users, name)
    if name == "Slot":
        from rlsuite.pacing import Slot

        return Slot
    if name == "SteadyBurstShape":
        from shapes.steady_burst import SteadyBurstShape

        return SteadyBurstShape
    if name == "register":
        from rlsuite.suite import register

        return register
    raise AttributeError(f"module 'rlsuite' has no attribute {name!r}")
