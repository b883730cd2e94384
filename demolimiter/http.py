"""HTTP/1.1 server protocol: a minimal hand-written parser (GET/HEAD/POST, keep-alive, pipelining).

Written for throughput on one core: the header block is lower-cased once (length-preserving for bytes) and
searched with ``bytes.find``; responses are single ``bytes %`` formats; a deferred limiter answer (redis, a
delayed leaky-bucket admission, --race) is a plain callback, not a Task.

httptools (llhttp, uvicorn's parser) was measured in its place with bench/limiter_rps.py,
defaults, this parser and the httptools one side by side, runs alternating: httptools/hand per-repetition medians
0.964 (min 0.953, max 0.984, 10 reps) on "memory: 3 nodes, 429 path", 0.952-0.978 on the redis cases (8 reps), the
memory 200 case too noisy to read (0.91-0.94) on a shared 2-core machine. It stays slower after trimming its
callbacks to one Python call per URL, header and message end, so the hand parser stays: llhttp is fast, but
its per-header callbacks into Python cost more than the few ``bytes.find`` calls here.
"""

from __future__ import annotations

import asyncio
import time
from email.utils import formatdate

from .decision import ADMITTED, LIMITED, REDIS_ERROR_OPEN, Decision
from .headers import ratelimit_line, retry_after_line
from .metrics import CONTENT_TYPE
from .node import ANONYMOUS, Node

MAX_HEAD = 16 * 1024
MAX_BODY = 1024 * 1024
METHODS = (b"GET", b"HEAD", b"POST")

CLOSE = b"Connection: close\r\n"
KEEP_ALIVE = b"Connection: keep-alive\r\n"  # only said to HTTP/1.0 clients, for whom it is not the default

DATE = b""  # "Date: ...\r\n", refreshed every second by tick_date()


def tick_date(loop: asyncio.AbstractEventLoop) -> None:
    global DATE
    now = time.time()
    DATE = b"Date: %s\r\n" % formatdate(now, usegmt=True).encode()
    loop.call_later(1.0 - now % 1.0 + 0.001, tick_date, loop)


def simple(status: bytes, body: bytes, extra: bytes = b"", content_type: bytes = b"text/plain") -> bytes:
    """Status line and headers up to (excluding) the Connection header and the blank line."""
    return b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n%s" % (status, content_type, len(body), extra)


