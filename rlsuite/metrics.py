"""The Prometheus view of the totals: a custom collector, read fresh on every scrape.

Counting happens in plain dicts (``tally``); this module only turns them into metric families, so the per-request
cost of Prometheus is zero and every label combination exists at 0 from the first scrape.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from rlsuite.classify import ERROR_KINDS, OUTCOMES
from rlsuite.headers import RULES
from rlsuite.routes import DEFAULT, UNMATCHED
from rlsuite.schedule import MODES
from rlsuite.status import Status
from rlsuite.tally import DROPPED, LATE, LATE_AFTER_SECONDS, Totals

# Upper bounds (seconds) of the latency histograms: a loopback limiter answers in well under a millisecond, a remote
# one in tens of milliseconds, and timeouts are seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

PREFIX = "rlsuite"


class TotalsCollector(Collector):
    def __init__(self, totals: Totals, status: Status, before_collect: Callable[[], None] = lambda: None) -> None:
        self._totals = totals
        self._status = status
        self._before_collect = before_collect

    def collect(self) -> Iterator[Metric]:
        self._before_collect()
        totals, status = self._totals, self._status
        requests = CounterMetricFamily(
            f"{PREFIX}_requests",
            "Requests sent to the rate-limiter nodes, by traffic mode, outcome (allowed=200, limited=rejection "
            "status, error=anything else), node and the declared policy they fell under.",
            labels=["mode", "outcome", "node", "policy"],
        )
        errors = CounterMetricFamily(
            f"{PREFIX}_errors", "Failed requests by mode, node and kind of failure.", labels=["mode", "node", "kind"]
        )
        for mode in MODES:
            for node in totals.nodes:
                for outcome in OUTCOMES:
                    for policy in totals.policy_names:
                        requests.add_metric(
                            [mode, outcome, node, policy], totals.requests.get((mode, outcome, node, policy), 0)
                        )
                for kind in ERROR_KINDS:
                    errors.add_metric([mode, node, kind], totals.errors.get((mode, node, kind), 0))
        yield requests
        yield errors

        latency = HistogramMetricFamily(
            f"{PREFIX}_request_duration_seconds",
            "Response time of requests as Locust measures it, by traffic mode and outcome.",
            labels=["mode", "outcome"],
        )
        service = _by_key(totals.latency.items(), width=2)
        for mode in MODES:
            for outcome in OUTCOMES:
                latency.add_metric([mode, outcome], *_buckets(service.get((mode, outcome), {})))
        yield latency
        intended = HistogramMetricFamily(
            f"{PREFIX}_intended_latency_seconds",
            "Response time counted from the request's intended send time (corrected for coordinated omission: "
            "includes any wait for a free user), by traffic mode.",
            labels=["mode"],
        )
        from_intended = _by_key(totals.intended.items(), width=1)
        for mode in MODES:
            intended.add_metric([mode], *_buckets(from_intended.get((mode,), {})))
        yield intended
        for what, text in (
            (LATE, f"Requests that started more than {LATE_AFTER_SECONDS:g}s after they were due (generator behind)."),
            (DROPPED, "Requests never sent: no user was free within --max-send-delay of their due time."),
        ):
            sends = CounterMetricFamily(f"{PREFIX}_{what}_sends", text, labels=["mode"])
            for mode in MODES:
                sends.add_metric([mode], totals.sends.get((mode, what), 0))
            yield sends

        current = GaugeMetricFamily(
            f"{PREFIX}_mode", "1 for the traffic mode running now, 0 for the others.", labels=["mode"]
        )
        for mode in MODES:
            current.add_metric([mode], 1.0 if status.running and status.mode == mode else 0.0)
        yield current
        yield GaugeMetricFamily(
            f"{PREFIX}_target_rps", "Target requests/s right now (0 when no run is going).", value=status.target_rps
        )
        yield GaugeMetricFamily(f"{PREFIX}_running", "1 while a run is going.", value=1.0 if status.running else 0.0)
        yield GaugeMetricFamily(
            f"{PREFIX}_run_start_timestamp_seconds",
            "Wall-clock start of the current or last run: a test boundary, since counters are never reset.",
            value=status.run_started,
        )

        findings = CounterMetricFamily(
            f"{PREFIX}_header_findings",
            "Rate-limit header conformance findings, by rule and node.",
            labels=["rule", "node"],
        )
        for rule in RULES:
            for node in totals.nodes:
                findings.add_metric([rule, node], totals.findings.get((rule, node), 0))
        yield findings
        verdict = status.verdict
        result = GaugeMetricFamily(
            f"{PREFIX}_verdict",
            "1 for the verdict so far on the current or last run (pass, fail, inconclusive); all 0 without a "
            "declared limit (--limit).",
            labels=["result"],
        )
        for name in ("pass", "fail", "inconclusive"):
            result.add_metric([name], 1.0 if verdict is not None and verdict.result == name else 0.0)
        yield result
        # per declared policy: the run's own verdict when there is one, each policy's when there are several
        by_policy = {p.name: p for p in verdict.policies} if verdict is not None and verdict.policies else {}
        if verdict is not None and not by_policy:
            by_policy = {verdict.name or DEFAULT: verdict}
        names = [p for p in totals.policy_names if p != UNMATCHED]
        policy_result = GaugeMetricFamily(
            f"{PREFIX}_policy_verdict",
            "1 for the verdict so far on each declared policy of the current or last run (pass, fail, inconclusive).",
            labels=["policy", "result"],
        )
        for policy in names:
            mine = by_policy.get(policy)
            for name in ("pass", "fail", "inconclusive"):
                policy_result.add_metric([policy, name], 1.0 if mine is not None and mine.result == name else 0.0)
        yield policy_result
        disagreements = GaugeMetricFamily(
            f"{PREFIX}_verdict_disagreements",
            "Decisions of the current or last run that the declared model cannot explain at any timing, by policy, "
            "mode and kind: over = admissions beyond it, under = rejections it would have admitted.",
            labels=["policy", "mode", "kind"],
        )
        for policy in names:
            mine = by_policy.get(policy)
            for mode in MODES:
                row = mine.row(mode) if mine is not None else None
                disagreements.add_metric([policy, mode, "over"], row.over if row else 0.0)
                disagreements.add_metric([policy, mode, "under"], row.under if row else 0.0)
        yield disagreements
        yield GaugeMetricFamily(
            f"{PREFIX}_verdict_detectable_factor",
            "The smallest over-admission (as a multiple of the limit) the run so far would have caught; 0 when "
            "none (or no limit declared).",
            value=(verdict.detectable or 0.0) if verdict is not None else 0.0,
        )


def _by_key(items: Iterable[tuple[tuple, int]], width: int) -> dict[tuple, dict[int, int]]:
    """Split {(labels..., rounded us): count} into {labels: {rounded us: count}}."""
    out: dict[tuple, dict[int, int]] = {}
    for key, n in items:
        out.setdefault(key[:width], {})[key[width]] = n
    return out


def _buckets(counts: dict[int, int]) -> tuple[list[tuple[str, float]], float]:
    """Cumulative (le, count) pairs and the sum in seconds, from counts of latencies rounded to microseconds."""
    per_bucket = [0] * (len(LATENCY_BUCKETS) + 1)
    total = 0.0
    for us, n in counts.items():
        seconds = us / 1_000_000
        per_bucket[bisect_left(LATENCY_BUCKETS, seconds)] += n
        total += seconds * n
    buckets, cumulative = [], 0
    for bound, count in zip([*LATENCY_BUCKETS, float("inf")], per_bucket, strict=True):
        cumulative += count
        buckets.append((_le(bound), cumulative))
    return buckets, total


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


def build_registry(collector: TotalsCollector) -> CollectorRegistry:
    """A dedicated registry: re-importing the locustfile (tests, ``-f dir``) never meets 'Duplicated timeseries'."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
