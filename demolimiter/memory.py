"""In-process limiter: state lives in this process, shared by every node object that holds the same instance."""

from __future__ import annotations

from collections.abc import Callable

from .algorithms import ALGORITHMS, Clock
from .config import Settings
from .decision import Decision, from_verdict


class MemoryLimiter:
    """Synchronous: ``check`` always answers at once, so the HTTP layer never waits on it."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        algo = ALGORITHMS[settings.algorithm]
        kwargs = {"clock": clock} if clock is not None else {}
        self.algorithm = algo(settings.limit, settings.window, settings.burst, **kwargs)
        self._hit = self.algorithm.hit

    def check(self, key: bytes, done: Callable[[Decision], None]) -> Decision | None:
        del done  # never deferred
        return from_verdict(self._hit(key))

    @property
    def up(self) -> bool:
        return True

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass
