"""The Locust user: sends each paced slot to its node, within --request-timeout from the start of the request.

200 and the rejection statuses are successes (a 429 proves the limiter works); anything else, a connection error
or a timeout is a failure. That rule is given to FastHttpUser's own status check (its client's valid response
codes), so no per-request ``catch_response`` block is needed: it costs as much as the suite's whole listener.
Timeouts are explicit and short (--request-timeout), never Locust's 60 s default, and nothing is retried: a retry
would spend limiter quota that nobody counts.

Two things here keep the generator honest and fast when it is pushed beyond what it can send:

- **One deadline per request.** geventhttpclient times each socket operation on its own and waits for a pooled
  connection (and the node's address) without any limit, so at overload a request could wait for many seconds
  before it was even sent, and that wait was measured as latency. Here the whole request (waiting for a
  connection, connecting, sending, the answer and its body) has --request-timeout; a request that never got a
  connection within it fails as ``pool_timeout`` (it was never sent), one that got no full answer as ``timeout``.
  The node's address is looked up once (again after ``RESOLVE_TTL_SECONDS``) rather than for every new connection
  through gevent's thread pool, where thousands of lookups queued up.
- **Only as many users send as are needed.** -u is the most requests in flight (by default enough for one hung
  node); those users all exist, but only ``BASE_ACTIVE`` per process take slots at first. Beyond a few dozen
  requests in flight a process sends no more, only slower (more greenlets and connections to switch between), so
  the rest wait parked, costing memory only. A ``Gate`` lets more of them take slots while all that send are
  waiting for answers and the process has CPU to spare: they wait for the network (a slow or hung node), not for
  this process; and lets them park again when the process is busy or they are idle. Each user sends slot after
  slot within one Locust task, and returns from it when Locust stops it.
"""

from __future__ import annotations

from locust import FastHttpUser, constant, task
from locust.exception import StopUser
from locust.user.task import LOCUST_STATE_RUNNING, LOCUST_STATE_STOPPING, LOCUST_STATE_WAITING

import time
import weakref
from collections import deque
from typing import Any

import gevent
from gevent.event import Event
from gevent.monkey import get_original
from geventhttpclient.client import HTTPClient, HTTPClientPool
from geventhttpclient.connectionpool import ConnectionPool, SSLConnectionPool
from geventhttpclient.url import URL

from rlsuite.classify import PoolTimeout, success_statuses
from rlsuite.targets import DEMO_NODE_HOSTS, parse_statuses

CONTEXT_KEY = "rlsuite"  # the slot rides in the request context, where the suite's request listener finds it

# -- connections: one deadline per request ------------------------------------------------------------------------

RESOLVE_TTL_SECONDS = 10.0  # a node's address is looked up again after this long, when a connection opens


class _Process:
    """What this process's gates saw last (see Gate.step): whether it is busy, short of CPU for what it sends."""

    busy = False


PROCESS = _Process()
_select = get_original("select", "select")  # a zero-timeout check that does not yield to the hub (gevent's does)


