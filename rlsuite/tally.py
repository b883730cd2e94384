"""Per-request counting (hot path) and the totals it adds up to.

Every process that sends requests records into a ``Tally``: plain dict increments, no Prometheus call and no lock
(gevent is cooperative). Workers ``drain()`` it into each ``report_to_master`` message; the master (or a standalone
process, draining its own tally) merges those deltas into ``Totals``, which only ever grow: Prometheus counters
and the per-run summary are read from there.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from rlsuite.classify import ALLOWED, ERROR, LIMITED, OUTCOMES
from rlsuite.schedule import MODES

# Upper bounds (seconds) of the latency histogram: a loopback limiter answers in well under a millisecond, a remote
# one in tens of milliseconds, and timeouts are seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OUTCOME_INDEX = {ALLOWED: 0, LIMITED: 1, ERROR: 2}
# A request that starts later than this after its slot was due counts as a late send (the generator was behind).
LATE_AFTER_SECONDS = 0.01
LATE, DROPPED = "late", "dropped"
SERVICE, INTENDED = "service", "intended"  # latency as Locust measures it / from the slot's intended send time


def round_us(seconds: float) -> int:
    """Microseconds rounded to two significant digits: percentiles within 5%, a bounded number of keys."""
    us = int(seconds * 1_000_000)
    if us < 100:
        return us
    if us < 1000:  # the common cases first: this runs twice per request
        return (us + 5) // 10 * 10
    magnitude = 100
    while us >= 100 * magnitude:
        magnitude *= 10
    return (us + magnitude // 2) // magnitude * magnitude


DELTA_KEY = "rlsuite"  # key of our data in Locust's worker report


class Tally:
    """Counts since the last drain, in the process that sent the requests."""

    __slots__ = (
        "advertised",
        "errors",
        "examples",
        "findings",
        "intended",
        "latency",
        "percentiles",
        "requests",
        "seconds",
        "sends",
    )

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}  # (mode, outcome, node)
        self.errors: dict[tuple[str, str, str], int] = {}  # (mode, node, kind)
        self.latency: dict[tuple[str, str], list[float]] = {}  # (mode, outcome) -> bucket counts, +Inf, sum
        # (wall-clock second the request started, node, key index) -> per-outcome counts: what the verdict checks
        self.seconds: dict[tuple[int, str, int], list[int]] = {}
        self.findings: dict[tuple[str, str], int] = {}  # header findings: (rule, node) -> count
        self.examples: dict[str, str] = {}  # rule -> the first example seen
        self.advertised: set[str] = set()  # what the target said its policy was
        self.sends: dict[tuple[str, str], int] = {}  # (mode, late|dropped) -> count
        self.intended: dict[str, list[float]] = {}  # mode -> histogram of latency from the intended send time
        self.percentiles: dict[tuple[str, str, int], int] = {}  # (mode, service|intended, rounded us) -> count

    def dropped(self, mode: str) -> None:
        key = (mode, DROPPED)
        self.sends[key] = self.sends.get(key, 0) + 1

    def found(self, rule: str, node: str, example: str) -> None:
        key = (rule, node)
        self.findings[key] = self.findings.get(key, 0) + 1
        if rule not in self.examples:
            self.examples[rule] = f"{node}: {example}"

    def record(
        self,
        mode: str,
        outcome: str,
        node: str,
        seconds: float,
        start: float,
        kind: str | None,
        key: int = 0,
        lateness: float = 0.0,
    ) -> None:
        rkey = (mode, outcome, node)
        requests = self.requests
        requests[rkey] = requests.get(rkey, 0) + 1
        if kind is not None:
            ekey = (mode, node, kind)
            self.errors[ekey] = self.errors.get(ekey, 0) + 1
        hist = self.latency.get((mode, outcome))
        if hist is None:
            hist = self.latency[(mode, outcome)] = [0] * (len(LATENCY_BUCKETS) + 2)
        hist[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        hist[-1] += seconds
        # coordinated omission: a request sent late waited for the generator, and its user saw that wait too
        intended = seconds + lateness if lateness > 0 else seconds
        if lateness > LATE_AFTER_SECONDS:
            lkey = (mode, LATE)
            self.sends[lkey] = self.sends.get(lkey, 0) + 1
        ihist = self.intended.get(mode)
        if ihist is None:
            ihist = self.intended[mode] = [0] * (len(LATENCY_BUCKETS) + 2)
        ihist[bisect_left(LATENCY_BUCKETS, intended)] += 1
        ihist[-1] += intended
        percentiles = self.percentiles
        pkey = (mode, SERVICE, round_us(seconds))
        percentiles[pkey] = percentiles.get(pkey, 0) + 1
        pkey = (mode, INTENDED, round_us(intended))
        percentiles[pkey] = percentiles.get(pkey, 0) + 1
        skey = (int(start), node, key)
        counts = self.seconds.get(skey)
        if counts is None:
            counts = self.seconds[skey] = [0, 0, 0]
        counts[OUTCOME_INDEX[outcome]] += 1

    def drain(self, run_id: int) -> dict[str, Any]:
        """Everything counted since the last drain, as a message-safe dict; the tally starts again from zero."""
        delta = {
            "run_id": run_id,
            "requests": [[*k, v] for k, v in self.requests.items()],
            "errors": [[*k, v] for k, v in self.errors.items()],
            "latency": [[*k, v] for k, v in self.latency.items()],
            "seconds": [[*k, *v] for k, v in self.seconds.items()],
            "findings": [[*k, v] for k, v in self.findings.items()],
            "examples": self.examples,
            "advertised": sorted(self.advertised),
            "sends": [[*k, v] for k, v in self.sends.items()],
            "intended": [[k, v] for k, v in self.intended.items()],
            "percentiles": [[*k, v] for k, v in self.percentiles.items()],
        }
        self.requests, self.errors, self.latency, self.seconds = {}, {}, {}, {}
        self.findings, self.examples = {}, {}
        self.sends, self.intended, self.percentiles = {}, {}, {}
        return delta


class RunView:
    """What one run (one test, in web-UI terms) added: read by the console line and the end-of-run summary."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.requests: dict[tuple[str, str, str], int] = {}
        self.errors: dict[tuple[str, str, str], int] = {}
        self.seconds: dict[tuple[int, str, int], list[int]] = {}
        self.findings: dict[tuple[str, str], int] = {}
        self.examples: dict[str, str] = {}
        self.advertised: set[str] = set()
        self.sends: dict[tuple[str, str], int] = {}
        self.percentiles: dict[tuple[str, str], dict[int, int]] = {}

    def count(self, mode: str | None = None, outcome: str | None = None, node: str | None = None) -> int:
        return sum(
            v
            for (m, o, n), v in self.requests.items()
            if (mode is None or m == mode) and (outcome is None or o == outcome) and (node is None or n == node)
        )

    def sent(self, mode: str | None, what: str) -> int:
        """Late or dropped sends, of one mode or all."""
        return sum(n for (m, w), n in self.sends.items() if w == what and (mode is None or m == mode))

    def percentile(self, mode: str, kind: str, q: float) -> float | None:
        """The q-quantile (0-1) of a latency distribution in seconds; None when nothing was recorded."""
        counts = self.percentiles.get((mode, kind))
        if not counts:
            return None
        total = sum(counts.values())
        rank, seen = q * total, 0
        for us in sorted(counts):
            seen += counts[us]
            if seen >= rank:
                return us / 1_000_000
        return max(counts) / 1_000_000

    def by_second(self) -> dict[int, list[int]]:
        """Per-outcome counts per wall-clock second, over all nodes and keys."""
        out: dict[int, list[int]] = {}
        for (second, _, _), counts in self.seconds.items():
            mine = out.setdefault(second, [0, 0, 0])
            for i in range(3):
                mine[i] += counts[i]
        return out

    def started_between(self, start: float, end: float, by_second: dict[int, list[int]] | None = None) -> list[int]:
        """Per-outcome counts of requests started in whole seconds [start, end), over all nodes and keys."""
        by_second = self.by_second() if by_second is None else by_second
        total = [0, 0, 0]
        for second in range(int(start), int(end)):
            counts = by_second.get(second)
            if counts:
                for i in range(3):
                    total[i] += counts[i]
        return total


