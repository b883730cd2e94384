"""Connections: the pool all of a process's users share, where every request ends within --request-timeout.

geventhttpclient times each socket operation on its own and waits for a pooled connection (and the node's address)
without any limit, so at overload a request would wait for many seconds before it is even sent, and that wait would
count as latency. Here the whole request (waiting for a connection, connecting, sending, the answer and its body)
has one deadline, --request-timeout; a request that never got a connection within it fails as ``pool_timeout`` (it
was never sent), one that got no full answer as ``timeout``. The node's address is looked up once (again after
``RESOLVE_TTL_SECONDS``) rather than for every new connection through gevent's thread pool, where thousands of
lookups would queue up.

Both cost little per request, as plain Locust's requests do: the deadlines of all requests share one timer per
timeout (``_Deadlines``) rather than one gevent Timeout each, and a pooled connection is checked for a close by the
server (a system call) only when it sat idle for longer than ``FRESH_SECONDS``.
"""

from __future__ import annotations

from locust.contrib.fasthttp import insecure_ssl_context_factory

import time
import weakref
from collections import deque
from typing import Any

import gevent
from gevent import get_hub, getcurrent
from gevent.monkey import get_original
from geventhttpclient.client import HTTPClient, HTTPClientPool
from geventhttpclient.connectionpool import ConnectionPool, SSLConnectionPool
from geventhttpclient.url import URL

from rlsuite.classify import PoolTimeout

RESOLVE_TTL_SECONDS = 10.0  # a node's address is looked up again after this long, when a connection opens
# Connections per node and process: in effect unbounded, so they follow the requests in flight (a few at loopback
# latency, more while a node is slow) rather than the number of users; the deadline bounds the wait anyway.
POOL_CONNECTIONS_PER_NODE = 10_000
# A pooled connection used again within this long of its last answer is not checked for a close by the server: servers
# close idle keep-alive connections after seconds (nginx 75 s), and one closed anyway is only a retry on a new
# connection (geventhttpclient retries a request whose connection closed before any answer came). An older one is
# checked, a system call per request that would cost 1-2% of a request at a high rate.
FRESH_SECONDS = 0.1


class _Process:
    """What this process's gates saw last (see Gate.step): whether it is busy, short of CPU for what it sends."""

    busy = False


PROCESS = _Process()
_select = get_original("select", "select")  # a zero-timeout check that does not yield to the hub (gevent's does)
_monotonic = time.monotonic


class RequestTimeout(TimeoutError):
    """No full answer within --request-timeout of the start of the request."""

    def __init__(self, *args: object) -> None:
        super().__init__(*(args or ("timed out",)))


class _BoundedPool:
    """The pool of one node's connections (mixed into geventhttpclient's plain and TLS pools).

    A request's deadline (``RequestTimeout``, thrown in by ``_Deadlines``) may interrupt any wait in here: while the
    request waits for a free connection or for the node's address, that becomes ``PoolTimeout``; while it connects,
    it stays a timeout of the node. Either way nothing leaks: the pool slot is given back and the socket closed.
    """

    _resolved: tuple[float, list] | None = None  # (look up again after, getaddrinfo's answer)
    _lookup: gevent.Greenlet | None = None  # the lookup under way, which every request that needs it waits for
    _idle: deque[tuple[float, Any]]  # (returned at, connection), the last returned on the right: used first

    def get_socket(self) -> Any:
        try:
            self._semaphore.acquire()
        except RequestTimeout:
            raise self._pool_timeout("no free connection in the pool") from None
        try:
            if self._closed:
                raise RuntimeError("connection pool closed")
            idle = self._idle
            while idle:
                returned, sock = idle.pop()
                if _monotonic() - returned < FRESH_SECONDS or _idle_and_open(sock):
                    if PROCESS.busy:
                        # Let the other greenlets run before this one sends, as geventhttpclient's own check (gevent's
                        # select) always does: at overload, requests then go out in batches, each waking the server
                        # once; with CPU to spare, that would only cost a turn of the event loop per request.
                        try:
                            gevent.sleep(0)
                        except BaseException as e:
                            idle.append((returned, sock))  # still good, never used
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

    def return_socket(self, sock: Any) -> None:
        if self._closed:
            sock.close()
            return
        self._idle.append((_monotonic(), sock))
        self._semaphore.release()

    def close(self) -> None:
        self._closed = True
        idle = self._idle
        while idle:
            idle.pop()[1].close()

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


