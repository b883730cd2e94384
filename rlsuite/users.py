"""The Locust user: sends each paced slot to its node, within --request-timeout from the start of the request.

200 and the rejection statuses are successes (a 429 proves the limiter works); anything else, a connection error
or a timeout is a failure. That rule is given to FastHttpUser's own status check (its client's valid response
codes), so no per-request ``catch_response`` block is needed: it costs as much as the suite's whole listener.
Timeouts are explicit and short (--request-timeout, one deadline per request: rlsuite.connections), never Locust's
60 s default, and nothing is retried: a retry would spend limiter quota that nobody counts. Only as many users take
slots as are needed (rlsuite.gate); each sends slot after slot within one Locust task, and returns from it when
Locust stops it.
"""

from __future__ import annotations

from locust import FastHttpUser, constant, task
from locust.user.task import LOCUST_STATE_STOPPING

import time

import gevent
from gevent.event import Event

from rlsuite.classify import success_statuses
from rlsuite.connections import PROCESS, shared_pool
from rlsuite.gate import LATE_SECONDS, gate_of
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
        self.client_pool = shared_pool(environment, float(opts.request_timeout))
        super().__init__(environment)
        self.client.client.valid_response_codes = success_statuses(parse_statuses(opts.rejection_statuses))
        self._pacer = suite.pacer
        self._gate = gate_of(environment)
        self._active = False  # allowed by the gate to take slots
        self._wake = Event()

    def on_start(self) -> None:
        self._gate.join()

    def on_stop(self) -> None:
        self._gate.leave(self)

    @task
    def send_slots(self) -> None:
        """Send slot after slot for as long as this user may: one Locust task per slot would add Locust's task
        scheduling to every request. Returns when there is no plan, or Locust is stopping the user (it lets a user
        finish its task: here, its request)."""
        gate, pacer, request = self._gate, self._pacer, self.client.request
        while True:
            if not self._active or gate.active > gate.limit:
                gate.enter(self)
            changed = pacer.changed
            slot = pacer.next_slot()
            if slot is None:
                # No plan (yet, or any more): wait for one, but return at once if it changed meanwhile, so a
                # stopping user is not held here.
                changed.wait(1.0)
                return
            if time.time() - slot.due > LATE_SECONDS:
                gate.late += 1
            in_flight = gate.in_flight = gate.in_flight + 1
            if in_flight > gate.peak:
                gate.peak = in_flight
            try:
                request("GET", slot.url, name=slot.node.name, headers=slot.headers, context={CONTEXT_KEY: slot})
            finally:
                gate.in_flight -= 1
            if self._state == LOCUST_STATE_STOPPING:
                return
            if PROCESS.busy:
                gevent.sleep(0)  # what Locust's wait between tasks does: the others run first (see get_socket)
