"""Limiter state in redis, shared by node processes, updated atomically by one Lua script per request.

Clock: the scripts read the redis server's ``TIME`` (wall clock, Unix epoch), so every node of a cluster
(different containers or hosts with drifting clocks) judges a key against one clock; window alignment is
``floor(TIME / window)`` as in the memory backend. Tests pass an explicit ``now`` as the last ARGV to compare
the Lua arithmetic with ``algorithms`` without sleeping.

``--race`` (deliberately broken) skips the scripts: GET the key's state (a string of floats), decide with
``algorithms`` in Python on the node's own clock, wait ``--race-delay``, then a plain SET, so concurrent requests
on different nodes overwrite each other's updates.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import sys
from collections.abc import Callable

from . import resp
from .algorithms import State, Verdict, create
from .config import RedisUrl, Settings, parse_redis_url
from .decision import CLOSED, OPEN, Decision, from_micros, from_verdict


def _script(params: list[str], body: str) -> bytes:
    """A Lua script: ``params`` are the numbers in ARGV; an explicit ``now`` (tests) may follow, else redis TIME."""
    head = [f"local {name} = tonumber(ARGV[{i}])" for i, name in enumerate(params, 1)]
    head += [
        f"local now = tonumber(ARGV[{len(params) + 1}])",
        "if not now then",
        "  local t = redis.call('TIME')",
        "  now = tonumber(t[1]) + tonumber(t[2]) / 1000000",
        "end",
        "local eps = 1e-9",
        "local function f(x) return string.format('%.17g', x) end",
    ]
    return ("\n".join(head) + body).encode()


# Every script returns {allowed, remaining, reset us, retry-after us, delay us}; cr = --counts-rejected (1 or 0).
# Floats are stored with %.17g: Lua's default tostring keeps 14 digits, which would round the timestamp.

# algorithms.TokenBucket. Hash fields: tk = tokens, ts = last update.
TOKEN_BUCKET = _script(
    ["rate", "cap", "ttl", "cr"],
    """
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
  if cr == 1 then tokens = math.max(-cap, tokens - 1) end
  retry = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tk', f(tokens), 'ts', f(now))
redis.call('PEXPIRE', KEYS[1], ttl)
local whole = math.max(0, math.floor(tokens + eps))
local reset = 0
if tokens < cap - eps then reset = (whole + 1 - tokens) / rate end
return {allowed, whole, math.ceil(reset * 1000000), math.ceil(retry * 1000000), 0}
""",
)

# algorithms.FixedWindow. Hash fields: w = window index (epoch) or window start (first = 1), n = count.
FIXED_WINDOW = _script(
    ["limit", "window", "ttl", "cr", "first"],
    """
local st = redis.call('HMGET', KEYS[1], 'w', 'n')
local w
local n = 0
local stop
if first == 1 then
  w = now
  if st[1] and now < tonumber(st[1]) + window then
    w = tonumber(st[1])
    n = tonumber(st[2])
  end
  stop = w + window
else
  w = math.floor(now / window)
  if st[1] and tonumber(st[1]) == w then n = tonumber(st[2]) end
  stop = (w + 1) * window
end
local allowed = 0
if n < limit then allowed = 1 end
if allowed == 1 or cr == 1 then
  n = n + 1
  redis.call('HSET', KEYS[1], 'w', f(w), 'n', n)
  redis.call('PEXPIRE', KEYS[1], ttl)
end
local reset = math.ceil((stop - now) * 1000000)
local retry = 0
if allowed == 0 then retry = reset end
return {allowed, math.max(0, limit - n), reset, retry, 0}
""",
)

# algorithms.SlidingLog. A list of logged times, oldest first, at most limit long; expired ones popped from the head.
SLIDING_LOG = _script(
    ["limit", "window", "ttl", "cr"],
    """
local cutoff = now - window
local n = redis.call('LLEN', KEYS[1])
while n > 0 and tonumber(redis.call('LINDEX', KEYS[1], 0)) <= cutoff do
  redis.call('LPOP', KEYS[1])
  n = n - 1
end
local allowed = 0
if n < limit then allowed = 1 end
if allowed == 1 or cr == 1 then
  redis.call('RPUSH', KEYS[1], f(now))
  n = n + 1
  if n > limit then
    redis.call('LPOP', KEYS[1])
    n = n - 1
  end
  redis.call('PEXPIRE', KEYS[1], ttl)
