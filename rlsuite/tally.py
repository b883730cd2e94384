"""Per-request counting (hot path) and the totals it adds up to.

Every process that sends requests records into a ``Tally``: plain dict increments, no Prometheus call and no lock
(gevent is cooperative). Workers ``drain()`` it into each ``report_to_master`` message; the master (or a standalone
process, draining its own tally) merges those deltas into ``Totals``, which only ever grow: Prometheus counters
and the per-run summary are read from there.
"""

from __future__ import annotations

from typing import Any

from rlsuite.classify import ALLOWED, ERROR, LIMITED

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
        "events",
        "examples",
        "findings",
        "intended",
        "latency",
        "requests",
        "seconds",
        "sends",
    )

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}  # (mode, outcome, node)
        self.errors: dict[tuple[str, str, str], int] = {}  # (mode, node, kind)
        # Latencies as counts of values rounded to two significant digits (as Locust's own stats do): exact enough
        # for percentiles and for the Prometheus histograms, which are built from them at scrape time.
        self.latency: dict[tuple[str, str, int], int] = {}  # (mode, outcome, rounded us) as Locust measures it
        self.intended: dict[tuple[str, int], int] = {}  # (mode, rounded us) from the intended send time
        # (wall-clock second the request started, node) -> per-outcome counts: the timeline and node availability
        self.seconds: dict[tuple[int, str], list[int]] = {}
        # every request as (start, duration, code, node index, key index), flat: what the verdict replays
        self.events: list = []
        self.findings: dict[tuple[str, str], int] = {}  # header findings: (rule, node) -> count
        self.examples: dict[str, str] = {}  # rule -> the first example seen
        self.advertised: set[str] = set()  # what the target said its policy was
        self.sends: dict[tuple[str, str], int] = {}  # (mode, late|dropped) -> count

    def dropped(self, mode: str, count: int = 1) -> None:
        key = (mode, DROPPED)
        self.sends[key] = self.sends.get(key, 0) + count

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
        code: int = 0,
        node_index: int = 0,
    ) -> None:
        rkey = (mode, outcome, node)
        requests = self.requests
        requests[rkey] = requests.get(rkey, 0) + 1
        if kind is not None:
            ekey = (mode, node, kind)
            self.errors[ekey] = self.errors.get(ekey, 0) + 1
        latency = self.latency
        lkey = (mode, outcome, round_us(seconds))
        latency[lkey] = latency.get(lkey, 0) + 1
        # coordinated omission: a request sent late waited for the generator, and its user saw that wait too
        if lateness > LATE_AFTER_SECONDS:
            late = (mode, LATE)
            self.sends[late] = self.sends.get(late, 0) + 1
        intended = self.intended
        ikey = (mode, round_us(seconds + lateness) if lateness > 0 else lkey[2])
        intended[ikey] = intended.get(ikey, 0) + 1
        skey = (int(start), node)
        counts = self.seconds.get(skey)
        if counts is None:
            counts = self.seconds[skey] = [0, 0, 0]
        counts[OUTCOME_INDEX[outcome]] += 1
        self.events += (start, seconds, code, node_index, key)

    def drain(self, run_id: int) -> dict[str, Any]:
        """Everything counted since the last drain, as a message-safe dict; the tally starts again from zero."""
        delta = {
            "run_id": run_id,
            "requests": [[*k, v] for k, v in self.requests.items()],
            "errors": [[*k, v] for k, v in self.errors.items()],
            "latency": [[*k, v] for k, v in self.latency.items()],
            "intended": [[*k, v] for k, v in self.intended.items()],
            "seconds": [[*k, *v] for k, v in self.seconds.items()],
            "findings": [[*k, v] for k, v in self.findings.items()],
            "examples": self.examples,
            "advertised": sorted(self.advertised),
            "sends": [[*k, v] for k, v in self.sends.items()],
            "events": self.events,
        }
        self.requests, self.errors, self.latency, self.intended, self.seconds = {}, {}, {}, {}, {}
        self.events = []
        self.findings, self.examples, self.sends = {}, {}, {}
        return delta


def _add(target: dict, key: Any, n: int) -> None:
    target[key] = target.get(key, 0) + n


class RunView:
    """What one run (one test, in web-UI terms) added: read by the console line and the end-of-run summary."""

    def __init__(self, run_id: int, replay: Any = None) -> None:
        self.run_id = run_id
        self.replay = replay  # the verdict's replay of every request (rlsuite.replay.Replay), when a limit is declared
        self.requests: dict[tuple[str, str, str], int] = {}
        self.errors: dict[tuple[str, str, str], int] = {}
        self.seconds: dict[tuple[int, str], list[int]] = {}
        self.findings: dict[tuple[str, str], int] = {}
        self.examples: dict[str, str] = {}
        self.advertised: set[str] = set()
        self.sends: dict[tuple[str, str], int] = {}
        self.latency: dict[tuple[str, str, int], int] = {}
        self.intended: dict[tuple[str, int], int] = {}

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
        counts: dict[int, int] = {}
        if kind == SERVICE:
            for (m, _, us), n in self.latency.items():
                if m == mode:
                    counts[us] = counts.get(us, 0) + n
        else:
            counts = {us: n for (m, us), n in self.intended.items() if m == mode}
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
        for (second, _), counts in self.seconds.items():
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
        self.latency: dict[tuple[str, str, int], int] = {}
        self.intended: dict[tuple[str, int], int] = {}
        self.findings: dict[tuple[str, str], int] = {}
        self.sends: dict[tuple[str, str], int] = {}
        self.nodes: list[str] = []  # every node seen or configured, so its series exist at 0
        self.run = RunView(run_id=-1)

    def start_run(self, run_id: int, nodes: list[str], replay: Any = None) -> None:
        self.run = RunView(run_id, replay)
        for node in nodes:
            if node not in self.nodes:
                self.nodes.append(node)

    def absorb(self, delta: dict[str, Any]) -> None:
        """Add one delta: to the process totals always, to the current run's view only if it is from that run (a
        report can arrive late, after a new test started in the web UI)."""
        run = self.run if delta["run_id"] == self.run.run_id else None
        for mode, outcome, node, n in delta["requests"]:
            _add(self.requests, (mode, outcome, node), n)
            if run:
                _add(run.requests, (mode, outcome, node), n)
            if node not in self.nodes:
                self.nodes.append(node)
        for table, rows, width in (
            ("errors", delta["errors"], 3),
            ("latency", delta["latency"], 3),
            ("intended", delta["intended"], 2),
            ("sends", delta["sends"], 2),
            ("findings", delta["findings"], 2),
        ):
            mine, theirs = getattr(self, table), getattr(run, table) if run else None
            for row in rows:
                key, n = tuple(row[:width]), row[width]
                _add(mine, key, n)
                if theirs is not None:
                    _add(theirs, key, n)
        if run:
            for second, node, *counts in delta["seconds"]:
                mine = run.seconds.setdefault((second, node), [0, 0, 0])
                for i in range(3):
                    mine[i] += counts[i]
            if run.replay is not None:
                run.replay.add(delta["events"])
            for rule, example in delta["examples"].items():
                run.examples.setdefault(rule, example)
            run.advertised.update(delta["advertised"])
