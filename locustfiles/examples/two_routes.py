"""Two routes, each with its own limit: a policy file declares both, and the verdict judges each on its own.

    rlsuite-demo --route /v1/search=20/1 --route /v1/export=5/1 &
    locust -f locustfiles/examples/two_routes.py --headless -t 30s \\
        --policy-file locustfiles/examples/two_routes.toml --steady-rps 100

Every other slot searches (GET), the others export (POST); the policy file matches each request by route and
method. Try the cluster with the export limit kept per node (`--route /v1/export=5/1:per-node`): the verdict fails
the export policy, and only it.
"""

import locust

from rlsuite import PacedUser, SteadyBurstShape, register

register(locust.events)


class SearchAndExport(PacedUser):
    def send(self, slot):
        if slot.number % 2 == 0:
            self.client.get(slot.node.url + "/v1/search?q=limits", headers=slot.headers, name="GET /v1/search")
        else:
            self.client.post(
                slot.node.url + "/v1/export", json={"format": "csv"}, headers=slot.headers, name="POST /v1/export"
            )


__all__ = ["SearchAndExport", "SteadyBurstShape"]
