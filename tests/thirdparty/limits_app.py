"""One HTTP node in front of the third-party `limits` library (PyPI ``limits==5.8.0``), for testing the suite's verdict.

    python -m tests.thirdparty.limits_app --port P --redis-url redis://127.0.0.1:PORT/0 \\
        --strategy fixed-window|moving-window|sliding-window-counter --limit L --window W \\
        [--key-header X-Api-Key] [--prefix NAME] [--storage redis|memory]

Every request (any method, any path) is one ``strategy.hit(RateLimitItemPerSecond(L, W), key)``: the key is the
value of the key header (``-`` when the header is absent or empty). Admitted: ``200``; refused: ``429`` with
``Retry-After`` = ``max(1, ceil(get_window_stats(...).reset_time - time.time()))``; storage error (redis down):
``503`` with ``Retry-After: 1`` (fails closed). HTTP/1.1 keep-alive and pipelining, ``Content-Length`` on every answer.
Prints ``READY http://127.0.0.1:P`` once listening (``--port 0`` picks a free port) and, on SIGTERM or SIGINT,
``FINAL http://127.0.0.1:P admitted=N limited=N errors=N``. It must not import locust (no gevent here): a plain
asyncio (uvloop when installed) protocol that calls the synchronous `limits` API inline, one request at a time, so
a node's answers are decided in the order its requests arrived.

Same ``--prefix`` on every node with ``--storage redis``: one global limit (a correct cluster). ``--storage memory``:
each process counts alone (``limits.storage.MemoryStorage``), so N nodes admit up to N x L (a per-node cluster).

What the strategies do in limits 5.8.0 (read from the installed source; paths below are under
``site-packages/limits/``). The stored key is ``f"{prefix}:LIMITER/{key}/{L}/{W}/second"`` (``RateLimitItem.key_for``
in ``limits.py``, ``RedisStorage.prefixed_key`` in ``storage/redis.py``). ``get_expiry()`` is ``W`` whole seconds
(``multiples`` is cast to ``int``): sub-second windows cannot be expressed.

fixed-window -- ``FixedWindowRateLimiter.hit`` (``strategies.py``) is ``storage.incr(key, W) <= L``;
``RedisStorage.incr`` runs ``resources/redis/lua_scripts/incr_expire.lua``: ``INCRBY key 1``, and only when the result
equals the increment (the key was absent) ``EXPIRE key W``.

- The window is anchored at the key's first hit (after the previous window's key expired), NOT at the epoch:
  ``[t_first, t_first + W)`` measured by redis-server's clock (key expiry, millisecond resolution). The next window
  starts at the first request after that, so windows are not back to back either.
- A refused hit still increments the counter (the INCRBY is unconditional; admission is ``count <= L`` after it),
  but it never moves the expiry, so it does not change what is admitted; only ``remaining`` in the stats.
- Clock: redis TIME only (TTL); the app's ``time.time()`` is used only for ``Retry-After``:
  ``get_window_stats`` = ``RedisStorage.get_expiry`` = ``max(TTL key, 0) + time.time()``, and redis' ``TTL`` rounds
  the remaining milliseconds to the nearest second, so ``Retry-After`` is the remaining window rounded, >= 1 here.
- Memory storage (``MemoryStorage.incr``, ``storage/memory.py``): same rules with the process' ``time.time()``.

moving-window -- ``MovingWindowRateLimiter.hit`` is ``RedisStorage.acquire_entry``: ``timestamp = time.time()`` in the
app process, then ``acquire_moving_window.lua``: ``entry = LINDEX key (L - 1)`` (the L-th most recent admitted
timestamp, newest at index 0); if it exists and ``entry >= timestamp - W``: refuse, else ``LPUSH key timestamp``,
``LTRIM key 0 L-1``, ``EXPIRE key W``.

- An exact sliding log, but of admitted hits only (at most the last L timestamps are kept, which suffices): admitted
  iff fewer than L admitted hits have timestamps in ``[t - W, t]`` (both ends closed: a hit exactly W old still counts).
- Refused hits are not logged (the script returns before LPUSH).
- Clock: each app process' ``time.time()``, taken before the redis round trip (redis only stores the numbers; EXPIRE
  is garbage collection). The list is in the order the scripts ran, not by timestamp: with several processes two
  hits can be stored out of order by up to one client-to-redis latency; clock skew between hosts shifts the window.
- ``Retry-After``: ``get_window_stats`` runs ``moving_window.lua`` (binary search for the oldest entry
  ``>= now - W``) and returns ``oldest + W``: the moment the oldest logged hit leaves the window, i.e. when one slot
  frees. (With no entry in the window it returns ``now + W``.)
- Memory storage: same rule (``MemoryStorage.acquire_entry``), list not trimmed but expired by a timer thread.

sliding-window-counter -- ``SlidingWindowCounterRateLimiter.hit`` is ``RedisStorage.acquire_sliding_window_entry``,
``acquire_sliding_window.lua`` (all times in milliseconds, ``E = W * 1000``), two keys ``{K}`` (current) and
``{K}/-1`` (previous):

- First hit: ``SET {K} 1 PX 2E``. The current window is while ``PTTL {K}`` is in ``[E, 2E]``. A request that finds
  ``0 < PTTL {K} < E`` first shifts: ``RENAME {K} {K}/-1`` (the TTL moves along, so the previous key expires exactly
  when the new current window ends) and ``SET {K} 0 PX (PTTL + E)``. So windows are anchored at the key's first hit,
  ``t0 + kE``, NOT at the epoch; the chain continues while every window sees at least one request (refused ones
  too: the shift happens before the check); after a window without any, ``{K}`` expires and the next hit re-anchors.
- Estimate: ``floor(previous_count * PTTL({K}/-1) / E) + current_count``, where ``PTTL({K}/-1)`` is the time left
  in the current window, so the previous window is weighted by ``1 - elapsed fraction``; the floor is applied to the
  weighted previous part (``current_count`` is an integer, so it equals ``floor`` of the whole sum). Admitted iff
  ``estimate + 1 <= L``; then ``INCRBY {K} 1``.
- Refused hits do not count (the script returns before INCRBY).
- Clock: redis TIME only (PTTL, millisecond resolution); the app's clock plays no part in admission.
- ``Retry-After``: ``get_window_stats`` (``strategies.py``) returns
  ``time.time() + min(prev_ttl % (W / previous_count), current_ttl % W)`` (seconds): the next whole-unit drop of
  the weighted previous count or the end of the current window, whichever is sooner. It can be earlier than the
  moment a request would really be admitted (e.g. when ``current_count`` alone is L); it is clamped to >= 1 here.
- Memory storage is different: ``MemoryStorage.acquire_sliding_window_entry`` uses EPOCH-aligned windows
  (``TimestampedSlidingWindow.sliding_window_keys``: ``int(now / W)``) with the same weighting and floor, and the
  process' ``time.time()``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys
import time
from collections.abc import Callable

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import STRATEGIES, RateLimiter

MAX_HEAD = 16 * 1024
DEFAULT_KEY = "-"
BODY_OK = b"ok\n"
BODY_LIMITED = b"rate limited\n"
BODY_ERROR = b"storage error\n"
CLOSE = b"Connection: close\r\n"


def answer(status: bytes, body: bytes, extra: bytes, head_only: bool, connection: bytes) -> bytes:
    return b"HTTP/1.1 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s%s\r\n%s" % (
        status,
        len(body),
        extra,
        connection,
        b"" if head_only else body,
    )


class Limiter:
    """The `limits` objects for one node and its tallies; ``decide`` is the whole per-request work."""

    def __init__(self, strategy: RateLimiter, item: RateLimitItem) -> None:
        self.strategy = strategy
        self.item = item
        self.admitted = 0
        self.limited = 0
        self.errors = 0
        self.last_error = ""

    def decide(self, key: str) -> tuple[bytes, bytes, bytes]:
        """(status, extra header lines, body) for one request of ``key``."""
        try:
            if self.strategy.hit(self.item, key):
                self.admitted += 1
                return b"200 OK", b"", BODY_OK
            reset = self.strategy.get_window_stats(self.item, key).reset_time
        except Exception as exc:  # redis down or timing out: fail closed, say so once per kind of error
            self.errors += 1
            text = f"{type(exc).__name__}: {exc}"
            if text != self.last_error:
                self.last_error = text
                print(f"STORAGE ERROR {text}", flush=True)
            return b"503 Service Unavailable", b"Retry-After: 1\r\n", BODY_ERROR
        self.limited += 1
        retry_after = max(1, math.ceil(reset - time.time()))
        return b"429 Too Many Requests", b"Retry-After: %d\r\n" % retry_after, BODY_LIMITED


class HttpProtocol(asyncio.Protocol):
    """Minimal HTTP/1.1: keep-alive, pipelining (answers in order), Content-Length bodies; no chunked uploads."""

    def __init__(self, limiter: Limiter, key_marker: bytes) -> None:
        self.limiter = limiter
        self.key_marker = key_marker  # b"\r\nx-api-key:"
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        out: list[bytes] = []
        close = False
        while self.buf:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    out.append(answer(b"431 Request Header Fields Too Large", b"", b"", False, CLOSE))
                    close = True
                break
            head = self.buf[:end]
            lower = head.lower()  # ASCII only: same length, so offsets found in it apply to head
            line_end = head.find(b"\r\n")
            parts = (head if line_end < 0 else head[:line_end]).split(b" ")
            length = header(head, lower, b"\r\ncontent-length:")
            if len(parts) != 3 or not parts[2].startswith(b"HTTP/1.") or (length and not length.isdigit()):
                out.append(answer(b"400 Bad Request", b"bad request\n", b"", False, CLOSE))
                close = True
                break
            if header(head, lower, b"\r\ntransfer-encoding:") is not None:
                out.append(answer(b"501 Not Implemented", b"no chunked bodies\n", b"", False, CLOSE))
                close = True
                break
            total = end + 4 + int(length or 0)
            if len(self.buf) < total:
                break  # the body is still coming
            self.buf = self.buf[total:]
            connection = (header(head, lower, b"\r\nconnection:") or b"").lower()
            if parts[2] == b"HTTP/1.0":
                close = b"keep-alive" not in connection
                conn_line = CLOSE if close else b"Connection: keep-alive\r\n"
            else:
                close = b"close" in connection
                conn_line = CLOSE if close else b""
            key = header(head, lower, self.key_marker)
            status, extra, body = self.limiter.decide(key.decode("latin-1") if key else DEFAULT_KEY)
            out.append(answer(status, body, extra, parts[0] == b"HEAD", conn_line))
            if close:
                break
        if self.transport is not None and out:
            self.transport.write(b"".join(out))
        if close and self.transport is not None:
            self.buf = b""
            self.transport.close()


def header(head: bytes, lower: bytes, marker: bytes) -> bytes | None:
    """The stripped value of the first header whose ``\\r\\nname:`` (lower case) is ``marker``, or None."""
    i = lower.find(marker)
    if i < 0:
        return None
    start = i + len(marker)
    stop = head.find(b"\r\n", start)
    return (head[start:] if stop < 0 else head[start:stop]).strip()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.thirdparty.limits_app", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one, shown in READY)")
    p.add_argument("--redis-url", default="", help="redis://127.0.0.1:PORT/0 (required with --storage redis)")
    p.add_argument("--storage", choices=("redis", "memory"), default="redis")
    p.add_argument("--strategy", choices=sorted(STRATEGIES), required=True)
    p.add_argument("--limit", type=int, required=True, help="L requests ...")
    p.add_argument("--window", type=int, required=True, help="... per W whole seconds")
    p.add_argument("--key-header", default="X-Api-Key", help="request header that partitions the limit")
    p.add_argument("--prefix", default=RedisStorage.PREFIX, help="redis key prefix; the same on every node")
    ns = p.parse_args(argv)
    if ns.limit < 1 or ns.window < 1:
        p.error("--limit and --window must be >= 1")
    if ns.storage == "redis" and not ns.redis_url.startswith("redis://"):
        p.error("--storage redis needs --redis-url redis://HOST:PORT/DB")
    if not ns.key_header or any(c in ns.key_header for c in " :\r\n"):
        p.error(f"--key-header: {ns.key_header!r} is not a header name")
    return ns


def make_storage(ns: argparse.Namespace) -> Storage:
    if ns.storage == "memory":
        return MemoryStorage()
    return RedisStorage(ns.redis_url, key_prefix=ns.prefix, socket_timeout=2.0, socket_connect_timeout=2.0)


async def serve(ns: argparse.Namespace, limiter: Limiter) -> None:
    loop = asyncio.get_running_loop()
    marker = b"\r\n" + ns.key_header.lower().encode() + b":"
    server = await loop.create_server(lambda: HttpProtocol(limiter, marker), "127.0.0.1", ns.port, backlog=1024)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {url}", flush=True)
    await stop.wait()
    server.close()
    print(
        f"FINAL {url} admitted={limiter.admitted} limited={limiter.limited} errors={limiter.errors}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    ns = parse_args(argv)
    storage = make_storage(ns)
    if not storage.check():
        print(f"ERROR storage {ns.storage} {ns.redis_url} does not answer", file=sys.stderr, flush=True)
        return 2
    limiter = Limiter(STRATEGIES[ns.strategy](storage), RateLimitItemPerSecond(ns.limit, ns.window))
    new_loop: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    try:
        import uvloop

        new_loop = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        pass
    with asyncio.Runner(loop_factory=new_loop) as runner:
        runner.run(serve(ns, limiter))
    if isinstance(storage, MemoryStorage):
        storage.timer.cancel()  # its expiry thread would keep the process alive
    return 0


if __name__ == "__main__":
    sys.exit(main())
