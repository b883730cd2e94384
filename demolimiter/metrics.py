"""Per-node counters and their Prometheus exposition.

The HTTP layer counts every decision in a plain list of ints (``counts[outcome] += 1``: the cheapest thing on the hot
path); a prometheus_client collector turns them into metric families at scrape time, on a registry of the node's own
(several nodes share one process in the memory backend).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from .config import Settings
from .decision import NAMES, REDIS_ERROR_CLOSED, REDIS_ERROR_OPEN
from .headers import format_window

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4.encode()  # what generate_latest writes: text format 0.0.4


class Metrics:
    """Counters indexed by decision outcome; the HTTP layer increments ``counts[outcome]`` directly."""

    def __init__(self, node: str, settings: Settings, backend_up: Callable[[], bool]) -> None:
        self.node = node
        self.settings = settings
        self.backend_up = backend_up
        self.counts = [0] * len(NAMES)
        # Only outcomes this backend can produce get a series, but those exist at 0 from the start.
        self.shown = [0, 1]
        if settings.backend == "redis":
            self.shown.append(REDIS_ERROR_OPEN if settings.redis_failure == "open" else REDIS_ERROR_CLOSED)
        s = settings
        self.burst = s.capacity if s.algorithm == "token-bucket" else s.quota
        self.info = {
            "node": node,
            "backend": s.backend,
            "algorithm": s.algorithm,
            "scope": s.scope,
            "limit": str(s.limit),
            "window": format_window(s.window),
            "burst": str(self.burst),
            "key_header": s.key_header,
            "retry_after": str(s.retry_after).lower(),
        }
        if s.backend == "redis":
            self.info["redis_failure"] = s.redis_failure
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        """The node's families, fresh on each scrape (prometheus_client's custom-collector protocol)."""
        node, s = [self.node], self.settings
        requests = CounterMetricFamily(
            "demolimiter_requests_total",
            "Rate-limited requests answered by this node, by decision.",
            labels=["node", "decision"],
        )
        for i in self.shown:
            requests.add_metric([self.node, NAMES[i]], self.counts[i])
        yield requests
        info = GaugeMetricFamily(
            "demolimiter_limit_info",
            "Configured rate limit of this node (labels); value is always 1.",
            labels=list(self.info),
        )
        info.add_metric(list(self.info.values()), 1)
        yield info
        for name, help_text, value in (
            ("demolimiter_limit_requests", "Configured quota per window.", s.limit),
            ("demolimiter_limit_window_seconds", "Configured window length in seconds.", s.window),
            (
                "demolimiter_limit_burst",
                "Requests admissible back to back: bucket capacity (token bucket), burst + 1 (leaky bucket) or "
                "limit (window algorithms).",
                self.burst,
            ),
        ):
            yield gauge(name, help_text, node, value)
        if s.backend == "redis":
            up = int(self.backend_up())
            yield gauge("demolimiter_redis_up", "Whether this node currently has a working redis connection.", node, up)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def gauge(name: str, help_text: str, node: list[str], value: float) -> GaugeMetricFamily:
    """A gauge family with one series, labelled by node."""
    family = GaugeMetricFamily(name, help_text, labels=["node"])
    family.add_metric(node, value)
    return family
