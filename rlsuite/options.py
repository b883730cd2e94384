"""The suite's options, declared once: one table of ``Option`` rows per module, next to the code that reads them.

Every surface reads the same rows: the argument parser (``register``: flags, ``LOCUST_*`` environment variables,
groups and help), the plain checks of each value (``check``: a finite number within its bounds, one of the choices)
and the web UI's start form. Checks that relate options to each other stay as code in the modules that own them.

One spelling per option on every surface: ``--burst-every`` is ``parsed_options.burst_every``,
``LOCUST_BURST_EVERY`` and ``burst-every = 30`` in locust.conf.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import KW_ONLY, dataclass
from typing import Any


class OptionError(ValueError):
    """A bad option value. ``str()`` is the one-line message shown to the user: it names the option and the fix."""

    def __init__(self, option: str, problem: str, fix: str) -> None:
        self.option, self.problem, self.fix = option, problem, fix
        super().__init__(f"--{option} {problem}; {fix}")


def fail_fast(error: OptionError) -> None:
    """Bad input: one line naming the option and the fix, exit code 2, nothing started."""
    sys.stderr.write(f"error: {error}\n")
    sys.stderr.flush()
    raise SystemExit(2)


@dataclass(frozen=True)
class Option:
    """One option: how it is parsed, shown and checked."""

    flag: str  # without the leading dashes
    group: str  # the title of its argument group in --help; the web form shows it before the help
    _: KW_ONLY
    help: str
    type: type | None = None  # int and float options are checked as finite numbers; None with an action
    default: Any = None
    choices: tuple[str, ...] | None = None
    aliases: Mapping[str, str] | None = None  # other spellings accepted for a choice (from config and the web form)
    metavar: str | None = None
    action: str | None = None
    minimum: float | None = None  # numbers: the smallest value allowed
    above: float | None = None  # numbers: values must be greater than this

    @property
    def dest(self) -> str:
        """The ``parsed_options`` attribute, also the name of its web form field."""
        return self.flag.replace("-", "_")

    @property
    def env_var(self) -> str:
        return env_var(self.flag)

    @property
    def numeric(self) -> bool:
        return self.type in (int, float)

    def argparse_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"default": self.default, "help": self.help}
        for name in ("type", "choices", "metavar", "action"):
            value = getattr(self, name)
            if value is not None:
                kwargs[name] = value
        return kwargs

    def value(self, options: Any) -> Any:
        """The value in ``options``, checked: a number as a float, a choice with its alias resolved, else as given.
        Values may arrive as strings from config files or the web UI."""
        if self.numeric:
            return number(options, self.flag, minimum=self.minimum, above=self.above)
        if self.choices is None:
            return getattr(options, self.dest, self.default)  # nothing to check
        choice = str(get(options, self.flag))
        choice = (self.aliases or {}).get(choice, choice)
        if choice not in self.choices:
            names = " or ".join(self.choices) if len(self.choices) == 2 else f"one of {', '.join(self.choices)}"
            raise OptionError(self.flag, f"is {choice!r}", f"use {names}")
        return choice


def env_var(option: str) -> str:
    return "LOCUST_" + option.upper().replace("-", "_")


def register(parser: Any, table: Iterable[Option]) -> None:
    """Declare every option of ``table`` on Locust's parser, each with its ``LOCUST_*`` environment variable spelled
    out as Locust's own options do, in one argument group per title (in the order the titles first appear)."""
    groups: dict[str, Any] = {}
    for option in table:
        if option.group not in groups:
            groups[option.group] = parser.add_argument_group(option.group)
        groups[option.group].add_argument(f"--{option.flag}", env_var=option.env_var, **option.argparse_kwargs())


def check(options: Any, table: Iterable[Option]) -> dict[str, Any]:
    """The checked value of every option of ``table``, by flag; raises OptionError for the first bad one, in table
    order."""
    return {option.flag: option.value(options) for option in table}


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
