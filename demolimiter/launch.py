"""The demo limiter's entry point, for ``python -m demolimiter`` and the ``rlsuite-demo`` command."""

from __future__ import annotations

import signal
import sys


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM before the event loop owns signals: still a clean stop


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)  # first thing: the imports below take tens of milliseconds
    try:
        from .cli import main as cli_main

        code = cli_main()
    except KeyboardInterrupt:
        code = 0
    sys.exit(code)
