"""The suite's options: every module's table in one, in the order --help and the web UI's start form show them, and
the checks a run starts with.

Each module declares its own options next to the code that reads them (``OPTIONS``) and checks them where it builds
what they describe (``from_options``, ``check_options``); this module only puts them together, for the locustfile's
parser, the start of a run and the web form alike.
"""

from __future__ import annotations

from typing import Any

from rlsuite import console, exporter, options, pacing, policy, schedule, targets

OPTIONS = (*targets.OPTIONS, *schedule.OPTIONS, *pacing.OPTIONS, *policy.OPTIONS, *exporter.OPTIONS, *console.OPTIONS)


def add_arguments(parser: Any) -> None:
    options.register(parser, OPTIONS)


def check_options(opts: Any) -> None:
    """Every option check; raises OptionError with a one-line message."""
    targets.from_options(opts)
    schedule.from_options(opts)
    pacing.check_options(opts)
    policy.declared(opts)
    exporter.check_options(opts)
    console.check_options(opts)
