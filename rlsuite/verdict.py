"""Did the cluster honour its declared limit? Pure: the replay's findings, the run's counts and the policy in, the
verdict out.

- **FAIL** when the replay proves a disagreement with the declared model: admissions no timing of the decisions
  could fit in it (over-admission), or rejections it would have admitted under any timing (under-admission).
- **INCONCLUSIVE** when the run could not have told: a node answered nothing, most requests failed, the generator
  fell short of its target, counts are missing (a worker was lost), or the load could not have revealed a cluster
  admitting twice the limit (a 2-node cluster enforcing the limit per node).
- **PASS** otherwise, with the smallest over-admission this run would have caught.

With several declared policies each gets its own verdict, on the requests that fell under it, and the run's is the
worst of them: FAIL if any failed, else INCONCLUSIVE if any was, else PASS.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import Any

from rlsuite.classify import ALLOWED, ERROR, LIMITED
from rlsuite.models import Spec
from rlsuite.policy import Policy, candidates
from rlsuite.rates import stage_rates
from rlsuite.replay import GLOBAL, PER_NODE, Judge, Replay
from rlsuite.schedule import MODES, Schedule
from rlsuite.tally import RunView

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
EXIT_CODES = {PASS: 0, FAIL: 3, INCONCLUSIVE: 4}
KEEP_UP = 0.95  # a stage that sent less than this share of its target makes the run inconclusive
MIN_ANSWERED = 0.5  # below this share of requests answered (200 or limited), the run tested little
# Span lengths, in windows, over which detectability is worked out (the replay itself has no bins), besides one
# window less the timing allowance (what a sliding log is judged over).
SPANS = (1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600)
DECLARED, COUNTS_REJECTED, PER_NODE_ROLE, CANDIDATE, SHADOW = (
    "declared",
    "counts-rejected",
    "per-node",
    "candidate",
    "shadow",
)


@dataclass
class ModeRow:
    mode: str
    offered: int
    admitted: int
    limited: int
    errors: int
    over: int = 0  # admissions the model cannot fit under any timing
    under: int = 0  # rejections the model would have admitted under any timing
    result: str = PASS


@dataclass
class Fit:
    model: str
    over: int
    under: int


@dataclass
class Verdict:
    result: str
    policy: str
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    rows: list[ModeRow] = field(default_factory=list)
    detectable: float | None = None  # smallest over-admission factor this run would have caught
    detectable_span: float | None = None  # over spans of this many seconds
    # a cluster admitting twice the limit, replayed on this run's requests: admissions the replay caught over it
    double_caught: int = 0
    timing: str = ""
    fits: list[Fit] = field(default_factory=list)
    best_fit: str = ""
    findings: dict[str, int] = field(default_factory=dict)
    examples: dict[str, str] = field(default_factory=dict)
    advertised: list[str] = field(default_factory=list)
    availability: dict[str, float] = field(default_factory=dict)  # node -> share of its requests answered
    outages: dict[str, list[list[int]]] = field(default_factory=dict)  # node -> [from, to) seconds mostly failing
    name: str = ""  # the policy's name, with several declared
    policies: list[Verdict] = field(default_factory=list)  # with several declared: the verdict on each

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.result]

    def row(self, mode: str) -> ModeRow | None:
        return next((r for r in self.rows if r.mode == mode), None)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["exit_code"] = self.exit_code
        data["detectable_text"] = self.detectable_text() if not self.policies else ""
        data["policies"] = [p.to_json() for p in self.policies]
        return data

    def detectable_text(self) -> str:
        if self.detectable is None:
            text = "no partition was offered more than the model admits in any span of this run's schedule"
        else:
            text = (
                f"a cluster admitting {self.detectable:.2f}x the limit or more would have been caught "
                f"(over {self.detectable_span:g}s of this run's schedule)"
            )
        caught = f"caught ({self.double_caught} admissions over the model)" if self.double_caught else "NOT caught"
        return f"{text}; twice the limit (2 nodes each enforcing it alone), replayed on this run's requests: {caught}"

    def render(self) -> str:
        if self.policies:
            return self._render_policies()
        lines = [f"Verdict: {self.result.upper()}  (declared: {self.policy})"]
        lines.extend(self._table())
        lines.append("Over: admissions no timing of the decisions fits in the model; Under: rejections it would admit")
        lines.append(f"Detectable: {self.detectable_text()}")
        if self.fits:
            lines.append("Models: " + "; ".join(f"{f.model}: {f.over} over, {f.under} under" for f in self.fits))
            lines.append(f"Best fit: {self.best_fit}")
        lines.append(
            "Node availability: "
            + ", ".join(
                f"{node} {share:.1%}" + "".join(f" (down {a}s-{b}s)" for a, b in self.outages.get(node, []))
                for node, share in self.availability.items()
            )
        )
        lines.append(f"Timing: {self.timing}")
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

    def _table(self) -> list[str]:
        lines = [f"{'Mode':<8}{'Offered':>9}{'Admitted':>10}{'Limited':>9}{'Errors':>8}{'Over':>8}{'Under':>8}  Result"]
        for r in self.rows:
            lines.append(
                f"{r.mode:<8}{r.offered:>9}{r.admitted:>10}{r.limited:>9}{r.errors:>8}{r.over:>8}{r.under:>8}"
                f"  {r.result.upper() if r.result != PASS else PASS}"
            )
        return lines

    def _render_policies(self) -> str:
        """The run's verdict over every policy and what holds for all of them, then each policy's own, indented
        under a line naming it."""
        results = ", ".join(f"{p.name} {p.result.upper()}" for p in self.policies)
        lines = [f"Verdict: {self.result.upper()}  ({len(self.policies)} policies: {results})"]
        lines.extend(self._table())
        lines.append("Over: admissions no timing of the decisions fits in the model; Under: rejections it would admit")
        shared = ("Node availability:", "Advertised by the target:", "Header findings:", "  e.g. ", "Over: ")
        own = [p.render().splitlines() for p in self.policies]
        lines.extend(line for line in own[0] if line.startswith(shared[:4]))
        for p, text in zip(self.policies, own, strict=True):
            lines.append(f"Policy {p.name}: {p.result.upper()}  (declared: {p.policy})")
            lines.extend("  " + line for line in text[1:] if not line.startswith(shared))
        return "\n".join(lines)


def combine(verdicts: list[Verdict]) -> Verdict:
    """The run's verdict over several policies: the worst result; the rows summed per mode."""
    results = {v.result for v in verdicts}
    result = FAIL if FAIL in results else INCONCLUSIVE if INCONCLUSIVE in results else PASS
    out = Verdict(result=result, policy="; ".join(f"{v.name}: {v.policy}" for v in verdicts), policies=verdicts)
    for mode in MODES:
        rows = [r for v in verdicts for r in v.rows if r.mode == mode]
        total = ModeRow(mode, *(sum(getattr(r, f) for r in rows) for f in ("offered", "admitted", "limited", "errors")))
        total.over, total.under = sum(r.over for r in rows), sum(r.under for r in rows)
        total.result = FAIL if any(r.result == FAIL for r in rows) else PASS
        out.rows.append(total)
    # the run catches what its least sensitive policy catches
    factors = [v.detectable for v in verdicts]
    out.detectable = None if None in factors else max(factors)  # type: ignore[type-var]
    out.reasons = [f"{v.name}: {reason}" for v in verdicts for reason in v.reasons]
    first = verdicts[0]
    out.availability, out.outages, out.findings = first.availability, first.outages, first.findings
    out.examples, out.advertised = first.examples, first.advertised
    return out


