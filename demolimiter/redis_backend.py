"""Limiter state in redis, shared by node processes, updated atomically by one Lua script per request.

Clock: the scripts read the redis server's ``TIME`` (wall clock, Unix epoch), so every node of a cluster
(different containers or hosts with drifting clocks) judges a key against one clock; window alignment is
``floor(TIME / window)`` as in the memory backend. Tests pass an explicit ``now`` as the last ARGV to compare
the Lua arithmetic with ``algorithms`` without sleeping.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import sys
from collections.abc import Callable

from . import resp
from .config import RedisUrl, Settings, parse_redis_url
from .decision import CLOSED, OPEN, Decision, from_micros

# Same arithmetic as algorithms.TokenBucket. Hash fields: tk = tokens, ts = last refill time.
# Floats are stored with %.17g: Lua's default tostring keeps 14 digits, which would round the timestamp.
TOKEN_BUCKET = b"""
local rate = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local eps = 1e-9
local st = redis.call('HMGET', KEYS[1], 'tk', 'ts')
local tokens = cap
if st[1] then
  tokens = math.min(cap, tonumber(st[1]) + math.max(0, now - tonumber(st[2])) * rate)
end
local allowed = 0
local retry = 0
if tokens >= 1 - eps then
  allowed = 1
  tokens = math.max(0, tokens - 1)
else
  retry = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tk', string.format('%.17g', tokens), 'ts', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local whole = math.floor(tokens + eps)
local reset = 0
if tokens < cap - eps then reset = (whole + 1 - tokens) / rate end
return {allowed, whole, math.ceil(reset * 1000000), math.ceil(retry * 1000000)}
"""

# Same arithmetic as algorithms.FixedWindow. Hash fields: w = window index, n = admitted in that window.
FIXED_WINDOW = b"""
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local index = math.floor(now / window)
local reset = math.ceil(((index + 1) * window - now) * 1000000)
local st = redis.call('HMGET', KEYS[1], 'w', 'n')
local n = 0
if st[1] and tonumber(st[1]) == index then n = tonumber(st[2]) end
if n < limit then
  redis.call('HSET', KEYS[1], 'w', string.format('%.17g', index), 'n', n + 1)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1, limit - n - 1, reset, 0}