end
local reset = 0
if n > 0 then reset = tonumber(redis.call('LINDEX', KEYS[1], 0)) + window - now end
local retry = 0
if allowed == 0 then retry = reset end
return {allowed, limit - n, math.ceil(reset * 1000000), math.ceil(retry * 1000000), 0}
""",
)

# algorithms.SlidingWindowCounter. Hash fields: w = window index, c = current count, p = previous count.
SLIDING_WINDOW_COUNTER = _script(
    ["limit", "window", "ttl", "cr"],
    """
local index = math.floor(now / window)
local st = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local cur = 0
local prev = 0
if st[1] then
  local w = tonumber(st[1])
  if w == index then
    cur = tonumber(st[2])
    prev = tonumber(st[3])
  elseif w == index - 1 then
    prev = tonumber(st[2])
  end
end
local elapsed = now - index * window
local weighted = math.floor(prev * (window - elapsed) / window + eps)
local allowed = 0
if cur + weighted < limit then allowed = 1 end
if allowed == 1 or cr == 1 then
  cur = cur + 1
  redis.call('HSET', KEYS[1], 'w', f(index), 'c', cur, 'p', prev)
  redis.call('PEXPIRE', KEYS[1], ttl)
end
local function until_below(target)
  if cur + weighted < target then return 0 end
  if cur < target then return math.max(0, window * (1 - (target - cur) / prev) - elapsed) end
  return window - elapsed + window * (1 - target / cur)
end
local estimate = cur + weighted
local reset = 0
if estimate ~= 0 then reset = until_below(math.min(estimate, limit)) end
local retry = 0
if allowed == 0 then retry = until_below(limit) end
return {allowed, math.max(0, limit - estimate), math.ceil(reset * 1000000), math.ceil(retry * 1000000), 0}
""",
)

# algorithms.LeakyBucket. Hash fields: ex = excess (requests), ts = last update.
LEAKY_BUCKET = _script(
    ["rate", "burst", "ttl", "cr", "nodelay"],
    """
local st = redis.call('HMGET', KEYS[1], 'ex', 'ts')
local excess = 0
local last = now
if st[1] then
  excess = tonumber(st[1])
  last = tonumber(st[2])
end
excess = math.max(0, excess - math.max(0, now - last) * rate) + 1
local allowed = 0
local delay = 0
if excess > burst + 1 + eps then
  if cr == 1 then
    excess = math.min(excess, 2 * (burst + 1))
    redis.call('HSET', KEYS[1], 'ex', f(excess), 'ts', f(now))
    redis.call('PEXPIRE', KEYS[1], ttl)
  else
    excess = excess - 1
  end
else
  allowed = 1
  redis.call('HSET', KEYS[1], 'ex', f(excess), 'ts', f(now))
  redis.call('PEXPIRE', KEYS[1], ttl)
  if nodelay == 0 and excess > 1 + eps then delay = (excess - 1) / rate end