class RequestTimeout(TimeoutError):
    """No full answer within --request-timeout of the start of the request."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(args or ("timed out",)))


class _BoundedPool:
    """The pool of one node's connections (mixed into geventhttpclient's plain and TLS pools).

    A request's deadline (a gevent Timeout raising ``RequestTimeout``) may interrupt any wait in here: while the
    request waits for a free connection or for the node's address, that becomes ``PoolTimeout``; while it connects,
    it stays a timeout of the node. Either way nothing leaks: the pool slot is given back and the socket closed.
    """

    _resolved: tuple[float, list] | None = None  # (look up again after, getaddrinfo's answer)
    _lookup: gevent.Greenlet | None = None  # the lookup under way, which every request that needs it waits for

    def get_socket(self) -> Any:
        try:
            self._semaphore.acquire()
        except RequestTimeout:
            raise self._pool_timeout("no free connection in the pool") from None
        try:
            if self._closed:
                raise RuntimeError("connection pool closed")
            queue = self._socket_queue
            while queue.qsize():
                sock = queue.get(block=False)
                if _idle_and_open(sock):
                    if PROCESS.busy:
                        # Let the other greenlets run before this one sends, as geventhttpclient's own check (gevent's
                        # select) always does: at overload, requests then go out in batches, each waking the server
                        # once; with CPU to spare, that would only cost a turn of the event loop per request.
                        try:
                            gevent.sleep(0)
                        except BaseException as e:
                            queue.put(sock)  # still good, never used
                            if isinstance(e, RequestTimeout):
                                raise self._pool_timeout("this process had no time to send it") from None
                            raise
                    return sock
                sock.close()
            try:
                addresses = self._resolve()
            except RequestTimeout:
                raise self._pool_timeout("the node's address was not known") from None
            return self._connect(addresses)
        except BaseException:
            self._semaphore.release()
            raise

    def _pool_timeout(self, why: str) -> PoolTimeout:
        return PoolTimeout(
            f"pool timeout: no connection to {self._connection_host}:{self._connection_port} within "
            f"--request-timeout {self.connection_timeout:g}s ({why}); the request was not sent"
        )

    def _resolve(self) -> list:
        resolved = self._resolved
        if resolved is not None:
            if time.monotonic() >= resolved[0] and (self._lookup is None or self._lookup.ready()):
                self._lookup = gevent.spawn(_look_up, self)  # look again, meanwhile connect to the known address
            return resolved[1]
        lookup = self._lookup
        if lookup is None or lookup.ready():  # none yet, or the last one failed
            lookup = self._lookup = gevent.spawn(_look_up, self)
        ok, answer = lookup.get()
        if not ok:
            raise answer
        return answer

    def _connect(self, addresses: list) -> Any:
        """geventhttpclient's _create_socket for addresses looked up already; the request's deadline ends it."""
        first_error: BaseException | None = None
        for family, socktype, proto, _, address in addresses:
            try:
                sock = self._create_tcp_socket(family, socktype, proto)
            except Exception as e:  # as geventhttpclient: try the next address
                first_error = first_error or e
                continue
            try:
                sock.settimeout(self.connection_timeout)
                sock = self._connect_socket(sock, address)
                self.after_connect(sock)
                sock.settimeout(self.network_timeout)
                return sock
            except RequestTimeout:
                sock.close()
                raise
            except OSError as e:
                sock.close()
                first_error = first_error or e
            except BaseException:
                sock.close()
                raise
        if first_error is not None:
            raise first_error
        raise RuntimeError(f"Cannot resolve {self._connection_host}:{self._connection_port}")


def _look_up(pool: _BoundedPool) -> tuple[bool, Any]:
    """Look up a node's address for every request waiting for it, and keep it (also if they all gave up)."""
    try:
        answer = ConnectionPool._resolve(pool)
    except Exception as e:  # returned, not raised: gevent would print the traceback of the greenlet
        return False, e
    pool._resolved = (time.monotonic() + RESOLVE_TTL_SECONDS, answer)
    return True, answer


def _idle_and_open(sock: Any) -> bool:
    """A pooled keep-alive connection is usable unless closed or readable (the server closed it, or sent junk)."""
    try:
        return sock.fileno() >= 0 and not _select([sock], [], [], 0.0)[0]
    except (OSError, ValueError):
        return False


class _Pool(_BoundedPool, ConnectionPool):
    pass


class _TLSPool(_BoundedPool, SSLConnectionPool):
    pass


