"""The Locust user: sends each paced slot to its node and tells Locust whether the answer was a success.

200 and the rejection statuses are successes (a 429 proves the limiter works); anything else, a connection error
or a timeout is a failure with a stable message. Timeouts are explicit and short (--request-timeout), never
Locust's 60 s default, and nothing is retried: a retry would spend limiter quota that nobody counts.
"""

from __future__ import annotations

from locust import FastHttpUser, constant, task

from rlsuite.classify import ERROR, failure_message, outcome_of
from rlsuite.targets import DEMO_NODE_HOSTS

CONTEXT_KEY = "rlsuite"  # the slot rides in the request context, where the suite's request listener finds it


class RateLimitUser(FastHttpUser):
    # Requests use absolute node URLs; FastHttpUser insists on a host, which is only a placeholder here.
    host = DEMO_NODE_HOSTS.split(",")[0]
    wait_time = constant(0)  # the pacer decides when to send, not a per-user wait
    max_retries = 0

    def __init__(self, environment) -> None:
        suite = environment.rlsuite
        # Instance attributes, read by FastHttpUser.__init__ when it builds this user's connection pool. On a worker,
        # parsed_options already hold the master's values here: users are only spawned by a spawn message.
        self.network_timeout = self.connection_timeout = float(environment.parsed_options.request_timeout)
        super().__init__(environment)
        self._pacer = suite.pacer

    @task
    def send_next_slot(self) -> None:
        slot = self._pacer.next_slot()
        if slot is None:
            self._pacer.wait_for_change(1.0)
            return
        with self.client.request(
            "GET", slot.url, name=slot.node.name, headers=slot.headers, context={CONTEXT_KEY: slot}, catch_response=True
        ) as response:
            error = getattr(response, "error", None)
            status = response.status_code or 0
            if outcome_of(status, error, slot.rejection_statuses) == ERROR:
                response.failure(failure_message(status, error))
            else:
                response.success()
