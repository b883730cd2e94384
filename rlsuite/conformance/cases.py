"""The catalogue: named cases, each quoting the requirement it checks, the traffic that checks it, and how it is graded.

Every expectation derives from the declared policy (``--limit``, ``--window``, ``--limit-algorithm``, ...): the
replay proves disagreements with the declared model whatever the timing of each decision (a proven disagreement
is FAILED in every case that judges decisions), and an exact limiter of the declared model, fed the same requests
at their start times, gives the figures a correct cluster produces (``expected``). A case's traffic is bounded and
deterministic: a few windows of paced requests, bursts and volleys, each phase after the limiter has settled.

IDs are stable: ``RLC-<case>.<check>``. Adding a check appends a number; a retired one keeps its number unused.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from statistics import median
from typing import Any

from rlsuite.conformance import evidence, fields
from rlsuite.conformance.grading import (
    FAILED,
    INCONCLUSIVE,
    INFORMATIONAL,
    NON_STRICT,
    NOT_APPLICABLE,
    OK,
    Result,
    worst,
)
from rlsuite.conformance.traffic import (
    DATE,
    MAX_VOLLEY,
    NO_KEY,
    RETRY_AFTER,
    Clients,
    Outcome,
    Phase,
    Record,
    burst,
    paced,
    volley,
)
from rlsuite.models import (
    ANY,
    EPOCH,
    FIRST_REQUEST,
    FIXED_WINDOW,
    LEAKY_BUCKET,
    SLIDING_LOG,
    SLIDING_WINDOW_COUNTER,
    TOKEN_BUCKET,
    Spec,
)
from rlsuite.policy import Policy
from rlsuite.replay import ADMITTED, GLOBAL, LIMITED, PER_NODE, latency_cap

DRAFT = "draft-ietf-httpapi-ratelimit-headers"
ANSWERED = (ADMITTED, LIMITED)  # outcome codes of requests the limiter decided (not errors)


@dataclass(frozen=True)
class Context:
    """What every case needs to plan and grade: the declared policy and the cluster's shape."""

    policy: Policy
    nodes: tuple[str, ...]  # host:port of each node, in --node-hosts order
    keys: int = 0  # API keys available (0: requests carry no key, one shared partition)
    strict_headers: bool = False

    @property
    def spec(self) -> Spec:
        return self.policy.spec

    @property
    def limit(self) -> int:
        return self.spec.limit

    @property
    def window(self) -> float:
        return self.spec.window

    @property
    def rate(self) -> float:
        return self.spec.rate

    @property
    def n(self) -> int:
        return len(self.nodes)

    @property
    def bucket(self) -> bool:
        return self.spec.algorithm in (TOKEN_BUCKET, LEAKY_BUCKET)

    @property
    def capacity(self) -> int:
        """Requests a fresh partition admits at once: a bucket's capacity, a window's limit."""
        return math.floor(self.spec.capacity) if self.bucket else self.limit

    @property
    def spread(self) -> float:
        """The longest decision interval the replay judges (its timing allowance)."""
        return latency_cap(self.window) + 2 * self.policy.skew

    @property
    def settle(self) -> float:
        """Seconds without traffic after which the declared model (and the same limit counting rejected requests)
        has forgotten everything: what the runner waits before each phase."""
        s = self.spec
        if self.bucket:
            rest = 2 * s.capacity / s.rate  # counting rejections, a bucket may sit at -capacity
        elif s.algorithm == SLIDING_WINDOW_COUNTER:
            rest = 2 * s.window
        else:
            rest = s.window
        return rest + 0.1 * s.window + 2 * self.policy.skew

    @property
    def scale(self) -> int:
        """Partitions one key makes over the nodes: one for a global limit, one per node for a per-node limit."""
        return self.n if self.policy.scope == PER_NODE else 1

    @property
    def offered(self) -> float:
        """The rate the whole cluster allows one key: the declared rate, times the nodes for a per-node limit. The
        cases offer multiples of it, so each partition sees the multiple the case means."""
        return self.rate * self.scale

    def groups(self, records: list[Record]) -> dict[int, list[Record]]:
        """Records by partition of one key: all together for a global limit, by node for a per-node limit."""
        out: dict[int, list[Record]] = {}
        for r in records:
            out.setdefault(r.node if self.scale > 1 else -1, []).append(r)
        return out

    def key(self, index: int = 0) -> int:
        return NO_KEY if self.keys == 0 else index % self.keys

    def slack(self, n: float) -> float:
        """How far an admission count may stray from the exact model's for timing alone: the allowance's refill,
        rounding, and for fixed windows of unknown alignment a whole window."""
        s = self.spec
        extra = s.limit if s.algorithm == FIXED_WINDOW and s.alignment == ANY else 0
        extra += 2 if s.algorithm == SLIDING_WINDOW_COUNTER else 0
        return 1 + self.offered * self.spread + 0.02 * n + extra * self.scale

    @property
    def delays(self) -> bool:
        """The declared limiter delays admissions in its burst (nginx without nodelay) instead of answering at once."""
        return self.spec.algorithm == LEAKY_BUCKET and self.spec.delay

    @property
    def latency(self) -> float:
        """The longest the declared limiter itself holds an admitted request (its queue), in seconds."""
        return self.spec.capacity / self.rate if self.delays else 0.0

    def described(self) -> str:
        return self.policy.describe()


@dataclass(frozen=True)
class Check:
    id: str
    title: str
    requirement: str  # one sentence: what the declared policy or the header draft demands
    graded: str = ""  # how the grade is decided, for the docs


# How most decision-judging checks start: a disagreement the replay proves is FAILED (whatever else), a case that
# could not run as designed INCONCLUSIVE.
PROVEN = "FAILED when the replay proves a disagreement with the declared model; "


@dataclass
class Case:
    """One traffic, graded by one or more checks."""

    number: int
    checks: tuple[Check, ...]
    plan: Callable[[Context], list[Phase]]
    grade: Callable[[Context, list[Outcome], list[Record]], list[Result]]
    applies: Callable[[Context], str | None] = lambda ctx: None  # None, or why the case does not apply

    @property
    def ids(self) -> list[str]:
        return [c.id for c in self.checks]


# -- grading helpers ----------------------------------------------------------------------------------------------


def _result(check: Check, grade: str, expected: str, observed: str, reason: str = "", **details: Any) -> Result:
    return Result(check.id, check.title, check.requirement, grade, expected, observed, reason, details)


def _decided(
    ctx: Context,
    judgement: evidence.Judgement | None,
    outcomes: list[Outcome],
    shadow: bool = False,
    scope_case: bool = False,
) -> tuple[str, str] | None:
    """The grade every decision-judging check starts from: FAILED when the replay proves a disagreement (that
    stands even when the case did not run as designed), INCONCLUSIVE when it did not run as designed or (``shadow``)
    its traffic could not have told the limit from twice it. None: grade on."""
    if judgement is not None and judgement.disagrees:
        return FAILED, judgement.reason(list(ctx.nodes), scope_case)
    doubt = evidence.unhealthy(outcomes, list(ctx.nodes))
    if doubt:
        return INCONCLUSIVE, doubt
    if shadow and judgement is not None and not judgement.shadow_caught():
        if not evidence.could_catch_double(ctx.policy, ctx.n, outcomes):
            # the declared model's bound is too loose for even the planned traffic to prove twice the limit (a fixed
            # window from the first request): the check grades on its comparison with the exact model alone
            return None
        return INCONCLUSIVE, (
            "this traffic could not have told the declared limit from twice it (2 nodes each enforcing it alone, "
            "replayed on the same requests, would fit): the generator may have fallen short"
        )
    return None