class _DeadlineClient(HTTPClient):
    """geventhttpclient's client for one node, whose every request ends within the timeout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        pool = self._connection_pool
        # geventhttpclient builds its pool itself; these subclasses only add methods, so the object can take them on
        pool.__class__ = _TLSPool if isinstance(pool, SSLConnectionPool) else _Pool
        self.timeout = pool.connection_timeout

    def request(self, method: str, request_uri: str, body: Any = b"", headers: Any = None) -> Any:
        # a new Timeout for each request: gevent's timers cannot be restarted reliably (a restarted one fires early)
        deadline = gevent.Timeout(self.timeout, RequestTimeout)
        deadline.start()
        try:
            response = super().request(method, request_uri, body=body, headers=headers)
            _read_body(response)
            return response
        finally:
            deadline.close()


def _read_body(response: Any) -> None:
    """Read the rest of the body into the response's buffer, within the request's deadline: Locust reads it only
    after the request returned, and times that too. (A limiter's answer is small: usually it came with the
    headers.)"""
    while not response.message_complete:
        sock = response._sock
        if sock is None:
            return
        try:
            data = sock.recv(response.block_size)
            response.feed(data)
        except BaseException:
            response.release()
            raise
        if not data:
            return


class SuiteClientPool(HTTPClientPool):
    """The clients (one per node) that all users of a process share: connections follow the requests in flight,
    and every request has one deadline, ``connection_timeout`` (the suite passes --request-timeout)."""

    def get_client(self, url: Any) -> HTTPClient:
        if not isinstance(url, URL):
            url = URL(url)
        key = url.host, url.port
        client = self.clients.get(key)
        if client is None:
            client = self.clients[key] = _DeadlineClient.from_url(url, **self.client_args)
        return client


# -- users: only as many send as are needed -------------------------------------------------------------------------

BASE_ACTIVE = 100  # users per process that take slots at first: more in flight do not send more (bench/overload.py)
GATE_INTERVAL = 0.1  # seconds between the gate's looks at the process
SPARE_CPU = 0.9  # busy less than this share of the time, the process has room for more requests in flight
BUSY_CPU = 0.97  # busy more, more requests in flight only wait longer for this process: fewer users send
LATE_SECONDS = 0.01  # a slot taken this long after it was due waited for a user (the tally's late sends)


class Gate:
    """How many of a process's users take slots at once (``limit``); the others wait parked.

    Every ``GATE_INTERVAL`` it looks at the requests in flight and the slots taken late since the last look, and how
    busy the process was (the share of the time it ran or waited for a CPU, ``busy_seconds``):

    - every user that sends was waiting for an answer at some moment (so a slot due then found none free) and the
      process was busy less than ``SPARE_CPU`` of the time: they wait for the network (slow answers, a hung node),
      not for this process, so more may send: as many more as slots went out late, at least half as many again;
    - the process was busy more than ``BUSY_CPU`` of the time: more requests in flight would only queue for its
      CPU, so a quarter fewer send (never fewer than ``base``);
    - no slot was late and fewer than half of those allowed were in flight: the limit comes down to twice that.

    Whether the process was busy more than ``SPARE_CPU`` of the time also decides whether each user lets the others
    run before it sends and after each request (``PROCESS.busy``): when the process is short of CPU, that batches
    requests (one turn of the event loop and one wake-up of the server for many) and it sends more; with CPU to spare
    it only costs a turn of the event loop per request.
    """

    def __init__(self, base: int = BASE_ACTIVE) -> None:
        self.base = base
        self.limit = base
        self.users = 0  # users started (Locust's count in this process)
        self.active = 0  # users allowed to take slots
        self.in_flight = 0
        self.peak = 0  # most requests in flight since the last look
        self.late = 0  # slots taken late since the last look
        self._parked: deque[RateLimitUser] = deque()
        self._controller: gevent.Greenlet | None = None

    def join(self) -> None:
        self.users += 1
        if self._controller is None:
            self._controller = gevent.spawn(self._control)

    def leave(self, user: RateLimitUser) -> None:
        self.users -= 1
        if user._active:
            user._active = False
            self.active -= 1
            self._admit()
        if not self.users:
            self.limit = self.base  # the next run starts afresh

    def enter(self, user: RateLimitUser) -> None:
        """Return once ``user`` may take slots: at once if fewer than ``limit`` users do, else when it is woken."""
        if user._active:
            if self.active <= self.limit:
                return
            user._active = False  # the limit came down: this one steps back
            self.active -= 1
        if self.active < self.limit and not self._parked:
            user._active = True
            self.active += 1
            return
        user._state = LOCUST_STATE_WAITING  # as in Locust's own wait: a parked user may be stopped at once
        user._wake.clear()
        self._parked.append(user)
        try:
            user._wake.wait()
        finally:
            user._wake.set()  # marks it gone from the queue, also when Locust killed it while parked
        if user._state == LOCUST_STATE_STOPPING:
            raise StopUser()
        user._state = LOCUST_STATE_RUNNING

    def _admit(self) -> None:
        parked = self._parked
        while parked and self.active < self.limit:
            user = parked.popleft()
            if user._wake.is_set():
                continue  # stopped while parked
            user._active = True
            self.active += 1
            user._wake.set()

    def step(self, busy: float) -> None:
        """One look: adjust the limit from the requests in flight, the slots taken late and how busy the process was
        since the last one."""
        late, self.late = self.late, 0
        peak, self.peak = self.peak, self.in_flight
        PROCESS.busy = busy > SPARE_CPU
        limit = self.limit
        if peak >= self.active and busy < SPARE_CPU:
            limit += max(late, limit // 2)
        elif busy > BUSY_CPU:
            limit -= limit // 4
        elif not late and peak < limit // 2:
            limit = 2 * peak
        self.limit = max(self.base, min(limit, self.users))
        self._admit()

    def _control(self) -> None:
        wall, busy = time.perf_counter(), busy_seconds()
        try:
            while self.users:
                gevent.sleep(GATE_INTERVAL)
                now, used = time.perf_counter(), busy_seconds()
                self.step((used - busy) / max(now - wall, 1e-6))
                wall, busy = now, used
        finally:
            self._controller = None


def busy_seconds() -> float:
    """Seconds this process's thread has run or waited to run (Linux /proc/self/schedstat: on the CPU, and runnable
    while another process had it), so that a process starved by others on a shared core counts as busy, not as
    having time to spare; the CPU time alone where there is no schedstat."""
    try:
        with open("/proc/self/schedstat", "rb") as f:
            ran, waited = f.read().split()[:2]
        return (int(ran) + int(waited)) / 1e9
    except (OSError, ValueError):
        return time.process_time()


_gates: weakref.WeakKeyDictionary[Any, Gate] = weakref.WeakKeyDictionary()


def gate_of(environment: Any) -> Gate:
    """The gate of the users of one Locust environment (one per process)."""
    gate = _gates.get(environment)
    if gate is None:
        gate = _gates[environment] = Gate()
    return gate


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
