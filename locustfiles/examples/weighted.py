"""Weighted requests: a report of N rows spends N units of the limit.

The request says what it costs twice: to the limiter (here the demo cluster's X-Cost header) and to the suite
(the request context's "cost"), so the verdict replays every request with its weight. (A route whose requests all
cost the same can declare `cost` in a policy file instead.)

    rlsuite-demo --cost-header X-Cost --limit 40 &
    locust -f locustfiles/examples/weighted.py --headless -t 30s --limit 40 --window 1 --steady-rps 60
"""

import locust

from rlsuite import PacedUser, SteadyBurstShape, register

register(locust.events)


class Reports(PacedUser):
    def send(self, slot):
        rows = 1 + (slot.number // 3) % 4  # 1 to 4 units, spread over every node
        self.client.get(
            slot.node.url + f"/v1/report?rows={rows}",
            headers={"X-Cost": str(rows)},
            context={"cost": rows},
            name="GET /v1/report",
        )


__all__ = ["Reports", "SteadyBurstShape"]
