"""Which declared policy a request falls under: each policy's match (route, method, API key) and its cost.

The first policy whose match fits a request is its policy (the order of the policy file); a request none fits is
counted under ``unmatched`` and judged by none. The master sends the matches in the plan, so a worker matches without
the policy file. Matching runs on the request listener's hot path, so it happens once per distinct request shape
(method and URL, and the key when a match names keys), from a small cache; a run with one policy that matches
everything never looks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from rlsuite.replay import cost_bits, policy_bits

DEFAULT = "default"  # the policy of the single-policy flags (--limit ...), and of a run without a declared limit
UNMATCHED = "unmatched"  # requests that no declared policy matches: counted, never judged
CACHE_SIZE = 4096  # distinct request shapes remembered; beyond it the cache starts over (memory stays bounded)


@dataclass(frozen=True)
class Route:
    """A policy's match and cost. Empty fields match anything; ``path`` and ``key`` are globs (``/orders/*``)."""

    name: str = DEFAULT
    path: str = ""
    methods: tuple[str, ...] = ()  # upper case
    key: str = ""
    cost: int = 1  # units of the limit each request spends, unless the request says otherwise (context "cost")

    @property
    def matches_all(self) -> bool:
        return not (self.path or self.methods or self.key)

    def matches(self, method: str, path: str, key: str) -> bool:
        return (
            (not self.methods or method.upper() in self.methods)
            and (not self.path or fnmatchcase(path, self.path))
            and (not self.key or fnmatchcase(key, self.key))
        )

    def describe(self) -> str:
        parts = [
            f"route {self.path}" if self.path else "",
            "/".join(self.methods) if self.methods else "",
            f"key {self.key}" if self.key else "",
        ]
        what = ", ".join(p for p in parts if p) or "every request"
        return what + (f"; {self.cost} units per request" if self.cost != 1 else "")

    def to_message(self) -> list:
        return [self.name, self.path, list(self.methods), self.key, self.cost]

    @classmethod
    def from_message(cls, row: Sequence) -> Route:
        name, path, methods, key, cost = row
        return cls(name, path, tuple(methods), key, int(cost))


EVERY_REQUEST = Route()
ALL = (EVERY_REQUEST,)


class Router:
    """Per request: the index of its policy (``len(routes)`` for none), its name and its bits of the event code."""

    def __init__(self, routes: Sequence[Route], keys: Sequence[str] = ()) -> None:
        self.routes = tuple(routes) or ALL
        self.keys = tuple(keys)
        self.names = [r.name for r in self.routes] + [UNMATCHED]
        self.bits = [policy_bits(i) | cost_bits(r.cost) for i, r in enumerate(self.routes)] + [
            policy_bits(len(self.routes))
        ]
        self.trivial = self.routes[0].matches_all  # the first policy takes every request: no lookup at all
        self._by_key = any(r.key for r in self.routes)
        self._cache: dict[tuple, int] = {}

    def index(self, method: str, url: str, key: int) -> int:
        if self.trivial:
            return 0
        shape = (method, url, key) if self._by_key else (method, url)
        found = self._cache.get(shape)
        if found is None:
            if len(self._cache) >= CACHE_SIZE:
                self._cache.clear()
            path = urlsplit(url).path or "/"
            name = self.keys[key] if 0 <= key < len(self.keys) else ""
            found = next((i for i, r in enumerate(self.routes) if r.matches(method, path, name)), len(self.routes))
            self._cache[shape] = found
        return found