end
local remaining = math.max(0, math.floor(burst + 1 - excess + eps))
local reset = math.max(0, (excess - (burst - remaining)) / rate)
local retry = 0
if allowed == 0 then retry = (excess - burst) / rate end
return {allowed, remaining, math.ceil(reset * 1000000), math.ceil(retry * 1000000), math.ceil(delay * 1000000)}
""",
)

BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0


def ttl_ms(settings: Settings) -> int:
    """How long a key's state matters after its last write (then it equals a fresh key's), plus a second."""
    s = settings
    rate = s.limit / s.window
    if s.algorithm == "token-bucket":
        seconds = s.capacity * (2 if s.counts_rejected else 1) / rate  # a full bucket carries no information
    elif s.algorithm == "leaky-bucket":
        seconds = 2 * ((s.burst or 0) + 1) / rate
    elif s.algorithm == "sliding-window-counter":
        seconds = 2 * s.window
    else:
        seconds = s.window
    return math.ceil(seconds * 1000) + 1000


def script_for(settings: Settings) -> tuple[bytes, list[str]]:
    """The Lua source and its ARGV (without ``now``) for these settings."""
    s = settings
    ttl = str(ttl_ms(s))
    cr = "1" if s.counts_rejected else "0"
    if s.algorithm == "token-bucket":
        return TOKEN_BUCKET, [repr(s.limit / s.window), str(s.capacity), ttl, cr]
    if s.algorithm == "fixed-window":
        first = "1" if s.window_alignment == "first-request" else "0"
        return FIXED_WINDOW, [str(s.limit), repr(s.window), ttl, cr, first]
    if s.algorithm == "sliding-log":
        return SLIDING_LOG, [str(s.limit), repr(s.window), ttl, cr]
    if s.algorithm == "sliding-window-counter":
        return SLIDING_WINDOW_COUNTER, [str(s.limit), repr(s.window), ttl, cr]
    if s.algorithm == "leaky-bucket":
        return LEAKY_BUCKET, [repr(s.limit / s.window), str(s.burst or 0), ttl, cr, "1" if s.nodelay else "0"]
    raise ValueError(f"unknown algorithm {s.algorithm!r}")


def key_prefix(settings: Settings, node: str) -> bytes:
    # per-node scope puts the node name in the key: each node then enforces the limit alone (the broken setting).
    scope = "g" if settings.scope == "global" else f"n:{node}"
    # Variants whose stored state differs get keys of their own: a restart with other options starts afresh.
    variant = ":first-request" if settings.window_alignment == "first-request" else ""
    variant += ":race" if settings.race else ""
    return f"{settings.redis_prefix}:{settings.algorithm}{variant}:{scope}:".encode()


def encode_state(st: State) -> bytes:
    """A state list as the string value --race keeps in redis (repr round-trips every float)."""
    return ",".join(repr(float(x)) for x in st).encode()


def decode_state(raw: bytes) -> list[float]:
    return [float(x) for x in raw.split(b",")] if raw else []


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
        if settings.race:
            self.algorithm = create(settings)
            self.race_delay = settings.race_delay
            self.px = str(ttl_ms(settings)).encode()
            self.check = self._check_racy  # type: ignore[method-assign]

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
            allowed, remaining, reset_us, retry_us, delay_us = reply
            decision = from_micros(allowed, remaining, reset_us, retry_us)
            if delay_us > 0:  # leaky bucket without --nodelay: admitted, answered later
                asyncio.get_running_loop().call_later(delay_us / 1e6, done, decision)
            else:
                done(decision)
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

    # --race: GET, decide in Python, yield, plain SET (deliberately not atomic)

    def _check_racy(self, key: bytes, done: Callable[[Decision], None]) -> Decision | None:
        conn = self.conn
        if conn is None or not conn.alive:
            return self.failure
        k = self.prefix + key
        conn.send(resp.encode(b"GET", k), lambda reply: self._racy_read(k, reply, done))
        return None

    def _racy_read(self, k: bytes, reply: resp.Reply, done: Callable[[Decision], None]) -> None:
        if reply is not None and not isinstance(reply, bytes):
            if isinstance(reply, resp.RespError):
                self._warn(f"redis error: {reply}")
            done(self.failure)
            return
        algorithm = self.algorithm
        now = algorithm.clock()
        try:
            st = algorithm.fresh(now) if reply is None else algorithm.load(decode_state(reply))
        except ValueError:  # not ours (or mangled): start afresh rather than break the connection's reply stream
            st = algorithm.fresh(now)
        v = algorithm.step(st, now)
        asyncio.get_running_loop().call_later(self.race_delay, self._racy_write, k, st, v, done)

    def _racy_write(self, k: bytes, st: State, v: Verdict, done: Callable[[Decision], None]) -> None:
        conn = self.conn
        if conn is None or not conn.alive:
            done(self.failure)
            return
        cmd = resp.encode(b"SET", k, encode_state(st), b"PX", self.px)
        conn.send(cmd, lambda reply: self._racy_written(reply, v, done))

    def _racy_written(self, reply: resp.Reply, v: Verdict, done: Callable[[Decision], None]) -> None:
        if reply != b"OK":
            if isinstance(reply, resp.RespError):
                self._warn(f"redis error: {reply}")
            done(self.failure)
        elif v.delay:
            asyncio.get_running_loop().call_later(v.delay, done, from_verdict(v))
        else:
            done(from_verdict(v))

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