end
return {0, 0, reset, reset}
"""

BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0


def script_for(settings: Settings) -> tuple[bytes, list[str]]:
    """The Lua source and its ARGV (without ``now``) for these settings."""
    if settings.algorithm == "token-bucket":
        rate = settings.limit / settings.window
        ttl_ms = int(settings.capacity / rate * 1000) + 1000  # a full bucket carries no information
        return TOKEN_BUCKET, [repr(rate), str(settings.capacity), str(ttl_ms)]
    ttl_ms = int(settings.window * 1000) + 1000
    return FIXED_WINDOW, [str(settings.limit), repr(settings.window), str(ttl_ms)]


def key_prefix(settings: Settings, node: str) -> bytes:
    # per-node scope puts the node name in the key: each node then enforces the limit alone (the broken setting).
    scope = "g" if settings.scope == "global" else f"n:{node}"
    return f"{settings.redis_prefix}:{settings.algorithm}:{scope}:".encode()


class RedisLimiter:
    """Asks redis per request; answers at once (by the failure policy) while redis is unreachable."""

    def __init__(self, settings: Settings, node: str) -> None:
        self.url: RedisUrl = parse_redis_url(settings.redis_url)
        self.timeout = settings.redis_timeout
        self.failure = OPEN if settings.redis_failure == "open" else CLOSED
        self.script, argv = script_for(settings)
        self.sha = hashlib.sha1(self.script).hexdigest().encode()
        self.prefix = key_prefix(settings, node)
        self.head = b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n1\r\n" % (3 + 1 + len(argv), self.sha)
        self.tail = b"".join(b"$%d\r\n%s\r\n" % (len(a), a.encode()) for a in argv)
        self.load = resp.encode(b"SCRIPT", b"LOAD", self.script)
        self.conn: resp.RespConnection | None = None
        self.reconnecting: asyncio.Task[None] | None = None
        self.watchdog: asyncio.TimerHandle | None = None
        self.closing = False
        self.warned = False

    @property
    def up(self) -> bool:
        return self.conn is not None and self.conn.alive

    def check(self, key: bytes, done: Callable[[Decision], None]) -> Decision | None:
        conn = self.conn
        if conn is None or not conn.alive:
            return self.failure
        k = self.prefix + key
        cmd = b"%s$%d\r\n%s\r\n%s" % (self.head, len(k), k, self.tail)
        conn.send(cmd, lambda reply: self._reply(reply, cmd, done, True))
        return None

    def _reply(self, reply: resp.Reply, cmd: bytes, done: Callable[[Decision], None], retry: bool) -> None:
        if type(reply) is list:
            done(from_micros(*reply))
            return
        conn = self.conn
        if retry and isinstance(reply, resp.RespError) and str(reply).startswith("NOSCRIPT") and self.up:
            # redis restarted or SCRIPT FLUSH: load, then retry; one connection keeps the two in order.
            conn.send(self.load, _ignore)  # type: ignore[union-attr]
            conn.send(cmd, lambda r: self._reply(r, cmd, done, False))  # type: ignore[union-attr]
            return
        if isinstance(reply, resp.RespError):
            self._warn(f"redis error: {reply}")
        done(self.failure)

    # connection management

    async def start(self) -> None:
        """Connect once; if redis is not there yet, serve by the failure policy and keep retrying."""
        loop = asyncio.get_running_loop()
        self.watchdog = loop.call_later(self.timeout / 4, self._watch)
        try:
            await self._connect()
        except (TimeoutError, OSError, resp.RespError, resp.ConnectionLost) as exc:
            self._warn(
                f"redis {self.url.host}:{self.url.port} unreachable ({exc or type(exc).__name__}); "
                f"serving by --redis-failure and retrying"
            )
            self._reconnect()

    async def _connect(self) -> None:
        conn = await resp.connect(self.url.host, self.url.port, max(1.0, self.timeout), self._lost)
        try:
            setup = []
            if self.url.password is not None:
                auth = (self.url.username, self.url.password) if self.url.username else (self.url.password,)
                setup.append(conn.call("AUTH", *auth))
            if self.url.db:
                setup.append(conn.call("SELECT", self.url.db))
            setup.append(conn.call("SCRIPT", "LOAD", self.script))
            for reply in await asyncio.wait_for(asyncio.gather(*setup), max(1.0, self.timeout)):
                if isinstance(reply, Exception):
                    raise reply
        except BaseException:
            conn.on_lost = None
            conn.abort()
            raise
        self.conn = conn
        self.warned = False

    def _lost(self) -> None:
        self.conn = None
        if not self.closing:
            self._warn("redis connection lost; serving by --redis-failure and reconnecting")
            self._reconnect()

    def _reconnect(self) -> None:
        if self.reconnecting is None or self.reconnecting.done():
            self.reconnecting = asyncio.get_running_loop().create_task(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        delay = BACKOFF_MIN
        while not self.closing and not self.up:
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # jitter: nodes must not reconnect in lockstep
            try:
                await self._connect()
            except (TimeoutError, OSError, resp.RespError, resp.ConnectionLost):
                delay = min(BACKOFF_MAX, delay * 2)
        if self.up:
            print("demolimiter: redis connection restored", file=sys.stderr, flush=True)

    def _watch(self) -> None:
        """A hung redis must not hang clients: past the timeout, drop the connection (callers get the policy)."""
        conn = self.conn
        if conn is not None:
            oldest = conn.oldest()
            if oldest is not None and conn.loop.time() - oldest > self.timeout:
                self._warn(f"redis did not answer within {self.timeout}s; dropping the connection")
                conn.abort()
        if not self.closing:
            self.watchdog = asyncio.get_running_loop().call_later(self.timeout / 4, self._watch)

    def _warn(self, message: str) -> None:
        # One line per outage, not one per request.
        if not self.warned:
            self.warned = True
            print(f"demolimiter: {message}", file=sys.stderr, flush=True)

    async def close(self) -> None:
        self.closing = True
        if self.watchdog is not None:
            self.watchdog.cancel()
        if self.reconnecting is not None:
            self.reconnecting.cancel()
        if self.conn is not None:
            self.conn.close()
            await asyncio.wait_for(self.conn.closed, 1.0)


def _ignore(_: resp.Reply) -> None:
    pass