def _x(value: float) -> str:
    return f"{value:.2f}x"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _header_grade(ctx: Context, grade: str) -> str:
    """Header SHOULDs are FAILED with --strict-headers (as --strict-headers fails the verdict)."""
    return FAILED if grade == NON_STRICT and ctx.strict_headers else grade


# -- RLC-1 steady below the limit ----------------------------------------------------------------------------------

STEADY = Check(
    "RLC-1.1",
    "Steady traffic below the limit",
    "Requests evenly spaced at 80% of the declared rate are all admitted: a limiter must not reject traffic "
    "its policy allows (judged by the replay's strict side: under any timing the model had room).",
    PROVEN + "NON-STRICT when requests were limited that the timing allowance explains; else OK.",
)


def plan_steady(ctx: Context) -> list[Phase]:
    return [Phase("steady 0.8x", paced(0.0, 4 * ctx.window, 0.8 * ctx.offered, ctx.n, ctx.key()))]


def grade_steady(ctx: Context, outcomes: list[Outcome], _history: list[Record]) -> list[Result]:
    judgement = evidence.replay(ctx.policy, ctx.n, outcomes)
    records = evidence.records_of(outcomes)
    admitted, limited, errors = evidence.counts(records)
    model = evidence.expected(ctx.spec, ctx.policy.scope, records)
    model_limited = sum(1 for r, ok in zip(records, model, strict=True) if not ok and r.code in ANSWERED)
    expected = f"0 of {len(records)} limited" + (
        f" (the model, at these exact times: {model_limited})" if model_limited else ""
    )
    observed = f"{admitted} admitted, {limited} limited, {errors} errors"
    base = _decided(ctx, judgement, outcomes)
    if base:
        return [_result(STEADY, base[0], expected, observed, base[1])]
    if limited <= model_limited:
        return [_result(STEADY, OK, expected, observed)]
    return [
        _result(
            STEADY,
            NON_STRICT,
            expected,
            observed,
            f"{limited} rejections below the limit, each explained only by the timing allowance (no proof)",
        )
    ]


# -- RLC-2 bursts ----------------------------------------------------------------------------------------------------

BURST_2X = Check(
    "RLC-2.1",
    "Burst at 2x the limit",
    "Offered twice the declared rate for 3 windows, the cluster admits no more than the declared model allows "
    "(judged by the replay's lenient side) and no fewer than it must (its strict side).",
    PROVEN
    + (
        "INCONCLUSIVE when the traffic could not have caught twice the limit; NON-STRICT when the admissions "
        "stray from the exact model's count beyond the timing allowance; else OK."
    ),
)
BURST_5X = Check(
    "RLC-2.2",
    "Burst at 5x the limit",
    "Offered five times the declared rate for 2 windows, the cluster admits what the declared model allows, "
    "no more, no less.",
    BURST_2X.graded,
)
BURST_CAPACITY = Check(
    "RLC-2.3",
    "Burst capacity after idling",
    "After idling long enough to refill, the cluster admits the declared burst at once: a bucket's capacity "
    "(--limit-burst, or --limit), a window's limit.",
    "The capacity measured: admissions of a burst of 1.5x it within a tenth of a window, less the refill meanwhile. "
    "OK within 1 + rate x allowance + 2%; NON-STRICT above; FAILED below (the model had refilled) or when proven by "
    "the replay.",
)


def plan_burst(multiplier: float, windows: float) -> Callable[[Context], list[Phase]]:
    def plan(ctx: Context) -> list[Phase]:
        rate = multiplier * ctx.offered
        return [Phase(f"{multiplier:g}x", paced(0.0, windows * ctx.window, rate, ctx.n, ctx.key()))]

    return plan


def grade_burst(check: Check, windows: float) -> Callable[[Context, list[Outcome], list[Record]], list[Result]]:
    def grade(ctx: Context, outcomes: list[Outcome], _history: list[Record]) -> list[Result]:
        judgement = evidence.replay(ctx.policy, ctx.n, outcomes)
        records = evidence.records_of(outcomes)
        admitted, limited, errors = evidence.counts(records)
        model = sum(evidence.expected(ctx.spec, ctx.policy.scope, records))
        bound = ctx.spec.max_admitted(windows * ctx.window, ctx.spread)
        expected = f"{model} admitted (the model; at most {bound:.0f} at the most lenient timing)"
        observed = f"{admitted} admitted, {limited} limited of {len(records)}" + (
            f", {errors} errors" if errors else ""
        )
        details = {"admitted": admitted, "limited": limited, "model": model, "lenient_bound": round(bound, 1)}
        base = _decided(ctx, judgement, outcomes, shadow=True)
        if base:
            return [_result(check, base[0], expected, observed, base[1], **details)]
        if abs(admitted - model) <= ctx.slack(model):
            return [_result(check, OK, expected, observed, **details)]
        return [
            _result(
                check,
                NON_STRICT,
                expected,
                observed,
                f"{admitted - model:+d} admissions from the exact model, within what the timing allowance explains",
                **details,
            )
        ]

    return grade


def plan_capacity(ctx: Context) -> list[Phase]:
    cap = ctx.capacity
    count = (math.ceil(1.5 * cap) + 2) * ctx.scale  # per partition: 1.5x the capacity
    span = min(0.1 * ctx.window, cap / (10 * ctx.rate))
    # mid-window: an epoch-aligned fixed window holds the whole burst
    return [Phase("capacity", burst(0.4 * ctx.window, count, span, ctx.n, ctx.key()))]


def grade_capacity(ctx: Context, outcomes: list[Outcome], _history: list[Record]) -> list[Result]:
    judgement = evidence.replay(ctx.policy, ctx.n, outcomes)
    records = evidence.records_of(outcomes)
    declared = ctx.capacity
    each = []  # the capacity measured per partition (one, or one per node for a per-node limit)
    for group in ctx.groups(records).values():
        admitted = [r for r in group if r.admitted]
        if admitted and ctx.bucket:
            # a bucket refills while the burst goes on: take the refill out
            each.append(len(admitted) - ctx.rate * (admitted[-1].start - group[0].start))
        else:
            each.append(float(len(admitted)))
    low, high = min(each, default=0.0), max(each, default=0.0)
    measured = low if abs(low - declared) > abs(high - declared) else high
    tolerance = 1 + ctx.rate * ctx.spread + 0.02 * declared
    what = "capacity" if ctx.bucket else "limit"
    per = " per node" if ctx.scale > 1 else ""
    expected = f"{declared} at once{per} (the declared {what}; within {tolerance:.1f})"
    took = _ms(records[-1].start - records[0].start) if records else "0 ms"
    ok = sum(1 for r in records if r.admitted)
    shown = " / ".join(f"{m:.1f}" for m in each)
    observed = f"{shown} at once{per} ({ok} admitted of {len(records)} sent within {took})"
    details = {"declared": declared, "measured": round(measured, 2), "admitted": ok, "sent": len(records)}
    base = _decided(ctx, judgement, outcomes)
    if base:
        return [_result(BURST_CAPACITY, base[0], expected, observed, base[1], **details)]
    if abs(measured - declared) <= tolerance:
        return [_result(BURST_CAPACITY, OK, expected, observed, **details)]
    if measured > declared:
        return [
            _result(
                BURST_CAPACITY,
                NON_STRICT,
                expected,
                observed,
                "admitted more at once than declared, by less than the replay can prove",
                **details,
            )
        ]
    return [
        _result(
            BURST_CAPACITY,
            FAILED,
            expected,
            observed,
            f"after {ctx.settle:.2f}s idle (the declared model refills in less), the cluster admitted only "
            f"{measured:.1f} at once: its burst is smaller than declared",
            **details,
        )
    ]


