"""demolimiter: a small, fast demo HTTP rate-limiter cluster, the load-testing suite's embedded default target.

Modules: ``algorithms`` (token bucket, fixed window, sliding log, sliding-window counter, leaky bucket; clock
injected), ``headers`` (RateLimit fields), ``decision`` (limiter answer), ``memory`` / ``redis_backend`` (+ ``resp``
client) (where state lives), ``metrics`` (Prometheus text), ``node`` (one node's parts), ``http`` (protocol),
``server`` (run nodes in-process), ``cluster`` (supervise node processes), ``config`` and ``cli`` (options).
"""

from __future__ import annotations

__all__ = ["__version__"]
__version__ = "0.1.0"
