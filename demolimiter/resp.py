"""Minimal pipelining RESP2 client over asyncio.

Why not redis-py: every limiter decision is one round trip, and commands issued in the same loop iteration
are written with one ``write`` and answered in order, with a plain callback per command (no Future, no Task).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Union

Reply = Union[int, bytes, None, list, "RespError", "ConnectionLost"]
Callback = Callable[[Reply], None]


class RespError(Exception):
    """An error reply (``-ERR ...``); passed to callbacks as a value, not raised."""


class ConnectionLost(Exception):
    """Given to callbacks of commands that were in flight when the connection went away."""


class _Incomplete(Exception):
    pass


_INCOMPLETE = _Incomplete()


def encode(*args: bytes | str | int | float) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def parse(buf: bytes, pos: int) -> tuple[Reply, int]:
    """One reply starting at ``pos``; raises ``_Incomplete`` when ``buf`` ends first."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _INCOMPLETE
    kind = buf[pos]
    if kind == 58:  # ':'
        return int(buf[pos + 1 : end]), end + 2
    if kind == 42:  # '*'
        n = int(buf[pos + 1 : end])
        pos = end + 2
        if n < 0:
            return None, pos
        items = []
        for _ in range(n):
            item, pos = parse(buf, pos)
            items.append(item)
        return items, pos
    if kind == 36:  # '$'
        n = int(buf[pos + 1 : end])
        if n < 0:
            return None, end + 2
        stop = end + 2 + n
        if len(buf) < stop + 2:
            raise _INCOMPLETE
        return buf[end + 2 : stop], stop + 2
    if kind == 43:  # '+'
        return buf[pos + 1 : end], end + 2
    if kind == 45:  # '-'
        return RespError(buf[pos + 1 : end].decode("utf-8", "replace")), end + 2
    raise ValueError(f"bad RESP type byte {kind!r}")


class RespConnection(asyncio.Protocol):
    """One redis connection. ``send`` queues a pre-encoded command; its callback gets the reply."""

    def __init__(self, on_lost: Callable[[], None] | None = None) -> None:
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None
        self.alive = False
        self.pending: deque[tuple[Callback, float]] = deque()  # callback, send time (loop clock)
        self.out: list[bytes] = []
        self.buf = b""
        self.loop = asyncio.get_running_loop()
        self.closed = self.loop.create_future()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.alive = True

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos = 0
        pending = self.pending
        try:
            while pos < len(buf):
                reply, pos = parse(buf, pos)
                pending.popleft()[0](reply)
        except _Incomplete:
            pass
        except (ValueError, IndexError):
            # Garbage (or a reply nobody asked for): the stream is unusable, so drop it and let the owner reconnect.
            self.buf = b""
            self.abort()
            return
        self.buf = buf[pos:]

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        self.transport = None
        lost = ConnectionLost(str(exc) if exc else "connection closed")
        while self.pending:
            self.pending.popleft()[0](lost)
        if not self.closed.done():
            self.closed.set_result(None)
        if self.on_lost is not None:
            self.on_lost()

    # client side

    def send(self, command: bytes, callback: Callback) -> None:
        """Queue ``command``; everything queued in this loop iteration goes out in one write."""
        if not self.out:
            self.loop.call_soon(self._flush)
        self.out.append(command)
        self.pending.append((callback, self.loop.time()))

    def call(self, *args: bytes | str | int | float) -> asyncio.Future[Reply]:
        """Awaitable form for setup commands (AUTH, SELECT, SCRIPT LOAD); not used per request."""
        fut: asyncio.Future[Reply] = self.loop.create_future()

        def done(reply: Reply) -> None:
            if not fut.done():
                fut.set_result(reply)

        self.send(encode(*args), done)
        return fut

    def _flush(self) -> None:
        if self.transport is not None and self.out:
            self.transport.write(b"".join(self.out))
        self.out.clear()

    def oldest(self) -> float | None:
        """Send time of the oldest unanswered command, for the owner's timeout check."""
        return self.pending[0][1] if self.pending else None

    def abort(self) -> None:
        self.alive = False
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.alive = False
        if self.transport is not None:
            self.transport.close()


async def connect(host: str, port: int, timeout: float, on_lost: Callable[[], None] | None = None) -> RespConnection:
    loop = asyncio.get_running_loop()
    _, proto = await asyncio.wait_for(loop.create_connection(lambda: RespConnection(on_lost), host, port), timeout)
    return proto
