"""One node: its name, limiter, counters and the response parts that never change."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from .config import Settings
from .decision import Decision
from .headers import policy_line
from .metrics import Metrics

ANONYMOUS = b"anonymous"  # the shared key of requests that carry no API-key header


class Limiter(Protocol):
    """``check`` returns a Decision now, or None and calls ``done`` later (exactly once). ``cost`` (units of the
    limit the request spends) is passed only when it is not 1, and only to the memory backend."""

    def check(self, key: bytes, done: Callable[[Decision], None], cost: int = 1) -> Decision | None: ...

    @property
    def up(self) -> bool: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class Node:
    def __init__(
        self, name: str, settings: Settings, limiter: Limiter, routes: dict[str, Limiter] | None = None
    ) -> None:
        self.name = name
        self.settings = settings
        self.limiter = limiter
        self.check = limiter.check
        self.metrics = Metrics(name, settings, lambda: limiter.up)
        self.counts = self.metrics.counts
        self.key_marker = b"\r\n" + settings.key_header.lower().encode() + b":"
        self.retry_after = settings.retry_after
        self.policy = policy_line(settings.quota, settings.window)
        # path -> (its limiter's check, its RateLimit-Policy line); empty: every path shares the limit
        self.routes: dict[bytes, tuple[Callable, bytes]] = {}
        for route in settings.routes:
            mine = settings.for_route(route)
            self.routes[route.path.encode()] = ((routes or {})[route.path].check, policy_line(mine.quota, mine.window))
        self.cost_marker = b"\r\n" + settings.cost_header.lower().encode() + b":" if settings.cost_header else b""