# -- RLC-3 sustained overload ------------------------------------------------------------------------------------

GOODPUT = Check(
    "RLC-3.1",
    "Goodput under sustained overload",
    "Offered ten times the declared rate for 4 windows, admissions stay at the declared rate: rejected "
    "requests must not use up the limit (goodput collapse) unless --limit-counts-rejected is declared.",
    PROVEN
    + (
        "a collapse fits the limit with rejected requests counted, and the reason says so. NON-STRICT when the "
        "goodput of windows 2-4 strays from the exact model's beyond the allowance; else OK."
    ),
)
REJECT_LATENCY = Check(
    "RLC-3.2",
    "Rejection latency under overload",
    "Informational: how fast rejections are answered compared with admissions while the cluster is overloaded "
    "(a rejection should be the cheap path).",
    "INFORMATIONAL: p50 and p99 latency of rejections and admissions.",
)


def plan_overload(ctx: Context) -> list[Phase]:
    return [Phase("10x", paced(0.0, 4 * ctx.window, 10 * ctx.offered, ctx.n, ctx.key()))]


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def grade_overload(ctx: Context, outcomes: list[Outcome], _history: list[Record]) -> list[Result]:
    judgement = evidence.replay(ctx.policy, ctx.n, outcomes)
    records = evidence.records_of(outcomes)
    t0 = outcomes[0].t0
    w = ctx.window
    lo, hi = t0 + w, t0 + 4 * w  # after the first window's burst allowance
    model = evidence.expected(ctx.spec, ctx.policy.scope, records)
    model_in = sum(1 for r, ok in zip(records, model, strict=True) if ok and lo <= r.start < hi)
    seen_in = evidence.admitted_in(records, lo, hi)
    span = hi - lo
    limit_rate = ctx.offered
    _, limited, _ = evidence.counts(records)
    expected = (
        f"goodput {model_in / span:.1f}/s = {_x(model_in / span / limit_rate)} the limit (the model, windows 2-4)"
    )
    observed = (
        f"goodput {seen_in / span:.1f}/s = {_x(seen_in / span / limit_rate)} the limit; "
        f"{limited} of {len(records)} limited"
    )
    details = {
        "goodput": round(seen_in / span, 3),
        "model_goodput": round(model_in / span, 3),
        "limit_rate": limit_rate,
    }
    base = _decided(ctx, judgement, outcomes, shadow=True)
    if base:
        first = _result(GOODPUT, base[0], expected, observed, base[1], **details)
    elif abs(seen_in - model_in) <= ctx.slack(model_in):
        first = _result(GOODPUT, OK, expected, observed, **details)
    else:
        first = _result(
            GOODPUT,
            NON_STRICT,
            expected,
            observed,
            f"goodput {seen_in / max(1, model_in):.2f} of the model's, by less than the replay can prove",
            **details,
        )
    ok = [r.duration for r in records if r.admitted]
    no = [r.duration for r in records if r.limited]
    figures = {
        "admitted_p50_ms": round(_percentile(ok, 0.5) * 1000, 3) if ok else None,
        "admitted_p99_ms": round(_percentile(ok, 0.99) * 1000, 3) if ok else None,
        "limited_p50_ms": round(_percentile(no, 0.5) * 1000, 3) if no else None,
        "limited_p99_ms": round(_percentile(no, 0.99) * 1000, 3) if no else None,
    }

    def text(values: list[float]) -> str:
        return (
            f"p50 {_percentile(values, 0.5) * 1000:.2f} ms, p99 {_percentile(values, 0.99) * 1000:.2f} ms"
            if values
            else "none"
        )

    doubt = evidence.unhealthy(outcomes, list(ctx.nodes))
    second = _result(
        REJECT_LATENCY,
        INCONCLUSIVE if doubt else INFORMATIONAL,
        "rejections no slower than admissions",
        f"rejections {text(no)}; admissions {text(ok)}",
        doubt or "",
        **figures,
    )
    return [first, second]


# -- RLC-4 enforcement scope -------------------------------------------------------------------------------------

SCOPE_ROUND_ROBIN = Check(
    "RLC-4.1",
    "Enforcement scope, round-robin over the nodes",
    "Offered three times the rate spread over every node, the cluster enforces the declared scope: a global limit "
    "holds for all nodes together (a cluster whose nodes each enforce it alone is caught with 2 nodes or more).",
    PROVEN
    + (
        "the scope seen is the one (global, per node) without over-admission. NON-STRICT when admissions stray "
        "from the exact model beyond the allowance; else OK."
    ),
)
SCOPE_NODE_SWITCH = Check(
    "RLC-4.2",
    "Enforcement scope when traffic moves between nodes",
    "Traffic that moves from one node to the next finds the limit where the previous node left it (global), or "
    "fresh on every node (per-node): no node forgets what the others admitted.",
    SCOPE_ROUND_ROBIN.graded,
)


def needs_nodes(ctx: Context) -> str | None:
    return None if ctx.n >= 2 else "one node: there is no scope to tell (give 2 or more --node-hosts)"


def plan_scope(ctx: Context) -> list[Phase]:
    w, r = ctx.window, ctx.rate
    shots = paced(0.0, 4 * w, 3 * ctx.offered, ctx.n, ctx.key(), tag=1)
    switch = []
    for i in range(min(ctx.n, 3)):
        switch += paced(1.5 * w * i, 1.5 * w, 2 * r, ctx.n, ctx.key(), tag=2 + i, node=i)
    return [Phase("round-robin 3x", shots), Phase("node switch 2x", switch)]


def _scope_seen(ctx: Context, judgement: evidence.Judgement) -> str:
    """Which scope the admissions fit: the declared one (no over-admission), the other one, or neither."""
    other = judgement.judge(evidence.OTHER_SCOPE)
    declared_ok = judgement.over() == 0
    other_ok = other is not None and sum(other.tally.over.values()) == 0
    if ctx.policy.scope == GLOBAL:
        if declared_ok:
            return "global"
        return f"per node (each of the {ctx.n} nodes alone)" if other_ok else "neither global nor per node"
    if judgement.under() == 0:
        return "per node"
    return "global (shared by the nodes)" if judgement.scope_like() else "neither per node nor global"


def grade_scope(ctx: Context, outcomes: list[Outcome], _history: list[Record]) -> list[Result]:
    results = []
    for check, outcome in zip((SCOPE_ROUND_ROBIN, SCOPE_NODE_SWITCH), outcomes, strict=False):
        judgement = evidence.replay(ctx.policy, ctx.n, [outcome])
        records = evidence.records_of([outcome])
        admitted, limited, _ = evidence.counts(records)
        model = sum(evidence.expected(ctx.spec, ctx.policy.scope, records))
        seen = _scope_seen(ctx, judgement)
        expected = f"{ctx.policy.scope} enforcement: {model} admitted (the model)"
        if check is SCOPE_NODE_SWITCH:
            per_node = []
            for i in range(min(ctx.n, 3)):
                mine = [r for r in records if r.tag == 2 + i]
                per_node.append(f"{ctx.nodes[i]} {sum(1 for r in mine if r.admitted)}/{len(mine)}")
            observed = f"enforced {seen}: admitted " + ", ".join(per_node) + " in turn"
        else:
            observed = f"enforced {seen}: {admitted} admitted, {limited} limited of {len(records)}"
        details = {"scope_seen": seen, "admitted": admitted, "model": model}
        base = _decided(ctx, judgement, [outcome], shadow=True, scope_case=True)
        if base:
            results.append(_result(check, base[0], expected, observed, base[1], **details))
        elif abs(admitted - model) <= ctx.slack(model):
            results.append(_result(check, OK, expected, observed, **details))
        else:
            results.append(
                _result(
                    check,
                    NON_STRICT,
                    expected,
                    observed,
                    f"{admitted - model:+d} admissions from the exact model, by less than the replay can prove",
                    **details,
                )
            )
    return results