def judge(
    run: RunView,
    policies: list[Policy],
    schedule: Schedule,
    t0: float,
    elapsed: float,
    nodes: list[str],
    keys: tuple[str, ...],
    incidents: list[str] | None,
    until: float | None,
) -> Verdict | None:
    """The verdict on ``run`` under the declared ``policies`` (one per replay of ``run.replay``, in order), None
    without a replay. The replay first takes every request that started before ``until``, or all of them (None: the
    run is over and every request is in); ``elapsed``: seconds of the run whose counts are all in."""
    if run.replay is None:
        return None
    if until is None:
        run.replay.finish()
    else:
        run.replay.advance(until)
    keys = keys or ("",)
    verdicts = [
        evaluate(
            policy,
            run,
            replay,
            schedule,
            t0,
            elapsed,
            nodes,
            partitions_of(policy, keys),
            incidents,
            # one policy that takes every request is judged on all of them, as the single-policy flags say
            alone=len(policies) == 1 and policy.route.matches_all,
        )
        for policy, replay in zip(policies, run.replay.replays, strict=True)
    ]
    return verdicts[0] if len(verdicts) == 1 else combine(verdicts)


def partitions_of(policy: Policy, keys: tuple[str, ...]) -> int:
    """How many limit partitions (API keys) the load of ``policy`` is spread over."""
    return max(1, sum(1 for k in keys if fnmatchcase(k, policy.route.key or "*")))