class _Deadlines:
    """The deadlines of every request of one timeout, on one timer.

    One timeout means deadlines come in the order the requests started: a queue, whose first entry still in flight
    is the next to expire. A request adds an entry when it starts and clears it when it ends (no timer is touched);
    the timer is armed for the first entry, and when it fires, the entries of requests that ended are dropped, those
    past their deadline get ``RequestTimeout`` thrown in (as gevent's Timeout does: the greenlet waits in a gevent
    call, since only the hub runs now), and the timer is armed for the next. A gevent Timeout per request would add a
    libev timer start and stop to every request.
    """

    # stands for the timer while expired entries are handled, so that a request started meanwhile arms no other
    _ARMING = object()

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._pending: deque[list[Any]] = deque()  # [deadline, the request's greenlet or None once it ended]
        self._timer: Any = None

    def start(self) -> list[Any]:
        """The deadline of a request that starts now, in the current greenlet; clear it with ``entry[1] = None``."""
        entry = [_monotonic() + self.seconds, getcurrent()]
        pending = self._pending
        while pending and pending[0][1] is None:  # requests that ended: gone now, not when the timer fires
            pending.popleft()
        pending.append(entry)
        if self._timer is None:
            self._arm(self.seconds)
        return entry

    def _arm(self, after: float) -> None:
        timer = self._timer = get_hub().loop.timer(max(after, 0.0))
        timer.start(self._expire, update=True)

    def _expire(self) -> None:
        self._timer.close()
        self._timer = self._ARMING
        pending = self._pending
        try:
            while pending:
                entry = pending[0]
                deadline, greenlet = entry
                if greenlet is None:
                    pending.popleft()
                    continue
                if deadline > _monotonic():
                    break
                pending.popleft()
                entry[1] = None
                if not greenlet.dead:
                    greenlet.throw(RequestTimeout)  # returns here when that greenlet waits again
        finally:
            self._timer = None
            if pending:
                self._arm(pending[0][0] - _monotonic())


_deadlines: dict[float, _Deadlines] = {}


class _DeadlineClient(HTTPClient):
    """geventhttpclient's client for one node, whose every request ends within the timeout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        pool = self._connection_pool
        # geventhttpclient builds its pool itself; these subclasses only add methods, so the object can take them on
        pool.__class__ = _TLSPool if isinstance(pool, SSLConnectionPool) else _Pool
        pool._idle = deque()
        self.timeout = pool.connection_timeout

    def request(self, method: str, request_uri: str, body: Any = b"", headers: Any = None) -> Any:
        timeout = self.timeout
        deadlines = _deadlines.get(timeout)
        if deadlines is None:
            deadlines = _deadlines[timeout] = _Deadlines(timeout)
        deadline = deadlines.start()
        try:
            response = super().request(method, request_uri, body=body, headers=headers)
            _read_body(response)
            return response
        finally:
            deadline[1] = None


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

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        # (scheme, host:port as written) -> client: every request asks, and reading a URL's host and port parses its
        # netloc again (urllib), about a microsecond per request
        self._by_netloc: dict[tuple[str, str], HTTPClient] = {}

    def get_client(self, url: Any) -> HTTPClient:
        if not isinstance(url, URL):
            url = URL(url)
        netloc = url.scheme, url.netloc
        client = self._by_netloc.get(netloc)
        if client is None:
            key = url.host, url.port
            client = self.clients.get(key)
            if client is None:
                client = self.clients[key] = _DeadlineClient.from_url(url, **self.client_args)
            self._by_netloc[netloc] = client
        return client

    def close(self) -> None:
        self._by_netloc.clear()
        super().close()


_pools: weakref.WeakKeyDictionary[Any, dict[float, SuiteClientPool]] = weakref.WeakKeyDictionary()


def shared_pool(environment: Any, timeout: float) -> SuiteClientPool:
    """The connection pool the users of one Locust environment (one per process) share, for a given timeout."""
    pools = _pools.setdefault(environment, {})
    pool = pools.get(timeout)
    if pool is None:
        pool = pools[timeout] = SuiteClientPool(
            concurrency=POOL_CONNECTIONS_PER_NODE,
            connection_timeout=timeout,
            network_timeout=None,  # the request's deadline times every operation
            insecure=True,  # as FastHttpUser: load tests do not verify certificates
            ssl_context_factory=insecure_ssl_context_factory,
        )
    return pool