# -- RLC-5 volleys ---------------------------------------------------------------------------------------------------

VOLLEY = Check(
    "RLC-5.1",
    "Volley at one instant across all nodes",
    "The limit plus k requests for a fresh partition, released at the same instant over every node (4 volleys): "
    "no more are admitted than the declared model allows within the time the decisions took; more means a "
    "lost-update race between concurrent requests or nodes.",
    "Per volley: admissions against the most the model allows a fresh partition for decisions within [first start - "
    "skew, last answer + skew]: FAILED above; NON-STRICT below the capacity; INCONCLUSIVE when that span is so long "
    "the model admits the whole volley.",
)
VOLLEYS = 4


def volley_size(ctx: Context) -> int:
    """Requests in one volley: the capacity plus k for each partition (one, or one per node for a per-node limit)."""
    cap = ctx.capacity
    return (cap + max(ctx.n, math.ceil(cap / 4), 2)) * ctx.scale


def volley_applies(ctx: Context) -> str | None:
    size = volley_size(ctx)
    if size > MAX_VOLLEY:
        return f"a volley of {size} requests (capacity {ctx.capacity} + k) is beyond {MAX_VOLLEY} at once"
    return None


def plan_volleys(ctx: Context) -> list[Phase]:
    size = volley_size(ctx)
    # mid-window (phases start on a window edge): an epoch-aligned fixed window holds the whole volley
    return [
        Phase(
            f"volley {i + 1}", volley(0.5 * ctx.window, size, ctx.n, ctx.key(i), tag=i + 1), late_ok=0.25 * ctx.window
        )
        for i in range(VOLLEYS)
    ]


def volley_bound(ctx: Context, first: float, last: float) -> int:
    """The most admissions the declared model allows a fresh partition for decisions made within [first, last]."""
    s, d = ctx.spec, last - first
    if ctx.bucket:
        return math.floor(s.capacity + s.rate * d + 1e-9)
    if s.algorithm == SLIDING_WINDOW_COUNTER:
        return s.limit + 2 + math.floor(s.rate * d)
    if s.algorithm == FIXED_WINDOW and s.alignment == EPOCH:
        return s.limit * (math.floor(last / s.window) - math.floor(first / s.window) + 1)
    if s.algorithm == FIXED_WINDOW and s.alignment == ANY:
        return s.limit * (math.floor(d / s.window) + 2)
    return s.limit * (math.floor(d / s.window) + 1)  # sliding log, first-request fixed window


def grade_volleys(ctx: Context, outcomes: list[Outcome], _history: list[Record]) -> list[Result]:
    judgement = evidence.replay(ctx.policy, ctx.n, outcomes)
    size = volley_size(ctx)
    skew = ctx.policy.skew
    grades, seen, reasons, figures, over = [], [], [], [], []
    for i, outcome in enumerate(outcomes):
        records = [r for r in outcome.records if r.code in ANSWERED]
        if not records:
            grades.append(INCONCLUSIVE)
            reasons.append(f"volley {i + 1} got no answer")
            continue
        released = max(r.start for r in records) - min(r.start for r in records)
        # per partition: the most the model admits for decisions within the span they took
        bound = admitted = 0
        first = last = records[0].start
        for group in ctx.groups(records).values():
            first = min(r.start for r in group) - skew
            if ctx.delays:  # a limiter that delays admissions decides on arrival: the rest is its queue
                last = max(r.start for r in group) + latency_cap(ctx.window) + skew
            else:
                last = max(r.end for r in group) + skew
            mine = sum(1 for r in group if r.admitted)
            most = volley_bound(ctx, first, last)
            if mine > most:  # the first partition over its bound is the one to report
                bound, admitted = most, mine
                break
            bound, admitted = bound + most, admitted + mine
        seen.append(f"{admitted}")
        figures.append(
            {
                "admitted": admitted,
                "bound": bound,
                "released_ms": round(released * 1000, 2),
                "decided_ms": round((last - first) * 1000, 2),
            }
        )
        if admitted > bound:
            grades.append(FAILED)
            over.append(
                f"volley {i + 1}: {admitted} of {len(records)} admitted, at most {bound} for decisions within "
                f"{_ms(last - first)}"
            )
        elif bound >= len(records):
            grades.append(INCONCLUSIVE)
            reasons.append(
                f"volley {i + 1}: its decisions spread over {_ms(last - first)} (released within "
                f"{_ms(released)}, answered slowly): within that long the model admits all of it, so nothing could "
                "be caught"
            )
        elif ctx.spec.algorithm == FIXED_WINDOW and ctx.spec.alignment == ANY and admitted > ctx.limit + 1:
            grades.append(NON_STRICT)
            reasons.append(
                f"volley {i + 1}: {admitted} admitted, more than the limit: a race, or a window edge inside the volley "
                "(declare --window-alignment to tell)"
            )
        elif admitted < (ctx.capacity - 1 - 0.02 * ctx.capacity) * ctx.scale:
            grades.append(NON_STRICT)
            reasons.append(f"volley {i + 1}: only {admitted} admitted at once of a capacity of {ctx.capacity}")
        else:
            grades.append(OK)
    per = " per node" if ctx.scale > 1 else ""
    expected = (
        f"at most {ctx.capacity}{per} of {size // ctx.scale}{per} per volley (+ what the model refills while they "
        "are decided)"
    )
    observed = (
        "admitted "
        + " / ".join(seen)
        + (f"; released within {max(f['released_ms'] for f in figures):.1f} ms" if figures else "")
    )
    if over:
        reasons.insert(
            0,
            f"{len(over)} of {len(outcomes)} volleys admitted more than the model allows ({over[0]}): concurrent "
            "requests lost each other's updates, or the nodes do not share the limit (RLC-4 tells which)",
        )
    grade = worst(*grades) if grades else INCONCLUSIVE
    reason = "; ".join(reasons)
    if judgement.disagrees:
        grade, reason = FAILED, reason or judgement.reason(list(ctx.nodes))
    elif grade != FAILED:
        doubt = evidence.unhealthy(outcomes, list(ctx.nodes))
        if doubt:
            grade, reason = INCONCLUSIVE, doubt
    return [_result(VOLLEY, grade, expected, observed, reason, volleys=figures, size=size)]


# -- RLC-6 window edges ------------------------------------------------------------------------------------------

EDGES = Check(
    "RLC-6.1",
    "Bursts at a window edge",
    "Bursts of the limit just before and just after a window edge (and one window after the first): a sliding "
    "window (sliding-log) admits no more than the limit in any window; a fixed window's edge effect and alignment "
    "(epoch or first request) are reported.",
    PROVEN
    + (
        "a sliding log: OK; a fixed window: INFORMATIONAL with the edge effect and the alignment that fits best "
        "among six exact models (NON-STRICT when it is not the declared one); others INFORMATIONAL."
    ),
)


def edge_margin(ctx: Context) -> float:
    return max(0.04 * ctx.window, ctx.spread + 0.005)