def build_replay(policy: Policy, nodes: int, t0: float) -> Replay:
    """The replay of a run: the declared model first, then the variants that may explain a disagreement (the
    same limit with rejected requests counted; the same limit enforced by each node alone), or for ``auto`` every
    candidate model."""
    spec, scope = policy.spec, policy.scope
    if policy.auto:
        models = candidates(policy)
        judges = [(s, scope, CANDIDATE) for s in models]
    else:
        models = [spec]
        judges = [(spec, scope, DECLARED)]
        if not spec.counts_rejected:
            judges.append((_variant(spec, counts_rejected=True), scope, COUNTS_REJECTED))
    if scope == GLOBAL and nodes > 1:
        judges.append((judges[0][0], PER_NODE, PER_NODE_ROLE))
    judges.extend((s, scope, SHADOW) for s in models)
    return Replay(judges, policy.skew, t0)


def _variant(spec: Spec, **changes: Any) -> Spec:
    return Spec(**{**asdict(spec), **changes})


def evaluate(
    policy: Policy,
    run: RunView,
    replay: Replay,
    schedule: Schedule,
    t0: float,
    elapsed: float,
    nodes: list[str],
    partitions: int,
    incidents: list[str] | None = None,
    alone: bool = True,
) -> Verdict:
    """The verdict on what the replay has seen so far (``replay.finish()`` first for the final one). Not ``alone``
    (one of several declared policies): on the requests that fell under ``policy`` only."""
    described = policy.describe() if alone else f"{policy.describe()}; {policy.route.describe()}"
    verdict = Verdict(result=PASS, policy=described, name=policy.name)
    only = None if alone else policy.name
    verdict.rows = [
        ModeRow(
            mode,
            run.count(mode=mode, policy=only),
            run.count(mode=mode, outcome=ALLOWED, policy=only),
            run.count(mode=mode, outcome=LIMITED, policy=only),
            run.count(mode=mode, outcome=ERROR, policy=only),
        )
        for mode in MODES
    ]
    verdict.availability, verdict.outages = _availability(run, t0, nodes)
    verdict.findings = _findings_by_rule(run)
    verdict.examples = dict(sorted(run.examples.items()))
    verdict.advertised = sorted(run.advertised)
    judge = _chosen(replay, verdict)
    spec = judge.spec
    verdict.timing = (
        f"each decision placed anywhere from its request's start to its end, widened by --clock-skew "
        f"{policy.skew:g}s; {replay.replayed} requests replayed, {judge.unjudged} admissions in flight longer "
        f"than {judge.cap:g}s counted but not judged"
    )
    missing: list[str] = list(incidents or [])
    if replay.stragglers:
        missing.append(f"{replay.stragglers} requests were reported after their time had been replayed")

    tally = judge.tally
    for row in verdict.rows:
        row.over, row.under = tally.over[row.mode], tally.under[row.mode]
    over, under = sum(tally.over.values()), sum(tally.under.values())
    failed = False
    if over:
        failed = True
        verdict.reasons.append(_over_reason(replay, judge, verdict, nodes, partitions))
    if under:
        if missing:
            verdict.reasons.append(
                f"{under} rejections look wrong, but some requests are missing from the replay, and they may be "
                "what filled the limit: under-admission is not judged"
            )
        else:
            failed = True
            verdict.reasons.append(_under_reason(replay, judge, nodes, partitions))
    for row in verdict.rows:
        if row.over or (row.under and not missing):
            row.result = FAIL

    answered = sum(r.admitted + r.limited for r in verdict.rows)
    sent = answered + sum(r.errors for r in verdict.rows)
    doubts: list[str] = []
    silent = [node for node, share in verdict.availability.items() if share == 0.0]
    if sent == 0:
        doubts.append("no request was answered: nothing was tested")
    elif answered < MIN_ANSWERED * sent:
        doubts.append(f"only {answered / sent:.0%} of the requests were answered (200 or limited): little was tested")
    if silent and sent:
        doubts.append(f"node(s) {', '.join(silent)} answered nothing: their share of the limit was never tested")
    for rate in stage_rates(run, schedule, t0, elapsed):
        stage, achieved = rate.stage, rate.achieved
        if achieved < KEEP_UP * stage.rps:
            doubts.append(
                f"stage {stage.index} ({stage.mode}) sent {achieved / stage.rps:.1%} of its target {stage.rps:g}/s: "
                "the generator did not keep up, so the limit was not tested as declared"
            )
    doubts.extend(f"{m}: the counts are incomplete" for m in missing)
    # failed requests may never have reached the limiter: the load it saw was that much smaller; a policy sees its
    # share of the schedule's requests, each spending its declared cost
    load = answered / sent if sent else 0.0
    if not alone:
        everything = run.count()
        load *= sent / everything if everything else 0.0
    load *= policy.route.cost
    verdict.detectable, verdict.detectable_span = detectable(
        spec,
        policy.scope,
        judge.spread,
        schedule,
        elapsed,
        len(nodes),
        partitions,
        round(load, 3),
    )
    shadow = next((j for j in replay.judges if j.role == SHADOW and j.spec == spec), None)
    verdict.double_caught = sum(shadow.tally.over.values()) if shadow is not None else 0
    if not failed and not verdict.double_caught:
        doubts.append(
            "this run could not tell the declared limit from twice it: 2 nodes each enforcing it alone, replayed on "
            "this run's requests, would have passed; offer more than twice the limit per API key for several "
            "windows (raise --burst-multiplier or --steady-rps, or lengthen --burst-duration)"
        )
    if policy.strict_headers and verdict.findings:
        failed = True
        verdict.reasons.append(
            f"{sum(verdict.findings.values())} header findings with --strict-headers: "
            + ", ".join(f"{rule} x{n}" for rule, n in verdict.findings.items())
        )
    if failed:
        verdict.result = FAIL
        verdict.notes.extend(doubts)
    elif doubts:
        verdict.result = INCONCLUSIVE
        verdict.reasons.extend(doubts)
    return verdict


