"""The Locust user: sends each paced slot to its node.

200 and the rejection statuses are successes (a 429 proves the limiter works); anything else, a connection error
or a timeout is a failure. That rule is given to FastHttpUser's own status check (its client's valid response
codes), so no per-request ``catch_response`` block is needed: it costs as much as the suite's whole listener.
Timeouts are explicit and short (--request-timeout), never Locust's 60 s default, and nothing is retried: a retry
would spend limiter quota that nobody counts.
"""

from __future__ import annotations

from locust import FastHttpUser, constant, task

from rlsuite.classify import success_statuses
from rlsuite.targets import DEMO_NODE_HOSTS, parse_statuses

CONTEXT_KEY = "rlsuite"  # the slot rides in the request context, where the suite's request listener finds it


class RateLimitUser(FastHttpUser):
    # Requests use absolute node URLs; FastHttpUser insists on a host, which is only a placeholder here.
    host = DEMO_NODE_HOSTS.split(",")[0]
    wait_time = constant(0)  # the pacer decides when to send, not a per-user wait
    max_retries = 0

    def __init__(self, environment) -> None:
        suite = environment.rlsuite
        # On a worker, parsed_options already hold the master's values here: users are spawned by a spawn message.
        opts = environment.parsed_options
        # Read by FastHttpUser.__init__: all users of a process share one connection pool, so connections follow the
        # requests in flight (a few at loopback latency) rather than the number of users.
        self.client_pool = suite.connection_pool(float(opts.request_timeout))
        super().__init__(environment)
        self.client.client.valid_response_codes = success_statuses(parse_statuses(opts.rejection_statuses))
        self._pacer = suite.pacer

    @task
    def send_next_slot(self) -> None:
        changed = self._pacer.changed
        slot = self._pacer.next_slot()
        if slot is None:
            # No plan (yet, or any more): wait for one, but return at once if it changed meanwhile, so a stopping
            # user (Locust lets it finish its task) is not held here.
            changed.wait(1.0)
            return
        self.client.request("GET", slot.url, name=slot.node.name, headers=slot.headers, context={CONTEXT_KEY: slot})