class Totals:
    """Counts since this process started (never reset, so Prometheus counters never go down), plus the current run."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.errors: dict[tuple[str, str, str], int] = {}
        self.latency: dict[tuple[str, str], list[float]] = {}
        self.findings: dict[tuple[str, str], int] = {}
        self.sends: dict[tuple[str, str], int] = {}
        self.intended: dict[str, list[float]] = {}
        self.nodes: list[str] = []  # every node seen or configured, so its series exist at 0
        self.run = RunView(run_id=-1)

    def start_run(self, run_id: int, nodes: list[str]) -> None:
        self.run = RunView(run_id)
        for node in nodes:
            if node not in self.nodes:
                self.nodes.append(node)

    def absorb(self, delta: dict[str, Any]) -> None:
        this_run = delta["run_id"] == self.run.run_id
        for mode, outcome, node, n in delta["requests"]:
            key = (mode, outcome, node)
            self.requests[key] = self.requests.get(key, 0) + n
            if this_run:
                self.run.requests[key] = self.run.requests.get(key, 0) + n
            if node not in self.nodes:
                self.nodes.append(node)
        for mode, node, kind, n in delta["errors"]:
            key = (mode, node, kind)
            self.errors[key] = self.errors.get(key, 0) + n
            if this_run:
                self.run.errors[key] = self.run.errors.get(key, 0) + n
        for mode, outcome, hist in delta["latency"]:
            mine = self.latency.setdefault((mode, outcome), [0] * (len(LATENCY_BUCKETS) + 2))
            for i, v in enumerate(hist):
                mine[i] += v
        for mode, hist in delta["intended"]:
            mine = self.intended.setdefault(mode, [0] * (len(LATENCY_BUCKETS) + 2))
            for i, v in enumerate(hist):
                mine[i] += v
        for mode, what, n in delta["sends"]:
            self.sends[(mode, what)] = self.sends.get((mode, what), 0) + n
            if this_run:
                self.run.sends[(mode, what)] = self.run.sends.get((mode, what), 0) + n
        for rule, node, n in delta["findings"]:
            self.findings[(rule, node)] = self.findings.get((rule, node), 0) + n
            if this_run:
                self.run.findings[(rule, node)] = self.run.findings.get((rule, node), 0) + n
        if this_run:
            for second, node, key, *counts in delta["seconds"]:
                mine = self.run.seconds.setdefault((second, node, key), [0, 0, 0])
                for i in range(3):
                    mine[i] += counts[i]
            for rule, example in delta["examples"].items():
                self.run.examples.setdefault(rule, example)
            self.run.advertised.update(delta["advertised"])
            for mode, kind, us, n in delta["percentiles"]:
                mine = self.run.percentiles.setdefault((mode, kind), {})
                mine[us] = mine.get(us, 0) + n

    def request_count(self) -> int:
        return sum(self.requests.values())


__all__ = ["LATENCY_BUCKETS", "MODES", "OUTCOMES", "RunView", "Tally", "Totals"]