def _chosen(replay: Replay, verdict: Verdict) -> Judge:
    """The judge whose model the verdict is about: the declared one, or for auto the best fit (fewest
    disagreements; the first listed among equals)."""
    candidates_ = [j for j in replay.judges if j.role == CANDIDATE]
    if not candidates_:
        return replay.declared
    verdict.fits = [
        Fit(j.spec.describe(), sum(j.tally.over.values()), sum(j.tally.under.values())) for j in candidates_
    ]
    best = min(candidates_, key=lambda j: j.tally.disagreements)
    equal = [
        j.spec.describe() for j in candidates_ if j is not best and j.tally.disagreements == best.tally.disagreements
    ]
    verdict.best_fit = best.spec.describe() + (f" (this load fits equally: {'; '.join(equal)})" if equal else "")
    return best


def _where(judge: Judge, node: int, key: int, nodes: list[str], partitions: int) -> str:
    name = nodes[node] if 0 <= node < len(nodes) else f"#{node}"
    return (f" for API key #{key + 1}" if partitions > 1 else "") + f" on node {name}"


def _over_reason(replay: Replay, judge: Judge, verdict: Verdict, nodes: list[str], partitions: int) -> str:
    tally = judge.tally
    first = tally.first_over
    over = sum(tally.over.values())
    # how many times what the model could admit of the same requests, in the mode where that is most
    factor = max(r.admitted / max(1, r.admitted - r.over) for r in verdict.rows if r.over)
    text = (
        f"{over} admissions more than the model allows ({judge.spec.describe()}), even at the most lenient timing: "
        f"{factor:.2f}x what it could admit of the same requests; the first at {first.at:.3f}s"
        f"{_where(judge, first.node, first.key, nodes, partitions)} ({first.detail}): the cluster over-admits"
    )
    per_node = next((j for j in replay.judges if j.role == PER_NODE_ROLE), None)
    if per_node is not None and not sum(per_node.tally.over.values()):
        text += f", as if each of the {len(nodes)} nodes enforced the limit alone"
    return text


