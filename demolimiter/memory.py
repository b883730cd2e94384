"""In-process limiter: state lives in this process, shared by every node object that holds the same instance."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .algorithms import Clock, State, Verdict, create
from .config import Settings
from .decision import Decision, from_verdict


class MemoryLimiter:
    """Answers at once, except a delayed leaky-bucket admission and (``--race``) every request, which wait on the
    event loop (``loop.call_later``, the timer ``asyncio.sleep`` uses, without a Task per request)."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.algorithm = create(settings, clock)
        self._hit = self.algorithm.hit
        self.race_delay = settings.race_delay
        if settings.race:
            self.check = self._check_racy  # type: ignore[method-assign]

    def check(self, key: bytes, done: Callable[[Decision], None], cost: int = 1) -> Decision | None:
        v = self._hit(key, None, cost)
        if v.delay:
            asyncio.get_running_loop().call_later(v.delay, done, from_verdict(v))
            return None
        return from_verdict(v)

    def _check_racy(self, key: bytes, done: Callable[[Decision], None], cost: int = 1) -> Decision | None:
        """Deliberately broken: decide on a copy of the state, yield, then write the copy back over whatever
        other requests wrote meanwhile (a lost update). One request at a time still sees every earlier write."""
        now, st = self.algorithm.read(key)
        v = self.algorithm.step(st, now, cost)
        asyncio.get_running_loop().call_later(self.race_delay, self._write_back, key, st, v, done)
        return None

    def _write_back(self, key: bytes, st: State, v: Verdict, done: Callable[[Decision], None]) -> None:
        self.algorithm.write(key, st)
        if v.delay:
            asyncio.get_running_loop().call_later(v.delay, done, from_verdict(v))
        else:
            done(from_verdict(v))

    @property
    def up(self) -> bool:
        return True

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass
