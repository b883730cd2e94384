"""What the master tells every load-generating process about a run.

Locust runs the shape only on the master, and forwards custom options to workers only when a run starts, so
workers never compute their own idea of the run: the master sends each of them a complete ``Plan`` (schedule,
targets, the wall-clock start ``t0``, and the worker's share of the slots). A plan is versioned; a worker keeps the
newest version it has seen, so late, repeated or reordered messages are harmless.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from rlsuite.schedule import Schedule
from rlsuite.targets import Node, Targets

MESSAGE = "rlsuite_plan"  # master -> worker: your share of the run
READY = "rlsuite_ready"  # worker -> master: my handler for plans is registered, send me my share


@dataclass(frozen=True)
class Plan:
    run_id: int  # increases with every new run on the master (a new test in the web UI is a new run)
    version: int  # increases with every plan the master sends, across runs
    t0: float  # wall-clock second at which slot 0 is due, on the master's clock
    schedule: Schedule
    targets: Targets
    share_index: int = 0  # this process sends the slots g with g % share_count == share_index
    share_count: int = 1
    share_from: int = 0  # ... from this slot on: the first slot due when the master split the run this way
    max_delay: float = 1.0  # seconds a slot may be late before it is dropped; 0 = never
    window_rule: bool = False  # the declared limit counts in windows: check that remaining never rises in one

    @property
    def end(self) -> float | None:
        """Wall-clock time after which no slot is due."""
        return None if self.schedule.run_time is None else self.t0 + self.schedule.run_time

    def with_share(self, index: int, count: int, version: int, share_from: int) -> Plan:
        return dataclasses.replace(self, share_index=index, share_count=count, version=version, share_from=share_from)

    def to_message(self, sent_at: float) -> dict[str, Any]:
        s, t = self.schedule, self.targets
        return {
            "run_id": self.run_id,
            "version": self.version,
            "t0": self.t0,
            "sent_at": sent_at,
            "schedule": [s.steady_rps, s.burst_multiplier, s.burst_every, s.burst_duration, s.run_time],
            "nodes": [[n.url, n.name] for n in t.nodes],
            "path": t.path,
            "rejection_statuses": sorted(t.rejection_statuses),
            "timeout": t.timeout,
            "api_keys": list(t.api_keys),
            "api_key_header": t.api_key_header,
            "share": [self.share_index, self.share_count, self.share_from],
            "window_rule": self.window_rule,
            "max_delay": self.max_delay,
        }

    @classmethod
    def from_message(cls, data: dict[str, Any], clock_offset: float = 0.0) -> Plan:
        """Rebuild a plan; ``clock_offset`` (local minus master clock) moves t0 onto the local clock."""
        targets = Targets(
            nodes=tuple(Node(url, name) for url, name in data["nodes"]),
            path=data["path"],
            rejection_statuses=frozenset(data["rejection_statuses"]),
            timeout=data["timeout"],
            api_keys=tuple(data["api_keys"]),
            api_key_header=data["api_key_header"],
        )
        index, count, share_from = data["share"]
        return cls(
            run_id=data["run_id"],
            version=data["version"],
            t0=data["t0"] + clock_offset,
            schedule=Schedule(*data["schedule"]),
            targets=targets,
            share_index=index,
            share_count=count,
            share_from=share_from,
            window_rule=data["window_rule"],
            max_delay=data["max_delay"],
        )