def _under_reason(replay: Replay, judge: Judge, nodes: list[str], partitions: int) -> str:
    tally = judge.tally
    first = tally.first_under
    under = sum(tally.under.values())
    text = (
        f"{under} requests were limited although the model ({judge.spec.describe()}) would have admitted them at "
        f"any timing; the first at {first.at:.3f}s{_where(judge, first.node, first.key, nodes, partitions)} "
        f"({first.detail}): the cluster under-admits"
    )
    variant = next((j for j in replay.judges if j.role == COUNTS_REJECTED), None)
    if variant is not None and variant.tally.disagreements == 0:
        text += (
            "; its decisions fit the same limit with rejected requests counted toward it (goodput collapses under "
            "overload): declare --limit-counts-rejected if that is intended"
        )
    return text


@lru_cache(maxsize=64)
def detectable(
    spec: Spec,
    scope: str,
    spread: float,
    schedule: Schedule,
    elapsed: float,
    nodes: int,
    partitions: int,
    load: float = 1.0,
) -> tuple[float | None, float | None]:
    """The smallest factor f such that a cluster admitting f times the limit (for example f nodes each enforcing
    it alone) would have been caught by this run's schedule, and over what span. ``load``: units of the limit the
    partitions see per request of the schedule (the share answered, of the policy's requests, times their cost).

    Over a span of x seconds such a cluster admits at least the load offered to a partition, capped at f times the
    limit's rate at every moment; it is caught when that exceeds what the lenient model admits in x seconds. A
    window sliding over a piecewise-constant rate is fullest when it starts or ends at a stage boundary, and the
    schedule repeats every --burst-every seconds, so only the boundaries of its first and last periods are tried.
    """
    share = max(1, partitions) * (nodes if scope == PER_NODE else 1)
    stages = [s for s in schedule.stages(until=elapsed) if s.start < elapsed]
    pieces = [(s.start, min(s.end, elapsed), s.rps * load / share) for s in stages]
    starts_at = [start for start, _, _ in pieces]
    period = schedule.burst_every if schedule.burst_duration > 0 else elapsed
    best: tuple[float | None, float | None] = (None, None)
    for span in (0.999 * (spec.window - spread), *(k * spec.window for k in SPANS)):
        if span > elapsed + 1e-9:
            break
        bound = spec.max_admitted(span, spread)
        edges = {0.0, elapsed - span}
        for start, end, _ in pieces:
            if start <= 2 * period + span or end >= elapsed - 2 * period - span:
                edges.update((start, end - span))
        for t in edges:
            if not -1e-9 <= t <= elapsed - span + 1e-9:
                continue
            first = max(0, bisect_right(starts_at, t) - 1)
            segments = []
            for start, end, rate in pieces[first:]:
                if start >= t + span:
                    break
                d = min(end, t + span) - max(start, t)
                if d > 0:
                    segments.append((d, rate))
            factor = _least_factor(segments, spec.rate, bound)
            if factor is not None and (best[0] is None or factor < best[0]):
                best = (factor, span)
    return best


def _least_factor(segments: list[tuple[float, float]], rate: float, bound: float) -> float | None:
    """The least f with sum(duration x min(offered rate, f x rate)) > bound, or None when even all of the offered
    load would not exceed it."""
    if sum(d * r for d, r in segments) <= bound:
        return None
    lo, hi = 0.0, max(r for _, r in segments) / rate
    for _ in range(40):
        mid = (lo + hi) / 2
        if sum(d * min(r, mid * rate) for d, r in segments) > bound:
            hi = mid
        else:
            lo = mid
    return hi


def _availability(run: RunView, t0: float, nodes: list[str]) -> tuple[dict[str, float], dict[str, list[list[int]]]]:
    """Per node: the share of requests answered (200 or limited), and the seconds where most of them failed."""
    answered = dict.fromkeys(nodes, 0)
    sent = dict.fromkeys(nodes, 0)
    failing: dict[str, list[int]] = {node: [] for node in nodes}
    for (second, node), (allowed, limited, error) in sorted(run.seconds.items()):
        if node not in sent:
            continue
        answered[node] += allowed + limited
        sent[node] += allowed + limited + error
        total = allowed + limited + error
        if total and error / total > 0.5:
            failing[node].append(second - int(t0))
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
    return {node: (answered[node] / sent[node] if sent[node] else 0.0) for node in nodes}, outages


def _findings_by_rule(run: RunView) -> dict[str, int]:
    out: dict[str, int] = {}
    for (rule, _), n in sorted(run.findings.items()):
        out[rule] = out.get(rule, 0) + n
    return out