def edges_apply(ctx: Context) -> str | None:
    m = edge_margin(ctx)
    if 6 * m >= ctx.window:
        return (
            f"the window ({ctx.window:g}s) is too short for bursts {m * 1000:.0f} ms clear of its edges (the timing "
            "allowance); declare a longer --window or a smaller --clock-skew"
        )
    return None


def plan_edges(ctx: Context) -> list[Phase]:
    w, m, n = ctx.window, edge_margin(ctx), (ctx.limit + 2) * ctx.scale
    key = ctx.key()
    shots = (
        burst(w - 3 * m, n, 2 * m, ctx.n, key, tag=1)
        + burst(w + m, n, 2 * m, ctx.n, key, tag=2)
        + burst(2 * w - 2 * m, n, m, ctx.n, key, tag=3)
    )
    return [Phase("edges", shots)]


def _candidates(ctx: Context) -> list[tuple[str, Spec]]:
    s = ctx.spec
    tb_burst = s.burst if s.algorithm == TOKEN_BUCKET else 0
    lb_burst = s.burst if s.algorithm == LEAKY_BUCKET else 0
    base = replace(s, alignment=ANY, delay=False)
    return [
        ("fixed window aligned to the epoch", replace(base, algorithm=FIXED_WINDOW, alignment=EPOCH)),
        ("fixed window from the first request", replace(base, algorithm=FIXED_WINDOW, alignment=FIRST_REQUEST)),
        ("sliding log", replace(base, algorithm=SLIDING_LOG)),
        ("sliding-window counter", replace(base, algorithm=SLIDING_WINDOW_COUNTER)),
        ("token bucket", replace(base, algorithm=TOKEN_BUCKET, burst=tb_burst)),
        ("leaky bucket", replace(base, algorithm=LEAKY_BUCKET, burst=lb_burst)),
    ]


def grade_edges(ctx: Context, outcomes: list[Outcome], _history: list[Record]) -> list[Result]:
    judgement = evidence.replay(ctx.policy, ctx.n, outcomes)
    records = [r for r in evidence.records_of(outcomes) if r.code in ANSWERED]
    fits = []
    for name, spec in _candidates(ctx):
        model = evidence.expected(spec, ctx.policy.scope, records)
        fits.append((sum(1 for r, ok in zip(records, model, strict=True) if ok != r.admitted), name, spec))
    best = min(f[0] for f in fits)
    declared_name = next((name for _, name, spec in fits if _same(spec, ctx.spec)), None)
    best_names = [name for miss, name, _ in fits if miss == best]
    best_name = declared_name if declared_name in best_names else best_names[0]
    if best_name.startswith("fixed window aligned"):
        alignment = "epoch"
    elif best_name.startswith("fixed window from"):
        alignment = "first request"
    else:
        alignment = f"none (no fixed-window edge: fits a {best_name})"
    bursts = [sum(1 for r in records if r.tag == t and r.admitted) for t in (1, 2, 3)]
    groups = ctx.groups(records).values()
    most = max((evidence.most_in_window([r.start for r in g if r.admitted], ctx.window) for g in groups), default=0)
    ratio = most / ctx.limit
    expected_most = {
        SLIDING_LOG: f"at most {ctx.limit} in any window",
        FIXED_WINDOW: f"up to {2 * ctx.limit} across an edge (a fixed window's edge effect)",
    }.get(ctx.spec.algorithm, "the declared model's admissions")
    expected = (
        f"{expected_most}; declared alignment: {ctx.spec.alignment if ctx.spec.algorithm == FIXED_WINDOW else 'n/a'}"
    )
    observed = (
        f"admitted {bursts[0]} / {bursts[1]} / {bursts[2]} (before / after the edge / a window later): "
        f"{most} in one window = {_x(ratio)} the limit; windows aligned: {alignment}"
    )
    details = {
        "bursts_admitted": bursts,
        "most_in_one_window": most,
        "edge_effect": round(ratio, 3),
        "alignment_seen": alignment,
        "fits": {name: miss for miss, name, _ in fits},
    }
    base = _decided(ctx, judgement, outcomes)
    if base:
        return [_result(EDGES, base[0], expected, observed, base[1], **details)]
    s = ctx.spec
    if s.algorithm == SLIDING_LOG:
        if most <= ctx.limit + ctx.slack(0) - 1:
            return [_result(EDGES, OK, expected, observed, **details)]
        return [
            _result(
                EDGES,
                NON_STRICT,
                expected,
                observed,
                "more than the limit in one window, by less than the replay can prove",
                **details,
            )
        ]
    if s.algorithm == FIXED_WINDOW and s.alignment != ANY:
        wanted = "epoch" if s.alignment == EPOCH else "first request"
        if alignment != wanted:
            return [
                _result(
                    EDGES,
                    NON_STRICT,
                    expected,
                    observed,
                    f"declared windows aligned to the {wanted}, but they behave as {alignment}",
                    **details,
                )
            ]
    return [_result(EDGES, INFORMATIONAL, expected, observed, **details)]


def _same(a: Spec, b: Spec) -> bool:
    if a.algorithm != b.algorithm:
        return False
    return a.algorithm != FIXED_WINDOW or a.alignment == b.alignment


# -- RLC-7 recovery -----------------------------------------------------------------------------------------------

RECOVERY = Check(
    "RLC-7.1",
    "Recovery after exhaustion",
    "After a burst exhausts the limit, the first request admitted again comes when the declared model admits it: "
    "not earlier (over-admission), not later (under-admission).",
    PROVEN
    + (
        "OK when the first admitted probe (probes every max(window/100, 2/rate)) is the exact model's within the "
        "probe spacing and allowance; else NON-STRICT."
    ),
)
RECOVERY_ADVICE = Check(
    "RLC-7.2",
    "Retry-After of the exhausting rejections",
    "A client that waits what Retry-After says is admitted when it comes back (RFC 6585 section 4, RFC 9110 "
    "section 10.2.3); a Retry-After earlier than the recovery sends it into another rejection.",
    "OK when a client coming back after the first rejection's Retry-After is not early; NON-STRICT when Retry-After "
    "is missing or sends clients back before the readmission (FAILED with --strict-headers).",
)


def probe_spacing(ctx: Context) -> float:
    return max(ctx.window / 100, 2 / ctx.rate)


def plan_recovery(ctx: Context) -> list[Phase]:
    cap, w, key = ctx.capacity, ctx.window, ctx.key()
    count = (cap + max(3, math.ceil(0.2 * cap))) * ctx.scale
    span = min(0.1 * w, cap / (10 * ctx.rate))
    start = 0.3 * w
    p = probe_spacing(ctx)  # per partition: every node of a per-node limit gets its probes this often
    probes = paced(start + span + p, 2.2 * w, ctx.scale / p, ctx.n, key, tag=2)
    return [Phase("recovery", burst(start, count, span, ctx.n, key, tag=1) + probes)]


