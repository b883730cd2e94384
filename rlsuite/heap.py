"""The heap of a process that sends: its users are moved out of the garbage collector's sight while a run goes.

A run's users (thousands by default: -u covers a hung node) and everything they hold are made once, when they are
spawned and first run, and live for the whole run. Python's collector would look at every one of them at each full
collection: about 55 ms, seven times in a 15 s run at 8,600 req/s (233,000 objects), each pause leaving hundreds of
slots late on a busy core. ``gc.freeze()`` once the users have been spawned and have run moves every object of that
moment into a generation the collector never scans; ``gc.unfreeze()`` when the run stops hands them back, so that
the users of a finished run are freed (a web-UI session runs many). Locust does the same before it forks
``--processes`` workers.
"""

from __future__ import annotations

import gc
from typing import Any

from gevent import get_hub

_pending: list[Any] = []  # the freeze queued and not run yet (a run stopped at once must not freeze after its stop)


def _freeze() -> None:
    _pending.clear()
    gc.freeze()


def on_spawned(**_: Any) -> None:
    # The last users spawned have not run yet: each makes its task set (and its bound methods, its task queue) when
    # its greenlet first runs, and then parks or waits for a slot. A callback queued now runs after those first runs
    # (the loop runs its callbacks in order), so they are frozen too: ~37,000 objects otherwise scanned at every full
    # collection.
    _pending.append(get_hub().loop.run_callback(_freeze))


def on_stopped(**_: Any) -> None:
    while _pending:
        _pending.pop().stop()
    gc.unfreeze()


def register(events: Any) -> None:
    events.spawning_complete.add_listener(on_spawned)
    events.test_stop.add_listener(on_stopped)
