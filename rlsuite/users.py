"""The Locust users: each sends the paced slots, one request per slot, within --request-timeout from its start.

``PacedUser`` is the extension point: a locustfile subclasses it and builds each slot's request in ``send(slot)``
with ``self.client`` (any method, path, headers, body, name), as it would in a Locust task; the suite attaches the
slot to the first request made in ``send``, so counting, classification, pacing, policies, the verdict and every
output work whatever the request looks like. ``RateLimitUser`` is the default: a GET of --request-path with the key
header.

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

import logging
import time

import gevent
from gevent.event import Event

from rlsuite import cookies
from rlsuite.classify import success_statuses
from rlsuite.connections import PROCESS, shared_pool
from rlsuite.gate import LATE_SECONDS, gate_of
from rlsuite.pacing import Slot
from rlsuite.targets import DEMO_NODE_HOSTS, parse_statuses

logger = logging.getLogger(__name__)

CONTEXT_KEY = "rlsuite"  # the slot rides in the request context, where the suite's request listener finds it
COST_KEY = "cost"  # a request's own cost in units of its policy's limit: context={"cost": 3}
NO_SLOT: dict = {}


class PacedUser(FastHttpUser):
    """Sends this process's share of the paced slots; subclass it and override ``send`` to shape the requests.

    ``send(slot)`` makes one request with ``self.client`` for the slot: ``slot.node.url`` is the base URL of the node
    it goes to (``slot.url`` that plus --request-path), ``slot.mode`` the traffic mode (steady, burst), ``slot.due``
    when it was meant to start, ``slot.number`` its place in the run, ``slot.key`` the index of its API key
    (``self.api_key(slot)`` the key itself, or None without --api-keys). The first request made in ``send`` carries
    the slot (its context), whatever its method, URL or Locust ``name``; a request that spends more than one unit
    of the limit says so with ``context={"cost": n}``. Requests made elsewhere (``on_start``, a second one in
    ``send``) are Locust's only: the suite neither counts nor judges them, and the limiter may still count them.
    """

    abstract = True
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
        cookies.install(self.client)
        self._pacer = suite.pacer
        self._gate = gate_of(environment)
        self._active = False  # allowed by the gate to take slots
        self._wake = Event()
        self._context = NO_SLOT  # the slot's context until the first request of send() takes it

    def send(self, slot: Slot) -> None:
        """Make this slot's request with ``self.client`` (see the class)."""
        raise NotImplementedError(f"{type(self).__name__} must define send(self, slot)")

    def api_key(self, slot: Slot) -> str | None:
        """The API key of ``slot`` (the partition the limit is kept for), or None when no keys are sent."""
        plan = self._pacer.plan
        keys = plan.targets.api_keys if plan is not None else ()
        return keys[slot.key] if 0 <= slot.key < len(keys) else None

    def context(self) -> dict:
        # Locust merges this into every request's context: the first request of send() takes the slot with it
        context = self._context
        self._context = NO_SLOT
        return context

    def on_start(self) -> None:
        self._gate.join()

    def on_stop(self) -> None:
        self._gate.leave(self)

    @task
    def send_slots(self) -> None:
        """Send slot after slot for as long as this user may: one Locust task per slot would add Locust's task
        scheduling to every request. Returns when there is no plan, or Locust is stopping the user (it lets a user
        finish its task: here, its request)."""
        gate, pacer, send = self._gate, self._pacer, self.send
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
                gate.took_late()
            in_flight = gate.in_flight = gate.in_flight + 1
            if in_flight > gate.peak:
                gate.peak = in_flight
            context = self._context = {CONTEXT_KEY: slot}
            try:
                send(slot)
            finally:
                if self._context is context:  # send() made no request (it raised first, or chose not to)
                    self._context = NO_SLOT
                    pacer.give_back(slot)
                    _warn_unsent(type(self))
                gate.in_flight -= 1
            if self._state == LOCUST_STATE_STOPPING:
                return
            if PROCESS.busy:
                gevent.sleep(0)  # what Locust's wait between tasks does: the others run first (see get_socket)


_warned: set[type] = set()


def _warn_unsent(user_class: type) -> None:
    if user_class not in _warned:
        _warned.add(user_class)
        logger.warning(
            "rlsuite: %s.send() returned or raised without making a request for its slot; such slots are counted "
            "as dropped (make exactly one request with self.client in send)",
            user_class.__name__,
        )


class RateLimitUser(PacedUser):
    """The default: a GET of --request-path on the slot's node, with the slot's API key header."""

    def send(self, slot: Slot) -> None:
        self.client.request("GET", slot.url, name=slot.node.name, headers=slot.headers)