def grade_recovery(ctx: Context, outcomes: list[Outcome], _history: list[Record]) -> list[Result]:
    judgement = evidence.replay(ctx.policy, ctx.n, outcomes)
    records = evidence.records_of(outcomes)
    exhaust = [r for r in records if r.tag == 1]
    probes = [r for r in records if r.tag == 2]
    model = dict(zip(map(id, records), evidence.expected(ctx.spec, ctx.policy.scope, records), strict=True))
    end = max((r.start for r in exhaust), default=outcomes[0].t0)
    seen = next((r for r in probes if r.admitted), None)
    wanted = next((r for r in probes if model[id(r)] and r.code in ANSWERED), None)
    tolerance = (
        probe_spacing(ctx)
        + ctx.spread
        + (ctx.window / ctx.limit if ctx.spec.algorithm == SLIDING_WINDOW_COUNTER else 0)
    )

    def after(r: Record | None) -> str:
        return "never within the probes" if r is None else f"{(r.start - end) * 1000:.0f} ms after the burst"

    expected = f"readmitted {after(wanted)} (the model; within {_ms(tolerance)}: probe spacing and timing allowance)"
    observed = (
        f"readmitted {after(seen)}; {sum(1 for r in exhaust if r.limited)} of {len(exhaust)} of the burst limited"
    )
    details = {
        "readmitted_after_s": None if seen is None else round(seen.start - end, 4),
        "model_after_s": None if wanted is None else round(wanted.start - end, 4),
        "tolerance_s": round(tolerance, 4),
    }
    base = _decided(ctx, judgement, outcomes)
    if base:
        first = _result(RECOVERY, base[0], expected, observed, base[1], **details)
    elif not any(r.limited for r in exhaust):
        first = _result(RECOVERY, INCONCLUSIVE, expected, observed, "the burst did not exhaust the limit", **details)
    elif seen is None and wanted is None:
        first = _result(RECOVERY, OK, expected, observed, **details)
    elif seen is not None and wanted is not None and abs(seen.start - wanted.start) <= tolerance:
        first = _result(RECOVERY, OK, expected, observed, **details)
    else:
        direction = "earlier" if wanted is None or (seen is not None and seen.start < wanted.start) else "later"
        first = _result(
            RECOVERY,
            NON_STRICT,
            expected,
            observed,
            f"readmitted {direction} than the model, by less than the replay can prove",
            **details,
        )
    return [first, _grade_advice(ctx, outcomes, exhaust, seen, tolerance)]


def _grade_advice(
    ctx: Context, outcomes: list[Outcome], exhaust: list[Record], seen: Record | None, tolerance: float
) -> Result:
    rejected = [r for r in exhaust if r.limited]
    check = RECOVERY_ADVICE
    expected = "Retry-After on every rejection, not before the limit readmits"
    if not rejected:
        return _result(check, INCONCLUSIVE, expected, "no rejection", "the burst did not exhaust the limit")
    waits = [(r, fields.retry_after(r.field(RETRY_AFTER), r.field(DATE))) for r in rejected]
    given = [(r, s) for r, s in waits if isinstance(s, float)]
    first_reading = fields.read(rejected[0].fields)
    t = first_reading.reset
    t_text = f"; RateLimit t={t:g}" if t is not None else ""
    if not given:
        malformed = any(s is False for _, s in waits)
        return _result(
            check,
            _header_grade(ctx, NON_STRICT),
            expected,
            ("malformed Retry-After" if malformed else "no Retry-After") + t_text,
            "no usable Retry-After on the rejections: clients can only guess when to come back (RFC 6585 lets a "
            "429 omit it)",
        )
    if seen is None:
        return _result(
            check,
            INFORMATIONAL,
            expected,
            f"Retry-After {given[0][1]:g}s{t_text}",
            "the limit did not readmit within the probes: Retry-After could not be compared",
        )
    early = [(r, s) for r, s in given if r.end + s < seen.start - tolerance]
    r0, s0 = given[0]
    slack = r0.end + s0 - seen.start
    observed = f"Retry-After {s0:g}s{t_text}: a client honouring it comes back {slack:+.3f}s from the first readmission"
    details = {
        "retry_after_s": s0,
        "ratelimit_t": t,
        "early": len(early),
        "rejections": len(rejected),
        "slack_s": round(slack, 4),
    }
    if early:
        return _result(
            check,
            _header_grade(ctx, NON_STRICT),
            expected,
            observed,
            f"{len(early)} of {len(given)} rejections said to come back before the limit readmitted",
            **details,
        )
    if len(given) < len(rejected):
        return _result(
            check,
            _header_grade(ctx, NON_STRICT),
            expected,
            observed,
            f"{len(rejected) - len(given)} of {len(rejected)} rejections had no usable Retry-After",
            **details,
        )
    return _result(check, OK, expected, observed, **details)


# -- RLC-8 headers -------------------------------------------------------------------------------------------------

RETRY_AFTER_CHECK = Check(
    "RLC-8.1",
    "Retry-After on every rejection",
    "Every rejection carries Retry-After as delay-seconds or an HTTP-date (RFC 9110 section 10.2.3 grammar: MUST; "
    "its presence on a 429 is a MAY of RFC 6585 section 4 that clients rely on: SHOULD here).",
    "FAILED for a malformed Retry-After; NON-STRICT for a missing one (FAILED with --strict-headers); INCONCLUSIVE "
    "without a rejection.",
)
FIELDS_CHECK = Check(
    "RLC-8.2",
    "RateLimit and RateLimit-Policy fields",
    f"Rate-limit fields follow the current {DRAFT} text: Structured Fields lists, q and r non-negative Integers, w "
    "a positive Integer (MUST); earlier generations (draft-07, RateLimit-Limit/-Remaining/-Reset, X-RateLimit-*) "
    "are accepted as NON-STRICT; the advertised policy matches the declared one.",
    "FAILED when a MUST of the current text is broken; NON-STRICT for earlier generations only, or an advertised "
    "policy other than the declared one (FAILED with --strict-headers); INFORMATIONAL without fields.",
)
REMAINING_CHECK = Check(
    "RLC-8.3",
    "Remaining quota within the quota",
    "The remaining quota an answer advertises is never above the quota of its policy (r <= q, Remaining <= Limit).",
    "NON-STRICT for a remaining above the quota (FAILED with --strict-headers); NOT APPLICABLE when no answer "
    "advertises one.",
)
RESET_CHECK = Check(
    "RLC-8.4",
    "Reset within the window; Retry-After not before it",
    f"The reset (effective window t) is never beyond the policy's window, and a Retry-After does not point before "
    f"the end of the effective window ({DRAFT} section 6: SHOULD NOT).",
    "NON-STRICT for a reset beyond the window or a Retry-After before it (FAILED with --strict-headers); NOT "
    "APPLICABLE without a reset.",
)


def plan_headers(ctx: Context) -> list[Phase]:
    w, r, cap, key = ctx.window, ctx.offered, ctx.capacity, ctx.key()
    count = (math.ceil(1.5 * cap) + 2) * ctx.scale
    span = min(0.1 * w, cap / (10 * ctx.rate))
    shots = paced(0.0, 0.5 * w, 0.5 * r, ctx.n, key) + burst(0.6 * w, count, span, ctx.n, key, tag=1)
    shots += paced(0.6 * w + span + 0.05 * w, w, 0.5 * r, ctx.n, key, tag=2)
    return [Phase("headers", shots)]


