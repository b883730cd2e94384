"""The limit the cluster is supposed to enforce (declared by the user), and the allowances the verdict makes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlsuite import options
from rlsuite.models import (
    ALGORITHMS,
    ALIASES,
    ALIGNMENTS,
    ANY,
    AUTO,
    EPOCH,
    FIXED_WINDOW,
    LEAKY_BUCKET,
    SLIDING_LOG,
    SLIDING_WINDOW_COUNTER,
    TOKEN_BUCKET,
    Spec,
)
from rlsuite.options import Option, OptionError
from rlsuite.replay import GLOBAL, PER_NODE
from rlsuite.routes import EVERY_REQUEST, Route

ALGORITHM_CHOICES = (*ALGORITHMS, AUTO)


GROUP = "Declared limit and verdict"
OPTIONS = (
    Option(
        "limit",
        GROUP,
        type=int,
        default=0,
        minimum=0,
        help="Requests the cluster should admit per --window and per API key; 0 = no limit declared, no verdict.",
    ),
    Option("window", GROUP, type=float, default=1.0, above=0, help="Seconds of the declared limit's window."),
    Option(
        "limit-algorithm",
        GROUP,
        type=str,
        default=TOKEN_BUCKET,
        choices=ALGORITHM_CHOICES,
        aliases=ALIASES,
        help="How the limit is enforced: token-bucket (also GCRA), leaky-bucket (nginx limit_req), fixed-window, "
        "sliding-log (exact sliding window), sliding-window-counter (weighted previous window), or auto (fit "
        "every model and report which one the cluster follows).",
    ),
    Option(
        "limit-burst",
        GROUP,
        type=int,
        default=0,
        minimum=0,
        help="token-bucket: capacity, requests admitted at once after idling (0 = --limit); leaky-bucket: nginx's "
        "burst (requests queued or passed beyond the rate).",
    ),
    Option(
        "window-alignment",
        GROUP,
        type=str,
        default=ANY,
        choices=ALIGNMENTS,
        help="fixed-window: epoch (windows start at multiples of --window on the limiter's clock), first-request "
        "(a key's window starts at its first request, as Redis INCR+EXPIRE and the limits library do) or any.",
    ),
    Option(
        "limit-counts-rejected",
        GROUP,
        default=False,
        action="store_true",
        help="Rejected requests count toward the limit too (HAProxy track-sc before deny): goodput falls under "
        "overload, and that is declared behaviour rather than under-admission.",
    ),
    Option(
        "limit-delay",
        GROUP,
        default=False,
        action="store_true",
        help="leaky-bucket: excess requests within the burst are delayed, not answered at once (nginx limit_req "
        "without nodelay).",
    ),
    Option(
        "limit-scope",
        GROUP,
        type=str,
        default=GLOBAL,
        choices=(GLOBAL, PER_NODE),
        help="global: the limit holds across all nodes together; per-node: each node enforces it alone.",
    ),
    Option(
        "clock-skew",
        GROUP,
        type=float,
        default=0.01,
        minimum=0,
        help="Seconds the clocks of the limiter nodes and of the load generators may differ: every decision is "
        "placed anywhere in its request's time in flight widened by this much.",
    ),
    Option(
        "strict-headers",
        GROUP,
        default=False,
        action="store_true",
        help="Header findings (429 without Retry-After, malformed RateLimit fields, ...) fail the verdict.",
    ),
    Option("verdict-json", GROUP, type=str, default="", help="Write the verdict as JSON to this file (for CI)."),
    Option(
        "policy-file",
        GROUP,
        type=str,
        default="",
        help="A TOML file of named policies, each with its match (route, method, key), algorithm, limit, window, "
        "burst, scope and cost: counts, /metrics and the verdict per policy. Instead of --limit and its options.",
    ),
)


@dataclass(frozen=True)
class Policy:
    spec: Spec  # the declared model (for auto: its parameters, with the algorithm to be fitted)
    scope: str
    skew: float
    strict_headers: bool = False
    auto: bool = False
    route: Route = EVERY_REQUEST  # the requests it governs and what each costs (a policy file's; else every request, 1)

    @property
    def name(self) -> str:
        return self.route.name

    @property
    def rate(self) -> float:
        """Requests per second the limit allows in the long run."""
        return self.spec.rate

    @property
    def counts_in_windows(self) -> bool:
        """Remaining quota can only fall within a window: fixed windows (epoch-aligned, known to the checker)."""
        return self.spec.algorithm == FIXED_WINDOW and self.spec.alignment == EPOCH

    def describe(self) -> str:
        if self.auto:
            return f"auto: every model fitted to {self.spec.limit} per {self.spec.window:g}s; {self.scope}"
        return f"{self.spec.describe()}; {self.scope}"


def from_options(opts: Any) -> Policy | None:
    """The declared policy, or None when no limit is declared. Every value is checked, used or not."""
    values = options.check(opts, OPTIONS)
    limit, window, burst = int(values["limit"]), values["window"], int(values["limit-burst"])
    algorithm, alignment, scope = values["limit-algorithm"], values["window-alignment"], values["limit-scope"]
    skew = values["clock-skew"]
    if skew >= window / 4:
        raise OptionError(
            "clock-skew",
            f"({skew:g}s) must be below a quarter of --window ({window:g}s)",
            "lower it, or declare a longer window",
        )
    if limit == 0:
        return None
    if bool(opts.limit_delay) and algorithm not in (LEAKY_BUCKET, AUTO):
        raise OptionError("limit-delay", f"only applies to leaky-bucket, not {algorithm}", "drop it")
    if alignment != ANY and algorithm not in (FIXED_WINDOW, AUTO):
        raise OptionError("window-alignment", f"only applies to fixed-window, not {algorithm}", "drop it")
    spec = Spec(
        algorithm=TOKEN_BUCKET if algorithm == AUTO else algorithm,
        limit=limit,
        window=window,
        burst=burst,
        alignment=alignment,
        counts_rejected=bool(opts.limit_counts_rejected),
        delay=bool(opts.limit_delay),
    )
    return Policy(spec, scope, skew, bool(opts.strict_headers), auto=algorithm == AUTO)


def declared(opts: Any) -> list[Policy]:
    """Every declared policy: those of --policy-file, or the one of --limit and its options (none without a limit).
    Every value is checked, used or not."""
    single = from_options(opts)
    path = str(getattr(opts, "policy_file", "") or "")
    if not path:
        return [single] if single is not None else []
    if single is not None:
        raise OptionError(
            "policy-file", "cannot be combined with --limit", "declare that limit in the file, or drop --policy-file"
        )
    from rlsuite import policyfile  # (it builds on this module)

    return policyfile.load(path, opts)


def candidates(policy: Policy) -> list[Spec]:
    """The models ``auto`` fits: every algorithm with the declared numbers, the most specific first (among models
    that fit equally, the first is reported as the best fit); fixed windows of unknown alignment bound the least."""
    s = policy.spec
    out = []
    for algorithm, alignment in (
        (TOKEN_BUCKET, ANY),
        (LEAKY_BUCKET, ANY),
        (FIXED_WINDOW, EPOCH),
        (SLIDING_LOG, ANY),
        (SLIDING_WINDOW_COUNTER, ANY),
        (FIXED_WINDOW, ANY),
    ):
        delay = s.delay and algorithm == LEAKY_BUCKET
        out.append(Spec(algorithm, s.limit, s.window, s.burst, alignment, s.counts_rejected, delay))
    return out
