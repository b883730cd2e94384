"""A JSON POST with a bearer token per tenant: the suite paces the requests, your user builds them.

Each tenant is an API key of the suite (--api-keys): the limit is kept per tenant, and the verdict judges each
tenant's partition. The limiter tells tenants apart by their token (the demo cluster: --key-header Authorization).

    rlsuite-demo --key-header Authorization --limit 20 &
    locust -f locustfiles/examples/tenant_post.py --headless -t 30s --api-keys acme,globex \\
        --limit 20 --window 1 --steady-rps 100

Tokens come from RLSUITE_TENANT_TOKENS ("acme=...,globex=..."); without it each tenant gets a demo token.
"""

import locust

import os

from rlsuite import PacedUser, SteadyBurstShape, register

register(locust.events)  # the suite's options, pacing, counting, /metrics and verdict

TOKENS = dict(pair.split("=", 1) for pair in os.environ.get("RLSUITE_TENANT_TOKENS", "").split(",") if "=" in pair)


class TenantOrders(PacedUser):
    def send(self, slot):
        tenant = self.api_key(slot) or "public"
        token = TOKENS.get(tenant, f"demo-token-{tenant}")
        self.client.post(
            slot.node.url + "/v1/orders",
            json={"tenant": tenant, "sku": "A-1", "quantity": 1 + slot.number % 3},
            headers={"Authorization": f"Bearer {token}"},
            name="POST /v1/orders",
        )


__all__ = ["SteadyBurstShape", "TenantOrders"]