def grade_headers(ctx: Context, outcomes: list[Outcome], history: list[Record]) -> list[Result]:
    answers = [r for r in history if r.code in ANSWERED]
    doubt = None if any(o.records for o in outcomes) else "the case's own traffic got no answer"
    rejections = [r for r in answers if r.limited]
    results = []

    # 8.1
    missing = [r for r in rejections if r.field(RETRY_AFTER) is None]
    malformed = [r for r in rejections if fields.retry_after(r.field(RETRY_AFTER), r.field(DATE)) is False]
    expected = "Retry-After on every rejection"
    observed = f"{len(rejections) - len(missing)} of {len(rejections)} rejections carry Retry-After" + (
        f", {len(malformed)} malformed" if malformed else ""
    )
    if not rejections:
        results.append(_result(RETRY_AFTER_CHECK, INCONCLUSIVE, expected, observed, "no rejection was seen"))
    elif malformed:
        results.append(
            _result(
                RETRY_AFTER_CHECK,
                FAILED,
                expected,
                observed,
                f"Retry-After: {malformed[0].field(RETRY_AFTER)} is neither delay-seconds nor an HTTP-date",
            )
        )
    elif missing:
        results.append(
            _result(
                RETRY_AFTER_CHECK,
                _header_grade(ctx, NON_STRICT),
                expected,
                observed,
                f"{len(missing)} rejections without Retry-After: clients can only guess when to come back",
            )
        )
    else:
        results.append(_result(RETRY_AFTER_CHECK, OK, expected, observed))

    # 8.2
    readings = [fields.read(r.fields) for r in answers]
    seen = [g for g in fields.GENERATIONS if any(g in x.generations for x in readings)]
    broken = [m for x in readings for m in x.malformed]
    latest = sum(1 for x in readings if fields.LATEST in x.generations)
    expected = f"{fields.DESCRIPTIONS[fields.LATEST]}; q={_quota_text(ctx)}" + (
        f";w={ctx.window:g}" if float(ctx.window).is_integer() else " (no w: the window is under a second)"
    )
    observed = ("fields seen: " + "; ".join(seen) if seen else "no rate-limit fields") + (
        f" ({latest} of {len(answers)} answers in the current form)" if latest else ""
    )
    advertised = {(x.quota, x.window) for x in readings if x.quota is not None and fields.LATEST in x.generations}
    mismatch = [(q, w) for q, w in advertised if not _advertises_declared(ctx, q, w)]
    details = {
        "generations": seen,
        "malformed": len(broken),
        "advertised": sorted(f"q={q};w={w}" for q, w in advertised),
    }
    if broken:
        results.append(
            _result(FIELDS_CHECK, FAILED, expected, observed, f"{len(broken)} malformed: {broken[0]}", **details)
        )
    elif not seen:
        results.append(
            _result(
                FIELDS_CHECK,
                INFORMATIONAL,
                expected,
                observed,
                "the cluster advertises no rate-limit fields",
                **details,
            )
        )
    elif fields.LATEST not in seen:
        results.append(
            _result(
                FIELDS_CHECK,
                _header_grade(ctx, NON_STRICT),
                expected,
                observed,
                f"only an earlier generation of the draft ({', '.join(seen)}); the current text uses RateLimit and "
                "RateLimit-Policy lists",
                **details,
            )
        )
    elif mismatch:
        q, w = mismatch[0]
        results.append(
            _result(
                FIELDS_CHECK,
                _header_grade(ctx, NON_STRICT),
                expected,
                observed + f"; advertises q={q}" + (f";w={w:g}" if w is not None else ""),
                f"the advertised policy (q={q}"
                + (f", w={w:g}" if w is not None else "")
                + f") is not the declared one "
                f"({ctx.described()})",
                **details,
            )
        )
    else:
        results.append(_result(FIELDS_CHECK, OK, expected, observed, **details))

    # 8.3
    above = [m for x in readings for m in x.above_quota]
    with_remaining = sum(1 for x in readings if x.remaining is not None)
    expected = "remaining <= quota on every answer"
    observed = f"{with_remaining} answers advertise a remaining quota" + (
        f", {len(above)} above the quota" if above else ""
    )
    if not with_remaining:
        results.append(
            _result(REMAINING_CHECK, NOT_APPLICABLE, expected, observed, "no answer advertises a remaining quota")
        )
    elif above:
        results.append(_result(REMAINING_CHECK, _header_grade(ctx, NON_STRICT), expected, observed, above[0]))
    else:
        limited_with_quota = sum(1 for r, x in zip(answers, readings, strict=True) if r.limited and x.remaining)
        note = (
            f"{limited_with_quota} rejections said quota remained (the draft mandates no correlation with the status)"
            if limited_with_quota
            else ""
        )
        results.append(_result(REMAINING_CHECK, OK, expected, observed, note))

    # 8.4
    beyond, early_ra, with_reset = [], [], 0
    for r, x in zip(answers, readings, strict=True):
        if x.reset is None:
            continue
        with_reset += 1
        window = x.window if x.window is not None else ctx.window
        if x.reset > math.ceil(window - 1e-9):
            beyond.append(f"t={x.reset:g} beyond the {window:g}s window")
        ra = fields.retry_after(r.field(RETRY_AFTER), r.field(DATE))
        if isinstance(ra, float) and ra < x.reset:
            early_ra.append(f"Retry-After {ra:g} before the end of the effective window t={x.reset:g}")
    expected = "t <= window on every answer; Retry-After >= t"
    observed = (
        f"{with_reset} answers advertise a reset"
        + (f", {len(beyond)} beyond the window" if beyond else "")
        + (f", {len(early_ra)} with Retry-After before it" if early_ra else "")
    )
    if not with_reset:
        results.append(_result(RESET_CHECK, NOT_APPLICABLE, expected, observed, "no answer advertises a reset"))
    elif beyond or early_ra:
        results.append(_result(RESET_CHECK, _header_grade(ctx, NON_STRICT), expected, observed, (beyond + early_ra)[0]))
    else:
        results.append(_result(RESET_CHECK, OK, expected, observed))
    if doubt:
        for r in results:
            if r.grade not in (FAILED,):
                r.grade, r.reason = INCONCLUSIVE, doubt
    for r in results:
        r.details["answers_checked"] = len(answers)
    return results


def _quota_text(ctx: Context) -> str:
    return f"{ctx.limit}" if ctx.capacity == ctx.limit else f"{ctx.limit} or {ctx.capacity}"


def _advertises_declared(ctx: Context, q: int, w: float | None) -> bool:
    if q not in (ctx.limit, ctx.capacity):
        return False
    return w is None or not float(ctx.window).is_integer() or abs(w - ctx.window) < 1e-9


# -- RLC-9 keys ----------------------------------------------------------------------------------------------------

ISOLATION = Check(
    "RLC-9.1",
    "A noisy key leaves quiet keys alone",
    "One API key at ten times its limit does not change what quiet keys (at half their limit) are admitted: "
    "each key is its own partition.",
    PROVEN + "NON-STRICT for quiet-key rejections the allowance explains; else OK.",
)
FAIRNESS = Check(
    "RLC-9.2",
    "Fairness over equal keys",
    "Keys offering the same load (twice their limit) get the same goodput: Jain's fairness index over them is "
    "close to 1.",
    PROVEN + "OK when Jain's index over the keys' goodput in windows 2-3 is 0.95 or more; else NON-STRICT.",
)


def needs_keys(ctx: Context) -> str | None:
    if ctx.keys >= 2:
        return None
    return "needs 2 or more API keys: give --api-keys or --api-key-count"


def plan_keys(ctx: Context) -> list[Phase]:
    w, r = ctx.window, ctx.offered
    quiet = min(ctx.keys - 1, 3)
    noisy = paced(0.0, 3 * w, 10 * r, ctx.n, 0, tag=1)
    for k in range(1, quiet + 1):
        noisy += paced(k * 0.13 / r, 3 * w, 0.5 * r, ctx.n, k, tag=2)
    fair = []
    equal = min(ctx.keys, 4)
    for k in range(equal):
        fair += paced(k * 0.5 / (equal * r), 3 * w, 2 * r, ctx.n, k, tag=3)
    return [Phase("noisy key", noisy), Phase("equal keys", fair)]


