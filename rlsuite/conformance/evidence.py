"""What the records of a case prove: the replay's judgement, what an exact limiter of the declared model would have
admitted, and whether the case ran as designed.

The replay (``rlsuite.replay``) places each decision anywhere in its request's time in flight, widened by the clock
skew, and proves disagreements only: an admission no timing fits in the model (over), a rejection the model would
admit at any timing (under). Beside the declared model it replays the same limit with rejected requests counted,
the same limit in the other scope (per node for a global one), and a cluster admitting twice the limit (whether
this case's traffic could have caught one at all). The exact limiters (``rlsuite.reference``) give the expected
figures: what the declared model admits of the same requests, each decided at its start.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from rlsuite import reference
from rlsuite.conformance.traffic import Outcome, Record
from rlsuite.models import Spec
from rlsuite.policy import Policy
from rlsuite.replay import ADMITTED, BURST_FLAG, EVENT_WIDTH, GLOBAL, LIMITED, PER_NODE, UNKNOWN, UNSENT, Judge, Replay

DECLARED, COUNTS_REJECTED, OTHER_SCOPE, SHADOW = "declared", "counts-rejected", "other-scope", "shadow"
MIN_ANSWERED = 0.5  # below this share of answered requests a case tested little
DROPPED_OK = 0.01  # shots the generator may fail to send before a case is not run as designed
LATE_OK = 0.05  # shots it may send late


@dataclass
class Judgement:
    """The replay of one case."""

    replay: Replay
    nodes: int
    admitted: int = 0  # admissions seen
    model: int = 0  # what the declared model admits of the same requests, decided at their starts
    other: int = 0  # ... the same limit in the other scope (per node for a global limit)

    def judge(self, role: str) -> Judge | None:
        return next((j for j in self.replay.judges if j.role == role), None)

    @property
    def declared(self) -> Judge:
        return self.replay.declared

    def over(self, flagged: bool | None = None) -> int:
        return _count(self.declared.tally.over, flagged)

    def under(self, flagged: bool | None = None) -> int:
        return _count(self.declared.tally.under, flagged)

    @property
    def disagrees(self) -> bool:
        return bool(self.over() or self.under())

    def shadow_caught(self) -> bool:
        shadow = self.judge(SHADOW)
        return shadow is not None and sum(shadow.tally.over.values()) > 0

    def fits(self, role: str) -> bool:
        """Whether the variant ``role`` explains everything (no disagreement at all)."""
        judge = self.judge(role)
        return judge is not None and judge.tally.disagreements == 0

    def scope_like(self) -> bool:
        """Whether the other scope explains what was seen: no disagreement with it, and the admissions are closer to
        what it admits than to what the declared model admits (a small over-admission, a race, fits a per-node limit
        too, but is not one)."""
        scope = self.judge(OTHER_SCOPE)
        if scope is None or not self.disagrees or scope.tally.disagreements:
            return False
        return abs(self.admitted - self.other) < abs(self.admitted - self.model)

    def reason(self, nodes: list[str] | None = None, scope_case: bool = False) -> str:
        """One sentence: what was proven, where first, and which variant fits instead."""
        tally = self.declared.tally
        parts = []
        if self.over():
            first = tally.first_over
            parts.append(
                f"{self.over()} admissions beyond the model at the most lenient timing (the first {first.at:.3f}s "
                f"into the case on {_node(first.node, nodes)})"
            )
        if self.under():
            first = tally.first_under
            parts.append(
                f"{self.under()} rejections the model would have admitted at any timing (the first {first.at:.3f}s "
                f"into the case on {_node(first.node, nodes)}, {first.detail})"
            )
        text = "; ".join(parts)
        scope = self.judge(OTHER_SCOPE)
        if self.scope_like() and scope.scope == PER_NODE:
            text += (
                f": it fits each of the {self.nodes} nodes enforcing the limit alone"
                if scope_case
                else f": as many as if each of the {self.nodes} nodes enforced the limit alone (RLC-4 tells whether "
                "they do, or concurrent requests lose updates)"
            )
        elif self.scope_like():
            text += ": it fits one limit shared by all nodes"
        elif self.under() and self.fits(COUNTS_REJECTED):
            text += (
                ": it fits the same limit with rejected requests counted (declare --limit-counts-rejected if intended)"
            )
        return text


def _count(by_mode: dict[str, int], flagged: bool | None) -> int:
    if flagged is None:
        return sum(by_mode.values())
    return by_mode["burst" if flagged else "steady"]


def _node(index: int, nodes: list[str] | None) -> str:
    return nodes[index] if nodes and 0 <= index < len(nodes) else f"node #{index + 1}"


def replay(policy: Policy, nodes: int, outcomes: list[Outcome], flag=None) -> Judgement:
    """Replay every record of a case. ``flag(record)`` marks the records whose disagreements are counted apart
    (they go in the replay's burst column): a noisy key, the part of a case under test."""
    spec, scope = policy.spec, policy.scope
    judges: list[tuple[Spec, str, str]] = [(spec, scope, DECLARED)]
    if not spec.counts_rejected:
        judges.append((replace(spec, counts_rejected=True), scope, COUNTS_REJECTED))
    if nodes > 1:
        judges.append((spec, PER_NODE if scope == GLOBAL else GLOBAL, OTHER_SCOPE))
    judges.append((spec, scope, SHADOW))
    t0 = min((o.t0 for o in outcomes), default=0.0)
    rp = Replay(judges, policy.skew, t0)
    flat: list = []
    for record in records_of(outcomes):
        code = record.code | (BURST_FLAG if flag is not None and flag(record) else 0)
        flat.extend((record.start, record.duration, code, record.node, max(0, record.key)))
    assert len(flat) % EVENT_WIDTH == 0
    rp.add(flat)
    rp.finish()
    records = records_of(outcomes)
    return Judgement(
        rp,
        nodes,
        sum(1 for r in records if r.code == ADMITTED),
        sum(expected(spec, scope, records)),
        sum(expected(spec, PER_NODE if scope == GLOBAL else GLOBAL, records)) if nodes > 1 else 0,
    )


def planned(outcomes: list[Outcome]) -> list[Outcome]:
    """The same phases as if every shot had been sent on time and answered at once (admitted, as far as the shadow
    is concerned: it decides each request itself): what the traffic could show at best."""
    out = []
    for o in outcomes:
        ideal = Outcome(o.phase, o.t0)
        ideal.records = [
            Record(s.tag, o.t0 + s.due, o.t0 + s.due, 0.0005, 200, ADMITTED, s.node, s.key) for s in o.phase.shots
        ]
        out.append(ideal)
    return out


def could_catch_double(policy: Policy, nodes: int, outcomes: list[Outcome]) -> bool:
    """Whether this traffic, sent exactly as planned, would catch a cluster admitting twice the limit."""
    return replay(policy, nodes, planned(outcomes)).shadow_caught()


def records_of(outcomes: list[Outcome]) -> list[Record]:
    return sorted((r for o in outcomes for r in o.records), key=lambda r: r.start)


def expected(spec: Spec, scope: str, records: list[Record]) -> list[bool]:
    """What an exact limiter of ``spec`` admits of ``records`` (in order of start), each decided at its start, per
    partition (API key, and node for a per-node limit). Requests that never reached the limiter are left out (False)."""
    limiters: dict[tuple[int, int], reference.Limiter] = {}
    out = []
    for r in records:
        if r.code == UNSENT:
            out.append(False)
            continue
        where = (r.node if scope == PER_NODE else 0, max(0, r.key))
        limiter = limiters.get(where)
        if limiter is None:
            limiter = limiters[where] = reference.build(spec)
        out.append(limiter.hit(r.start))
    return out


def unhealthy(outcomes: list[Outcome], nodes: list[str], drop_ok: float = DROPPED_OK) -> str | None:
    """Why a case did not run as designed, or None: shots dropped or sent late (the generator fell short), a
    worker's records missing, a node that answered nothing, most requests failed."""
    planned = sum(o.phase.size for o in outcomes) or 1
    dropped = sum(o.dropped for o in outcomes)
    shots = sum(len(o.phase.shots) for o in outcomes) or 1
    late = sum(o.late() for o in outcomes)
    missing = sum(o.missing for o in outcomes)
    lost = sorted({w for o in outcomes for w in o.lost})
    if lost or missing:
        return (
            f"{missing} requests of worker(s) {', '.join(lost) or '?'} were never reported: the counts are incomplete"
        )
    if dropped > drop_ok * planned:
        return (
            f"the generator fell short: {dropped} of {planned} requests could not be sent on time (all users busy); "
            "run fewer cases at once, or on a faster machine, or use workers"
        )
    if late > LATE_OK * shots:
        return (
            f"the generator fell short: {late} of {shots} requests started late; run on a less loaded machine or "
            "use workers"
        )
    records = [r for o in outcomes for r in o.records]
    if not records:
        return "no request was sent"
    answered = [r for r in records if r.code in (ADMITTED, LIMITED)]
    if len(answered) < MIN_ANSWERED * len(records):
        return f"only {len(answered)} of {len(records)} requests were answered (200 or a rejection): little was tested"
    used = {r.node for r in records}
    silent = sorted(i for i in used if not any(r.node == i and r.code in (ADMITTED, LIMITED) for r in records))
    if silent:
        names = ", ".join(_node(i, nodes) for i in silent)
        return f"node(s) {names} answered nothing: their part of the case was never tested"
    return None


def admitted_in(records: list[Record], start: float, end: float) -> int:
    return sum(1 for r in records if r.admitted and start <= r.start < end)


def counts(records: list[Record]) -> tuple[int, int, int]:
    """(admitted, limited, errors) of these records."""
    a = sum(1 for r in records if r.code == ADMITTED)
    b = sum(1 for r in records if r.code == LIMITED)
    return a, b, sum(1 for r in records if r.code in (UNKNOWN, UNSENT))


def most_in_window(times: list[float], window: float) -> int:
    """The most of these (sorted) times in any half-open span of ``window`` seconds."""
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best
