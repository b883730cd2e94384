"""Validated settings shared by the cluster command and single nodes."""

from __future__ import annotations

from dataclasses import dataclass, replace
from urllib.parse import unquote, urlsplit


class UsageError(Exception):
    """Bad input: a one-line message naming the option and the fix (the CLI exits 2 on it)."""


@dataclass(frozen=True)
class RedisUrl:
    host: str
    port: int
    db: int
    username: str | None
    password: str | None


@dataclass(frozen=True)
class RouteLimit:
    """A path with a limit of its own (--route PATH=LIMIT/WINDOW[:per-node]): same algorithm, own state."""

    path: str
    limit: int
    window: float
    scope: str = "global"

    def arg(self) -> str:
        return f"{self.path}={self.limit}/{self.window!r}" + (":per-node" if self.scope == "per-node" else "")


def parse_route(text: str) -> RouteLimit:
    fix = "give PATH=LIMIT/WINDOW[:per-node], e.g. --route /v1/orders=20/1 or --route /b=5/1:per-node"
    spec, _, scope = text.partition(":")
    path, _, rate = spec.partition("=")
    limit, _, window = rate.partition("/")
    try:
        n, w = int(limit), float(window or "1")
    except ValueError:
        n, w = 0, 0.0
    if not path.startswith("/") or n < 1 or not (w > 0 and w < float("inf")) or scope not in ("", "per-node"):
        raise UsageError(f"--route: {text!r} is not valid; {fix}")
    return RouteLimit(path, n, w, scope or "global")


@dataclass(frozen=True)
class Settings:
    """Everything a node needs to decide and answer; identical on every node of a cluster."""

    host: str = "127.0.0.1"
    backend: str = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_failure: str = "open"
    redis_timeout: float = 0.5
    redis_prefix: str = "demolimiter"
    algorithm: str = "token-bucket"
    limit: int = 100
    window: float = 1.0
    burst: int | None = None
    key_header: str = "X-Api-Key"
    scope: str = "global"
    retry_after: bool = True
    window_alignment: str = "epoch"  # fixed window: "epoch" or "first-request"
    nodelay: bool = False  # leaky bucket: answer admitted requests at once instead of delaying them
    race: bool = False  # deliberately broken: read, yield race_delay seconds, write back (lost updates)
    race_delay: float = 0.002
    counts_rejected: bool = False  # deliberately broken: rejected requests also count toward the limit
    routes: tuple[RouteLimit, ...] = ()  # paths with limits of their own (memory backend)
    cost_header: str = ""  # request header with the units a request spends (default 1); "" = every request 1

    def for_route(self, route: RouteLimit) -> Settings:
        """The settings of one route's limiter: its limit and window (a bucket's capacity = its limit)."""
        return replace(self, limit=route.limit, window=route.window, burst=None, scope=route.scope, routes=())

    @property
    def capacity(self) -> int:
        """Token bucket capacity."""
        return self.burst if self.burst is not None else self.limit

    @property
    def quota(self) -> int:
        """RateLimit-Policy's q: --limit, or for the leaky bucket burst + 1 (what passes back to back)."""
        return (self.burst or 0) + 1 if self.algorithm == "leaky-bucket" else self.limit

    def node_args(self) -> list[str]:
        """The options that make a ``node`` subprocess behave exactly like these settings."""
        args = [
            "--host",
            self.host,
            "--backend",
            self.backend,
            "--redis-url",
            self.redis_url,
            "--redis-failure",
            self.redis_failure,
            "--redis-timeout",
            repr(self.redis_timeout),
            "--redis-prefix",
            self.redis_prefix,
            "--algorithm",
            self.algorithm,
            "--limit",
            str(self.limit),
            "--window",
            repr(self.window),
            "--key-header",
            self.key_header,
            "--scope",
            self.scope,
        ]
        if self.burst is not None:
            args += ["--burst", str(self.burst)]
        if not self.retry_after:
            args.append("--no-retry-after")
        if self.algorithm == "fixed-window" and self.window_alignment != "epoch":
            args += ["--window-alignment", self.window_alignment]
        if self.nodelay:
            args.append("--nodelay")
        if self.race:
            args += ["--race", "--race-delay", repr(self.race_delay)]
        if self.counts_rejected:
            args.append("--counts-rejected")
        for route in self.routes:
            args += ["--route", route.arg()]
        if self.cost_header:
            args += ["--cost-header", self.cost_header]
        return args


def parse_redis_url(url: str) -> RedisUrl:
    parts = urlsplit(url)
    fix = "use redis://[user:password@]host[:port][/db]"
    if parts.scheme != "redis":
        raise UsageError(f"--redis-url: unsupported scheme {parts.scheme!r}; {fix}")
    try:
        port = parts.port or 6379
    except ValueError:
        raise UsageError(f"--redis-url: bad port in {url!r}; {fix}") from None
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise UsageError(f"--redis-url: database {path!r} is not a number; {fix}")
    return RedisUrl(
        host=parts.hostname or "127.0.0.1",
        port=port,
        db=int(path or 0),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )
