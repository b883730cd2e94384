"""Per-request counting (hot path) and the totals it adds up to: one count type, ``Counts``, in three roles.

Every process that sends requests records into a ``Tally`` (a ``Counts`` with the hot path): plain dict increments,
no Prometheus call and no lock (gevent is cooperative). Workers ``drain()`` it into each ``report_to_master``
message, a delta; the master (or a standalone process, draining its own tally) adds those deltas to ``Totals`` (the
``Counts`` since the process started, which only ever grow: Prometheus counters are read from there) and to the
current run's ``RunView`` (the ``Counts`` of one run, with its timeline and replay: the console, the web UI, the CSV
files and the verdict read it).
"""

from __future__ import annotations

from typing import Any

from rlsuite.classify import ALLOWED, ERROR, LIMITED
from rlsuite.routes import DEFAULT

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

# The tables every Counts has, with the width of their keys: the shape of a delta's rows ([*key, n]).
TABLES = (("requests", 4), ("errors", 3), ("latency", 3), ("intended", 2), ("sends", 2), ("findings", 2))


class Counts:
    """Counts of requests and sends: one table per kind, keyed by plain tuples.

    - ``requests``: (mode, outcome, node, policy) -> n
    - ``errors``: (mode, node, kind) -> n
    - ``latency``: (mode, outcome, rounded us) -> n, as Locust measures it; ``intended``: (mode, rounded us) -> n, from
      the intended send time. Latencies are counts of values rounded to two significant digits (as Locust's own
      stats do): exact enough for percentiles and for the Prometheus histograms, which are built at scrape time.
    - ``sends``: (mode, late|dropped) -> n; ``findings``: header findings, (rule, node) -> n
    """

    __slots__ = ("errors", "findings", "intended", "latency", "requests", "sends")

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str, str], int] = {}
        self.errors: dict[tuple[str, str, str], int] = {}
        self.latency: dict[tuple[str, str, int], int] = {}
        self.intended: dict[tuple[str, int], int] = {}
        self.sends: dict[tuple[str, str], int] = {}
        self.findings: dict[tuple[str, str], int] = {}

    def add(self, delta: dict[str, Any]) -> None:
        """Add a delta (``Tally.drain()``'s message) to every table."""
        for table, width in TABLES:
            mine = getattr(self, table)
            for row in delta[table]:
                key, n = tuple(row[:width]), row[width]
                mine[key] = mine.get(key, 0) + n

    def count(
        self, mode: str | None = None, outcome: str | None = None, node: str | None = None, policy: str | None = None
    ) -> int:
        return sum(
            v
            for (m, o, n, p), v in self.requests.items()
            if (mode is None or m == mode)
            and (outcome is None or o == outcome)
            and (node is None or n == node)
            and (policy is None or p == policy)
        )

    def policies(self) -> list[str]:
        """The policies requests fell under, in the order first seen."""
        return list(dict.fromkeys(p for _, _, _, p in self.requests))

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


class Tally(Counts):
    """The counts since the last drain, in the process that sent the requests; ``record`` is the hot path."""

    __slots__ = ("advertised", "events", "examples", "seconds")

    def __init__(self) -> None:
        super().__init__()
        # (wall-clock second the request started, node) -> per-outcome counts: the timeline and node availability
        self.seconds: dict[tuple[int, str], list[int]] = {}
        # every request as (start, duration, code, node index, key index), flat: what the verdict replays
        self.events: list = []
        self.examples: dict[str, str] = {}  # header rule -> the first example seen
        self.advertised: set[str] = set()  # what the target said its policy was

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
        policy: str = DEFAULT,
    ) -> None:
        rkey = (mode, outcome, node, policy)
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
        delta: dict[str, Any] = {table: [[*k, v] for k, v in getattr(self, table).items()] for table, _ in TABLES}
        delta.update(
            run_id=run_id,
            seconds=[[*k, *v] for k, v in self.seconds.items()],
            examples=self.examples,
            advertised=sorted(self.advertised),
            events=self.events,
        )
        Tally.__init__(self)  # every table empty again
        return delta


class RunView(Counts):
    """What one run (one test, in web-UI terms) added, with its per-second timeline, header examples and the replay."""

    __slots__ = ("advertised", "examples", "replay", "run_id", "seconds")

    def __init__(self, run_id: int, replay: Any = None) -> None:
        super().__init__()
        self.run_id = run_id
        self.replay = replay  # the verdict's replays of every request (rlsuite.replay), when a limit is declared
        self.seconds: dict[tuple[int, str], list[int]] = {}  # (second, node) -> per-outcome counts
        self.examples: dict[str, str] = {}
        self.advertised: set[str] = set()

    def add(self, delta: dict[str, Any]) -> None:
        super().add(delta)
        for second, node, *counts in delta["seconds"]:
            mine = self.seconds.setdefault((second, node), [0, 0, 0])
            for i in range(3):
                mine[i] += counts[i]
        if self.replay is not None:
            self.replay.add(delta["events"])
        for rule, example in delta["examples"].items():
            self.examples.setdefault(rule, example)
        self.advertised.update(delta["advertised"])

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


class Totals(Counts):
    """Counts since this process started (never reset, so Prometheus counters never go down), plus the current run."""

    __slots__ = ("nodes", "policy_names", "run")

    def __init__(self) -> None:
        super().__init__()
        self.nodes: list[str] = []  # every node seen or configured, so its series exist at 0
        self.policy_names: list[str] = [DEFAULT]  # every policy declared or seen, likewise (set when declared)
        self.run = RunView(run_id=-1)

    def start_run(self, run_id: int, nodes: list[str], replay: Any = None, policies: list[str] | None = None) -> None:
        self.run = RunView(run_id, replay)
        for node in nodes:
            if node not in self.nodes:
                self.nodes.append(node)
        for policy in policies or ():
            if policy not in self.policy_names:
                self.policy_names.append(policy)

    def absorb(self, delta: dict[str, Any]) -> None:
        """Add one delta: to the process totals always, to the current run's view only if it is from that run (a
        report can arrive late, after a new test started in the web UI)."""
        self.add(delta)
        for _, _, node, policy, _ in delta["requests"]:
            if node not in self.nodes:
                self.nodes.append(node)
            if policy not in self.policy_names:
                self.policy_names.append(policy)
        if delta["run_id"] == self.run.run_id:
            self.run.add(delta)
