"""Helpers shared by the modules that declare options: one spelling per option on every surface.

``--burst-every`` is ``parsed_options.burst_every``, ``LOCUST_BURST_EVERY`` and ``burst-every = 30`` in locust.conf.
"""

from __future__ import annotations

from typing import Any


class OptionError(ValueError):
    """A bad option value. ``str()`` is the one-line message shown to the user: it names the option and the fix."""

    def __init__(self, option: str, problem: str, fix: str) -> None:
        self.option, self.problem, self.fix = option, problem, fix
        super().__init__(f"--{option} {problem}; {fix}")


def env_var(option: str) -> str:
    return "LOCUST_" + option.upper().replace("-", "_")


def add(parser: Any, option: str, **kwargs: Any) -> None:
    """Declare ``--option`` with its ``LOCUST_*`` environment variable spelled out, as Locust's own options do."""
    parser.add_argument(f"--{option}", env_var=env_var(option), **kwargs)


def get(options: Any, option: str) -> Any:
    return getattr(options, option.replace("-", "_"))


def number(options: Any, option: str, *, minimum: float | None = None, above: float | None = None) -> float:
    """A numeric option, checked against a bound. Values may arrive as strings from config files or the web UI."""
    raw = get(options, option)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise OptionError(option, f"must be a number, got {raw!r}", f"set e.g. --{option} 10") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise OptionError(option, f"must be a finite number, got {raw!r}", f"set e.g. --{option} 10")
    if above is not None and value <= above:
        raise OptionError(option, f"must be above {above:g}, got {value:g}", f"set a value above {above:g}")
    if minimum is not None and value < minimum:
        raise OptionError(option, f"must be at least {minimum:g}, got {value:g}", f"set a value of {minimum:g} or more")
    return value
