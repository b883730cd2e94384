"""The limit the cluster is supposed to enforce (declared by the user), and how strictly the verdict judges it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rlsuite import options
from rlsuite.options import OptionError

TOKEN_BUCKET = "token-bucket"
FIXED_WINDOW = "fixed-window"
SLIDING_WINDOW = "sliding-window"
ALGORITHMS = (TOKEN_BUCKET, FIXED_WINDOW, SLIDING_WINDOW)
GLOBAL = "global"
PER_NODE = "per-node"


def add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("Declared limit and verdict")
    options.add(
        group,
        "limit",
        type=int,
        default=0,
        help="Requests the cluster should admit per --window and per API key; 0 = no limit declared, no verdict.",
    )
    options.add(group, "window", type=float, default=1.0, help="Seconds of the declared limit's window.")
    options.add(
        group,
        "limit-burst",
        type=int,
        default=0,
        help="Token bucket capacity (requests admitted at once after idling); 0 = --limit.",
    )
    options.add(
        group,
        "limit-algorithm",
        type=str,
        default=TOKEN_BUCKET,
        choices=ALGORITHMS,
        help="How the limit is enforced: token-bucket (also GCRA, leaky bucket), fixed-window (windows "
        "aligned to the Unix epoch) or sliding-window.",
    )
    options.add(
        group,
        "limit-scope",
        type=str,
        default=GLOBAL,
        choices=(GLOBAL, PER_NODE),
        help="global: the limit holds across all nodes together; per-node: each node enforces it alone.",
    )
    options.add(
        group,
        "strict-headers",
        default=False,
        action="store_true",
        help="Header findings (429 without Retry-After, malformed RateLimit fields, ...) fail the verdict.",
    )
    options.add(
        group,
        "verdict-slack",
        type=float,
        default=0.1,
        help="Seconds of in-flight time and clock skew tolerated at window edges: each window may admit the "
        "requests offered in 2 x this long on top of its bound.",
    )
    options.add(
        group,
        "max-limited-share",
        type=float,
        default=0.01,
        help="Largest share of limited answers tolerated in steady windows offered below the limit "
        "(more is under-admission).",
    )
    options.add(group, "verdict-json", type=str, default="", help="Write the verdict as JSON to this file (for CI).")


@dataclass(frozen=True)
class Policy:
    limit: int
    window: float
    burst: int
    algorithm: str
    scope: str
    strict_headers: bool
    slack: float
    max_limited_share: float

    @property
    def rate(self) -> float:
        """Requests per second the limit allows in the long run."""
        return self.limit / self.window

    @property
    def span(self) -> int:
        """Length in whole seconds of the windows the verdict checks."""
        return max(1, math.ceil(self.window - 1e-9))

    def describe(self) -> str:
        window = f"{self.window:g}s"
        extra = f", burst {self.burst}" if self.algorithm == TOKEN_BUCKET else ""
        return f"{self.limit} requests per {window} window ({self.algorithm}{extra}, {self.scope})"


def from_options(opts: Any) -> Policy | None:
    """The declared policy, or None when no limit is declared."""
    limit = int(options.number(opts, "limit", minimum=0))
    if limit == 0:
        return None
    window = options.number(opts, "window", above=0)
    algorithm = str(opts.limit_algorithm)
    if algorithm not in ALGORITHMS:
        raise OptionError("limit-algorithm", f"is {algorithm!r}", f"use one of {', '.join(ALGORITHMS)}")
    scope = str(opts.limit_scope)
    if scope not in (GLOBAL, PER_NODE):
        raise OptionError("limit-scope", f"is {scope!r}", "use global or per-node")
    if algorithm != TOKEN_BUCKET and window != int(window):
        # per-second counts can only be summed into windows of whole seconds
        raise OptionError("window", f"must be whole seconds for {algorithm}, got {window:g}", "set e.g. --window 1")
    burst = int(options.number(opts, "limit-burst", minimum=0)) or limit
    share = options.number(opts, "max-limited-share", minimum=0)
    if share >= 1:
        raise OptionError("max-limited-share", f"must be below 1, got {share:g}", "set e.g. --max-limited-share 0.01")
    return Policy(
        limit=limit,
        window=window,
        burst=burst,
        algorithm=algorithm,
        scope=scope,
        strict_headers=bool(opts.strict_headers),
        slack=options.number(opts, "verdict-slack", minimum=0),
        max_limited_share=share,
    )
