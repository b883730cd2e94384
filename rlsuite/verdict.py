"""Did the cluster honour its declared limit? The verdict arithmetic, pure: counts in, verdict out.

Admitted requests are counted by the second their request *started* (not completed), summed over all nodes and
workers (or per node for a per-node policy), per API key (each key is its own limit partition), and checked
window by window:

- fixed window: every window aligned to the Unix epoch admits at most ``limit``;
- sliding window: every ``window``-long span admits at most ``limit``;
- token bucket: every ``window``-long span admits at most ``burst + rate x window``, and over any interval ``t``
  the admitted count exceeds ``rate x t`` by at most ``burst``.

A window may hold ``2 x slack x offered rate`` more (requests in flight and clock skew at its two edges); the
tolerance is printed with the verdict. Over-admission fails, under-admission fails (steady windows offered below
the limit must not be limited more than ``max_limited_share``), and a run whose generator fell short of its target
is inconclusive: it did not test the limit as declared.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from rlsuite.classify import ALLOWED, ERROR, LIMITED
from rlsuite.console import stage_rates
from rlsuite.policy import FIXED_WINDOW, GLOBAL, TOKEN_BUCKET, Policy
from rlsuite.schedule import BURST, MODES, STEADY, Schedule
from rlsuite.tally import RunView

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
EXIT_CODES = {PASS: 0, FAIL: 3, INCONCLUSIVE: 4}
KEEP_UP = 0.95  # a stage that sent less than this share of its target makes the run inconclusive


@dataclass
class ModeRow:
    mode: str
    offered: int
    admitted: int
    limited: int
    errors: int
    max_admitted: int = 0  # most admitted in one checked window of this mode (one partition)
    bound: float = 0.0  # what that window could admit at most
    ratio: float = 0.0  # max_admitted / bound
    result: str = PASS


@dataclass
class Verdict:
    result: str
    policy: str
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rows: list[ModeRow] = field(default_factory=list)
    tolerance: str = ""
    excluded: str = ""
    findings: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    advertised: list[str] = field(default_factory=list)
    availability: dict[str, float] = field(default_factory=dict)  # node -> share of its requests answered
    outages: dict[str, list[list[int]]] = field(default_factory=dict)  # node -> [from, to) seconds mostly failing

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.result]

    def max_ratio(self, mode: str) -> float:
        return next((r.ratio for r in self.rows if r.mode == mode), 0.0)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["exit_code"] = self.exit_code
        return data

    def render(self) -> str:
        lines = [f"Verdict: {self.result.upper()}  (declared: {self.policy})"]
        lines.append(
            f"{'Mode':<8}{'Offered':>9}{'Admitted':>10}{'Limited':>9}{'Errors':>8}"
            f"{'Max/window':>12}{'Bound':>9}{'Ratio':>7}  Result"
        )
        for r in self.rows:
            lines.append(
                f"{r.mode:<8}{r.offered:>9}{r.admitted:>10}{r.limited:>9}{r.errors:>8}"
                f"{r.max_admitted:>12}{r.bound:>9.0f}{r.ratio:>7.2f}  {r.result.upper() if r.result != PASS else PASS}"
            )
        lines.append(
            "Node availability: "
            + ", ".join(
                f"{node} {share:.1%}" + "".join(f" (down {a}s-{b}s)" for a, b in self.outages.get(node, []))
                for node, share in self.availability.items()
            )
        )
        lines.append(f"Tolerance: {self.tolerance}")
        lines.append(f"Excluded: {self.excluded}")
        if self.advertised:
            lines.append(f"Advertised by the target: {'; '.join(self.advertised)}")
        if self.findings:
            lines.append("Header findings: " + ", ".join(f"{rule} x{n}" for rule, n in self.findings.items()))
            lines.extend(f"  e.g. {rule}: {example}" for rule, example in self.examples.items())
        else:
            lines.append("Header findings: none")
        lines.extend(f"Note: {note}" for note in self.notes)
        lines.extend(f"Reason: {reason}" for reason in self.reasons)
        return "\n".join(lines)


def evaluate(
    policy: Policy,
    run: RunView,
    schedule: Schedule,
    t0: float,
    elapsed: float,
    nodes: list[str],
    partitions: int,
    interrupted: bool = False,
    incidents: list[str] | None = None,
) -> Verdict:
    seconds = int(elapsed + 1e-9)
    excluded = "none (stages change by pacing, no user is stopped mid-request)"
    if interrupted and elapsed - seconds > 1e-6:
        excluded = f"the last partial second ({seconds}s-{elapsed:.1f}s): the run was stopped mid-request"
    excluded += "; failed requests (node outages, timeouts) count neither as admitted nor as limited"
    verdict = Verdict(result=PASS, policy=policy.describe(), excluded=excluded)
    verdict.availability, verdict.outages = _availability(run, t0, nodes)
    verdict.notes.append(
        "under-admission is checked in steady windows offered below the limit, except the window after a burst"
    )
    verdict.tolerance = (
        f"each window may admit its offered rate x {2 * policy.slack:g}s more (--verdict-slack {policy.slack:g}s "
        "of in-flight time and clock skew at either edge), at most its bound again, rounded up"
    )
    verdict.rows = [
        ModeRow(
            mode,
            run.count(mode=mode),
            run.count(mode=mode, outcome=ALLOWED),
            run.count(mode=mode, outcome=LIMITED),
            run.count(mode=mode, outcome=ERROR),
        )
        for mode in MODES
    ]
    rows = {r.mode: r for r in verdict.rows}
    verdict.findings = _findings_by_rule(run)
    verdict.examples = dict(sorted(run.examples.items()))
    verdict.advertised = sorted(run.advertised)
    if seconds < 1:
        verdict.result = INCONCLUSIVE
        verdict.reasons.append("less than one second of load: nothing to judge")
        return verdict

    modes = [schedule.stage_at(i + 0.5).mode for i in range(seconds)]
    admitted, offered, limited = _series(run, t0, seconds, policy.scope, partitions)
    span = min(policy.span, seconds)
    peak_ratio = 0.0
    for group in admitted:
        a, o, lim = _prefix(admitted[group]), _prefix(offered[group]), _prefix(limited[group])
        for start, end in _windows(policy, t0, seconds, span):
            n = end - start
            got, sent = a[end] - a[start], o[end] - o[start]
            bound = policy.burst + policy.rate * n if policy.algorithm == TOKEN_BUCKET else float(policy.limit)
            # requests offered within the slack of either edge may belong to the neighbouring window on the
            # limiter's clock; a correct limiter admits at most a bound's worth there, so that caps the tolerance
            tolerance = math.ceil(min(bound, 2 * policy.slack * sent / n))
            mode = BURST if BURST in modes[start:end] else STEADY
            row = rows[mode]
            ratio = got / bound
            # how far the offered load exceeds the long-run allowance: only above N x can a per-node cluster show
            peak_ratio = max(peak_ratio, sent / (policy.rate * n if policy.algorithm == TOKEN_BUCKET else bound))
            if ratio > row.ratio:
                row.max_admitted, row.bound, row.ratio = got, bound, ratio
            if got > bound + tolerance and row.result == PASS:
                row.result = FAIL
                verdict.reasons.append(
                    _over_reason(mode, got, bound, tolerance, n, start, group, policy, nodes, partitions)
                )
        if policy.algorithm == TOKEN_BUCKET:
            _check_any_interval(verdict, policy, admitted[group], offered[group], group, partitions)
        _check_under_admission(verdict, policy, a, o, lim, modes, span, group, partitions)

    if policy.scope == GLOBAL and len(nodes) > 1 and 0 < peak_ratio < len(nodes):
        verdict.notes.append(
            f"the busiest window offered {peak_ratio:.1f}x the declared rate: a cluster enforcing the limit "
            f"per node ({len(nodes)} nodes) could admit everything and still look right; offer more than "
            f"{len(nodes)}x (raise --burst-multiplier or --steady-rps) to catch it"
        )
    for rate in stage_rates(run, schedule, t0, elapsed):
        stage, achieved = rate.stage, rate.achieved
        if achieved < KEEP_UP * stage.rps:
            verdict.reasons.append(
                f"stage {stage.index} ({stage.mode}) sent {achieved / stage.rps:.1%} of its target "
                f"{stage.rps:g}/s: the generator did not keep up, so the limit was not tested as declared"
            )
            if verdict.result == PASS:
                verdict.result = INCONCLUSIVE
    for incident in incidents or []:
        verdict.reasons.append(incident + ": the counts are incomplete, so the run cannot pass")
        if verdict.result == PASS:
            verdict.result = INCONCLUSIVE
    if verdict.findings and policy.strict_headers:
        verdict.reasons.append(
            f"{sum(verdict.findings.values())} header findings with --strict-headers: "
            + ", ".join(f"{rule} x{n}" for rule, n in verdict.findings.items())
        )
        verdict.result = FAIL
    if any(r.result == FAIL for r in verdict.rows) or any("under-admits" in r for r in verdict.reasons):
        verdict.result = FAIL
    return verdict


def _availability(run: RunView, t0: float, nodes: list[str]) -> tuple[dict[str, float], dict[str, list[list[int]]]]:
    """Per node: the share of requests answered (200 or limited), and the seconds where most of them failed."""
    answered = dict.fromkeys(nodes, 0)
    sent = dict.fromkeys(nodes, 0)
    failing: dict[str, list[int]] = {node: [] for node in nodes}
    per_second: dict[tuple[str, int], list[int]] = {}
    for (second, node, _), (allowed, limited, error) in run.seconds.items():
        if node not in sent:
            continue
        answered[node] += allowed + limited
        sent[node] += allowed + limited + error
        mine = per_second.setdefault((node, second - int(t0)), [0, 0])
        mine[0] += error
        mine[1] += allowed + limited + error
    for (node, i), (error, total) in sorted(per_second.items()):
        if total and error / total > 0.5:
            failing[node].append(i)
    outages = {}
    for node, bad in failing.items():
        spans: list[list[int]] = []
        for i in bad:
            if spans and spans[-1][1] == i:
                spans[-1][1] = i + 1
            else:
                spans.append([i, i + 1])
        if spans:
            outages[node] = spans
    return {node: (answered[node] / sent[node] if sent[node] else 1.0) for node in nodes}, outages


def _findings_by_rule(run: RunView) -> dict[str, int]:
    out: dict[str, int] = {}
    for (rule, _), n in sorted(run.findings.items()):
        out[rule] = out.get(rule, 0) + n
    return out


def _series(
    run: RunView, t0: float, seconds: int, scope: str, partitions: int
) -> tuple[dict[Any, list[int]], dict[Any, list[int]], dict[Any, list[int]]]:
    """Per partition group (key, or node and key): admitted, answered-or-not offered, and limited per second."""
    admitted: dict[Any, list[int]] = {}
    offered: dict[Any, list[int]] = {}
    limited: dict[Any, list[int]] = {}
    base = int(t0)
    groups = {(key if scope == GLOBAL else (node, key)) for (_, node, key) in run.seconds} or {0}
    for group in groups:
        admitted[group], offered[group], limited[group] = [0] * seconds, [0] * seconds, [0] * seconds
    for (second, node, key), (allowed, lim, err) in run.seconds.items():
        i = second - base
        if 0 <= i < seconds:
            group = key if scope == GLOBAL else (node, key)
            admitted[group][i] += allowed
            limited[group][i] += lim
            offered[group][i] += allowed + lim + err
    return admitted, offered, limited


def _prefix(values: list[int]) -> list[int]:
    out = [0]
    for v in values:
        out.append(out[-1] + v)
    return out


def _windows(policy: Policy, t0: float, seconds: int, span: int) -> list[tuple[int, int]]:
    """Checked windows as [start, end) second offsets into the run."""
    if policy.algorithm == FIXED_WINDOW:
        base = int(t0)
        first = (base // span) * span  # windows aligned to the epoch, as fixed-window limiters count
        out = []
        start = first
        while start < base + seconds:
            out.append((max(start, base) - base, min(start + span, base + seconds) - base))
            start += span
        return out
    return [(i, i + span) for i in range(seconds - span + 1)]


def _partition(group: Any, partitions: int) -> str:
    node, key = (None, group) if not isinstance(group, tuple) else group
    where = f" on node {node}" if node is not None else ""
    return (f" for API key #{key + 1}" if partitions > 1 else "") + where


def _over_reason(
    mode: str,
    got: int,
    bound: float,
    tolerance: int,
    n: int,
    start: int,
    group: Any,
    policy: Policy,
    nodes: list[str],
    partitions: int,
) -> str:
    ratio = got / bound
    text = (
        f"{mode}: {got} requests admitted{_partition(group, partitions)} in the {n}s window from {start}s, "
        f"{ratio:.1f}x the bound of {bound:g} (tolerance +{tolerance}): the cluster over-admits"
    )
    if policy.scope == GLOBAL and len(nodes) > 1 and abs(ratio - len(nodes)) <= 0.25 * len(nodes):
        text += f", as if each of the {len(nodes)} nodes enforced the limit alone"
    return text


def _check_any_interval(
    verdict: Verdict, policy: Policy, admitted: list[int], offered: list[int], group: Any, partitions: int
) -> None:
    """Token bucket: over every interval t, admitted <= burst + rate x t (O(n) with running minima)."""
    rate = policy.rate
    best, best_from, best_to = 0.0, 0, 0
    low, low_at, total = 0.0, 0, 0
    for i, got in enumerate(admitted, start=1):
        total += got
        level = total - rate * i
        if level - low > best:
            best, best_from, best_to = level - low, low_at, i
        if level < low:
            low, low_at = level, i
    peak = max(offered) if offered else 0
    tolerance = math.ceil(2 * policy.slack * peak)
    if best > policy.burst + tolerance:
        got = sum(admitted[best_from:best_to])
        verdict.reasons.append(
            f"over the {best_to - best_from}s from {best_from}s, {got} requests were admitted"
            f"{_partition(group, partitions)}: {best:.0f} more than the rate allows, above the burst of "
            f"{policy.burst} (tolerance +{tolerance}): the cluster over-admits"
        )
        verdict.result = FAIL


def _check_under_admission(
    verdict: Verdict,
    policy: Policy,
    a: list[int],
    o: list[int],
    lim: list[int],
    modes: list[str],
    span: int,
    group: Any,
    partitions: int,
) -> None:
    """Steady windows offered below the limit should (almost) never be limited.

    The window right after a burst is left out: a burst may leave the bucket (or the window's count) spent, and
    the first steady requests limited then are the limiter working, not under-admitting.
    """
    answered = limited = 0
    for start in range(0, len(modes) - span + 1):
        end = start + span
        if BURST in modes[max(0, start - span) : end]:
            continue
        sent = o[end] - o[start]
        allowed_in_window = policy.limit if policy.algorithm != TOKEN_BUCKET else policy.rate * span
        if sent > allowed_in_window:
            continue
        answered += (a[end] - a[start]) + (lim[end] - lim[start])
        limited += lim[end] - lim[start]
    if answered and limited / answered > policy.max_limited_share:
        verdict.reasons.append(
            f"steady traffic offered below the limit was limited {limited / answered:.1%} of the time"
            f"{_partition(group, partitions)} (at most {policy.max_limited_share:.1%} tolerated): "
            "the cluster under-admits"
        )