def jain(values: list[float]) -> float:
    total = sum(values)
    squares = sum(v * v for v in values)
    return total * total / (len(values) * squares) if squares else 1.0


def grade_keys(ctx: Context, outcomes: list[Outcome], _history: list[Record]) -> list[Result]:
    results = []
    noisy_outcome = outcomes[0]
    judgement = evidence.replay(ctx.policy, ctx.n, [noisy_outcome], flag=lambda r: r.tag == 1)
    records = evidence.records_of([noisy_outcome])
    quiet = [r for r in records if r.tag == 2]
    loud = [r for r in records if r.tag == 1]
    q_ok, q_no, _ = evidence.counts(quiet)
    l_ok, _, _ = evidence.counts(loud)
    model = evidence.expected(ctx.spec, ctx.policy.scope, records)
    model_quiet_limited = sum(
        1 for r, ok in zip(records, model, strict=True) if r.tag == 2 and not ok and r.code in ANSWERED
    )
    keys = sorted({r.key for r in quiet})
    noisy_most = ctx.offered * 3 * ctx.window + ctx.capacity * ctx.scale
    expected = f"quiet keys: all {len(quiet)} admitted; noisy key: about {noisy_most:.0f} admitted"
    observed = f"quiet keys ({len(keys)}): {q_ok} admitted, {q_no} limited; noisy key: {l_ok} of {len(loud)} admitted"
    base = _decided(ctx, judgement, [noisy_outcome])
    if base:
        results.append(_result(ISOLATION, base[0], expected, observed, base[1]))
    elif q_no <= model_quiet_limited:
        results.append(_result(ISOLATION, OK, expected, observed))
    else:
        results.append(
            _result(
                ISOLATION,
                NON_STRICT,
                expected,
                observed,
                f"{q_no} quiet-key rejections, by less than the replay can prove",
            )
        )

    if len(outcomes) > 1:
        fair = outcomes[1]
        judgement = evidence.replay(ctx.policy, ctx.n, [fair])
        records = evidence.records_of([fair])
        lo, hi = fair.t0 + ctx.window, fair.t0 + 3 * ctx.window
        per_key = {k: 0 for k in sorted({r.key for r in records})}
        for r in records:
            if r.admitted and lo <= r.start < hi:
                per_key[r.key] += 1
        goodput = [v / (hi - lo) for v in per_key.values()]
        index = jain(goodput) if goodput else 0.0
        expected = f"Jain's index 1.00 over {len(per_key)} keys; each {ctx.offered:g}/s"
        observed = f"Jain's index {index:.3f}; goodput per key " + ", ".join(f"{g:.1f}/s" for g in goodput)
        base = _decided(ctx, judgement, [fair])
        details = {"jain": round(index, 4), "goodput": [round(g, 3) for g in goodput]}
        if base:
            results.append(_result(FAIRNESS, base[0], expected, observed, base[1], **details))
        elif index >= 0.95:
            results.append(_result(FAIRNESS, OK, expected, observed, **details))
        else:
            results.append(
                _result(FAIRNESS, NON_STRICT, expected, observed, "equal keys got unequal goodput", **details)
            )
    return results


# -- RLC-10 clients that honour Retry-After --------------------------------------------------------------------------

HONOURING = Check(
    "RLC-10.1",
    "Clients that honour Retry-After",
    "Informational: clients offering three times the limit that wait what Retry-After says after a rejection, "
    "compared with the same load ignoring it: the share of requests wasted on rejections and the goodput each gets.",
    "INFORMATIONAL (FAILED when the replay proves a disagreement).",
)
CLIENTS = 8


def plan_honouring(ctx: Context) -> list[Phase]:
    w, r = ctx.window, ctx.offered
    ignoring = paced(0.0, 3 * w, 3 * r, ctx.n, ctx.key(), tag=1)
    honouring = Clients(CLIENTS, 0.0, 3 * w, CLIENTS / (3 * r), ctx.key(), fallback=w, tag=2, nodes=ctx.n)
    return [Phase("ignoring Retry-After", ignoring), Phase("honouring Retry-After", clients=[honouring])]


def grade_honouring(ctx: Context, outcomes: list[Outcome], _history: list[Record]) -> list[Result]:
    judgement = evidence.replay(ctx.policy, ctx.n, outcomes)
    rows, details = [], {}
    for name, outcome in zip(("ignoring", "honouring"), outcomes, strict=False):
        records = [r for r in outcome.records if r.code in ANSWERED]
        span = 3 * ctx.window
        ok = sum(1 for r in records if r.admitted)
        wasted = sum(1 for r in records if r.limited)
        share = wasted / len(records) if records else 0.0
        goodput = ok / span / ctx.offered
        rows.append(f"{name}: {len(records)} sent, {share:.0%} rejected, goodput {_x(goodput)} the limit")
        details[name] = {"sent": len(records), "rejected_share": round(share, 4), "goodput_x": round(goodput, 4)}
    honoured = outcomes[1].records if len(outcomes) > 1 else []
    said = [fields.retry_after(r.field(RETRY_AFTER), r.field(DATE)) for r in honoured if r.limited]
    waits = [s for s in said if isinstance(s, float)]
    note = (
        f"median Retry-After {median(waits):g}s"
        if waits
        else f"no Retry-After: clients waited {ctx.window:g}s (one window)"
    )
    observed = "; ".join(rows) + f"; {note}"
    expected = "fewer rejections for honouring clients, at a goodput near the limit"
    base = _decided(ctx, judgement, outcomes)
    if base:
        return [_result(HONOURING, base[0], expected, observed, base[1], **details)]
    return [_result(HONOURING, INFORMATIONAL, expected, observed, **details)]


# -- the catalogue ------------------------------------------------------------------------------------------------

CATALOGUE: list[Case] = [
    Case(1, (STEADY,), plan_steady, grade_steady),
    Case(2, (BURST_2X,), plan_burst(2, 3), grade_burst(BURST_2X, 3)),
    Case(2, (BURST_5X,), plan_burst(5, 2), grade_burst(BURST_5X, 2)),
    Case(2, (BURST_CAPACITY,), plan_capacity, grade_capacity),
    Case(3, (GOODPUT, REJECT_LATENCY), plan_overload, grade_overload),
    Case(4, (SCOPE_ROUND_ROBIN, SCOPE_NODE_SWITCH), plan_scope, grade_scope, needs_nodes),
    Case(5, (VOLLEY,), plan_volleys, grade_volleys, volley_applies),
    Case(6, (EDGES,), plan_edges, grade_edges, edges_apply),
    Case(7, (RECOVERY, RECOVERY_ADVICE), plan_recovery, grade_recovery),
    Case(8, (RETRY_AFTER_CHECK, FIELDS_CHECK, REMAINING_CHECK, RESET_CHECK), plan_headers, grade_headers),
    Case(9, (ISOLATION, FAIRNESS), plan_keys, grade_keys, needs_keys),
    Case(10, (HONOURING,), plan_honouring, grade_honouring),
]
CHECKS: list[Check] = [check for case in CATALOGUE for check in case.checks]
IDS: list[str] = [check.id for check in CHECKS]


@dataclass
class Selected:
    """A case and the checks of it a run reports."""

    case: Case
    checks: list[Check] = field(default_factory=list)


def selected(ids: list[str]) -> list[Selected]:
    out = []
    for case in CATALOGUE:
        checks = [c for c in case.checks if c.id in ids]
        if checks:
            out.append(Selected(case, checks))
    return out


def not_applicable(check: Check, reason: str) -> Result:
    return _result(check, NOT_APPLICABLE, "", "", reason)
