"""Load test for an HTTP rate-limiter cluster: round-robin over the nodes, steady and burst stages, Prometheus export.

    locust -f locustfiles/ratelimit.py                      # web UI on :8089
    locust -f locustfiles/ratelimit.py --headless -t 60s    # CI; /metrics on --metrics-port

Options: `locust -f locustfiles/ratelimit.py --help` (section "Rate-limiter targets" and below), each also a
LOCUST_* environment variable and a locust.conf key. Nothing runs at import except option registration.
"""

import locust

import sys
from pathlib import Path

# Locust puts this file's directory on sys.path, not the repository root where the suite's packages live.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlsuite import suite
from rlsuite.users import RateLimitUser
from shapes.steady_burst import SteadyBurstShape

suite.register(locust.events)

__all__ = ["RateLimitUser", "SteadyBurstShape"]
