"""Per-node counters and their Prometheus text rendering (hand-written: a scrape is a string join)."""

from __future__ import annotations

from collections.abc import Callable

from .config import Settings
from .decision import NAMES, REDIS_ERROR_CLOSED, REDIS_ERROR_OPEN
from .headers import format_window

CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


def label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


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
        burst = s.capacity if s.algorithm == "token-bucket" else s.quota
        n = f'node="{label(node)}"'
        info = (
            f'{n},backend="{s.backend}",algorithm="{s.algorithm}",scope="{s.scope}",limit="{s.limit}",'
            f'window="{format_window(s.window)}",burst="{burst}",key_header="{label(s.key_header)}",'
            f'retry_after="{str(s.retry_after).lower()}"'
        )
        if s.backend == "redis":
            info += f',redis_failure="{s.redis_failure}"'
        self._node_label = n
        self._static = (
            "# HELP demolimiter_limit_info Configured rate limit of this node (labels); value is always 1.\n"
            "# TYPE demolimiter_limit_info gauge\n"
            f"demolimiter_limit_info{{{info}}} 1\n"
            "# HELP demolimiter_limit_requests Configured quota per window.\n"
            "# TYPE demolimiter_limit_requests gauge\n"
            f"demolimiter_limit_requests{{{n}}} {s.limit}\n"
            "# HELP demolimiter_limit_window_seconds Configured window length in seconds.\n"
            "# TYPE demolimiter_limit_window_seconds gauge\n"
            f"demolimiter_limit_window_seconds{{{n}}} {format_window(s.window)}\n"
            "# HELP demolimiter_limit_burst Requests admissible back to back: bucket capacity (token bucket), "
            "burst + 1 (leaky bucket) or limit (window algorithms).\n"
            "# TYPE demolimiter_limit_burst gauge\n"
            f"demolimiter_limit_burst{{{n}}} {burst}\n"
        )

    def render(self) -> bytes:
        n = self._node_label
        lines = [
            "# HELP demolimiter_requests_total Rate-limited requests answered by this node, by decision.\n"
            "# TYPE demolimiter_requests_total counter\n"
        ]
        lines += [f'demolimiter_requests_total{{{n},decision="{NAMES[i]}"}} {self.counts[i]}\n' for i in self.shown]
        lines.append(self._static)
        if self.settings.backend == "redis":
            lines.append(
                "# HELP demolimiter_redis_up Whether this node currently has a working redis connection.\n"
                "# TYPE demolimiter_redis_up gauge\n"
                f"demolimiter_redis_up{{{n}}} {int(self.backend_up())}\n"
            )
        return "".join(lines).encode()