class HttpProtocol(asyncio.Protocol):
    __slots__ = ("buf", "head_only", "keep", "node", "paused", "policy", "transport", "v10", "waiting")

    def __init__(self, node: Node) -> None:
        self.node = node
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.waiting = False  # a limiter answer is pending: later pipelined requests wait (responses stay in order)
        self.paused = False  # the client is not reading: stop producing responses
        self.keep = True
        self.v10 = False
        self.head_only = False
        self.policy = node.policy  # the RateLimit-Policy line of the request being answered (its route's)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def pause_writing(self) -> None:
        self.paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.paused = False
        if self.transport is not None:
            self.transport.resume_reading()
            self.process()

    def data_received(self, data: bytes) -> None:
        self.buf = self.buf + data if self.buf else data
        if not self.waiting:
            self.process()

    def process(self) -> None:
        """Answer every complete request in the buffer, in order, until one must wait."""
        while self.transport is not None and not self.waiting and not self.paused and self.buf:
            buf = self.buf
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if buf[:2] == b"\r\n":  # stray CRLF between requests is allowed (RFC 9112 2.2)
                    self.buf = buf[2:]
                    continue
                if len(buf) > MAX_HEAD:
                    self.error(b"431 Request Header Fields Too Large")
                return
            if end > MAX_HEAD:
                self.error(b"431 Request Header Fields Too Large")
                return
            line_end = buf.find(b"\r\n")
            if line_end == 0:
                self.buf = buf[2:]
                continue
            parts = buf[:line_end].split(b" ")
            if len(parts) != 3:
                self.error(b"400 Bad Request")
                return
            method, target, version = parts
            if version == b"HTTP/1.1":
                keep, v10 = True, False
            elif version == b"HTTP/1.0":
                keep, v10 = False, True
            else:
                self.error(b"505 HTTP Version Not Supported" if version[:5] == b"HTTP/" else b"400 Bad Request")
                return
            # "\r\nname: value\r\n...\r\n"; lower() keeps offsets, so values are sliced from the original bytes.
            head = buf[line_end : end + 2].lower()
            for line in head[2:-2].split(b"\r\n") if end > line_end else ():
                colon = line.find(b":")
                if colon <= 0 or line[colon - 1] in b" \t" or line[0] in b" \t":
                    self.error(b"400 Bad Request")
                    return
            length = 0
            i = head.find(b"\r\ncontent-length:")
            if i >= 0:
                value = head[i + 17 : head.find(b"\r\n", i + 2)].strip()
                if not value.isdigit():
                    self.error(b"400 Bad Request")
                    return
                length = int(value)
                if length > MAX_BODY:
                    self.error(b"413 Content Too Large")
                    return
            if head.find(b"\r\ntransfer-encoding:") >= 0:
                self.error(b"501 Not Implemented")  # no chunked request bodies: say so rather than misparse
                return
            i = head.find(b"\r\nconnection:")
            if i >= 0:
                value = head[i + 13 : head.find(b"\r\n", i + 2)]
                if b"close" in value:
                    keep = False
                elif b"keep-alive" in value:
                    keep = True
            total = end + 4 + length
            if len(buf) < total:
                return  # body still arriving
            self.buf = buf[total:]
            if method not in METHODS:
                if method.isalpha() and method.isupper():
                    self.error(b"405 Method Not Allowed", b"Allow: GET, HEAD, POST\r\n")
                else:
                    self.error(b"400 Bad Request")
                return
            if target[:1] != b"/":
                if target[:7] == b"http://" or target[:8] == b"https://":  # absolute-form: keep only the path
                    slash = target.find(b"/", target.find(b"//") + 2)
                    target = target[slash:] if slash > 0 else b"/"
                else:
                    self.error(b"400 Bad Request")
                    return
            q = target.find(b"?")
            path = target[:q] if q >= 0 else target
            self.keep = keep
            self.v10 = v10
            self.head_only = method == b"HEAD"
            if path == b"/healthz":
                self.send(simple(b"200 OK", b"ok\n"), b"ok\n")
                continue
            if path == b"/metrics":
                body = self.node.metrics.render()
                self.send(simple(b"200 OK", body, content_type=CONTENT_TYPE), body)
                continue
            node = self.node
            i = head.find(node.key_marker)
            if i >= 0:
                start = line_end + i + len(node.key_marker)
                key = buf[start : line_end + head.find(b"\r\n", i + 2)].strip() or ANONYMOUS
            else:
                key = ANONYMOUS
            check = node.check
            if node.routes:
                route = node.routes.get(path)
                if route is None:
                    self.policy = node.policy
                else:
                    check, self.policy = route
            cost = 1
            if node.cost_marker:
                i = head.find(node.cost_marker)
                if i >= 0:
                    value = head[i + len(node.cost_marker) : head.find(b"\r\n", i + 2)].strip()
                    if not value.isdigit() or not 1 <= int(value) <= 1_000_000:
                        self.error(b"400 Bad Request")
                        return
                    cost = int(value)
            decision = check(key, self.decided) if cost == 1 else check(key, self.decided, cost)
            if decision is None:
                self.waiting = True
                return
            self.answer(decision)

    def decided(self, decision: Decision) -> None:
        """Deferred limiter answer (redis): respond, then carry on with any pipelined requests."""
        self.waiting = False
        if self.transport is None:
            self.node.counts[decision[0]] += 1  # the limiter spent quota on it even though the client left
            return
        self.answer(decision)
        self.process()

    def answer(self, d: Decision) -> None:
        node = self.node
        outcome = d[0]
        node.counts[outcome] += 1
        if outcome == ADMITTED:
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n%s%s" % (
                self.policy,
                ratelimit_line(d[1], d[2]),
            )
            body = b"ok\n"
        elif outcome == LIMITED:
            head = b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n%s%s%s" % (
                self.policy,
                ratelimit_line(d[1], d[2]),
                retry_after_line(d[3]) if node.retry_after else b"",
            )
            body = b"rate limited\n"
        elif outcome == REDIS_ERROR_OPEN:
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n%s" % node.policy
            body = b"ok\n"
        else:
            body = b"rate limiter unavailable\n"
            head = simple(b"503 Service Unavailable", body, retry_after_line(d[3]) if node.retry_after else b"")
        self.send(head, body)

    def send(self, head: bytes, body: bytes) -> None:
        keep = self.keep
        conn = (KEEP_ALIVE if self.v10 else b"") if keep else CLOSE
        t = self.transport
        t.write(b"%s%s%s\r\n%s" % (head, DATE, conn, b"" if self.head_only else body))  # type: ignore[union-attr]
        if not keep:
            t.close()  # type: ignore[union-attr]
            self.transport = None

    def error(self, status: bytes, extra: bytes = b"") -> None:
        """Unparseable or unsupported request: answer and close, since the stream position is unknown."""
        body = status[4:] + b"\n"
        self.keep = False
        self.head_only = False
        self.buf = b""
        self.send(simple(status, body, extra), body)
