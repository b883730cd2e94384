"""Start N ``limits_app`` nodes on 127.0.0.1 (one redis-server from ``tests.support.redis_server``, or per-node memory).

    with limits_cluster("fixed-window", limit=20, window=1, nodes=3) as cluster:
        run_locust(cluster.node_hosts, tmp_path, ...)

``storage="redis"`` with the same prefix on every node is a correct global limiter; ``storage="memory"`` gives each
node its own counts (a cluster that admits up to ``nodes x limit``). Every process is stopped by PID at exit.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

from tests.support import Proc, redis_server

APP = [sys.executable, "-m", "tests.thirdparty.limits_app"]
STARTUP = 20.0  # seconds allowed for READY (normally ~0.3 s)


@dataclass
class LimitsCluster:
    strategy: str
    limit: int
    window: int
    storage: str
    redis_url: str  # "" with memory storage
    prefix: str  # the redis key prefix all nodes share
    key_header: str
    urls: list[str]
    procs: list[Proc]

    @property
    def node_hosts(self) -> str:
        """The ``--node-hosts`` value: ``http://127.0.0.1:P1,http://127.0.0.1:P2,...``."""
        return ",".join(self.urls)

    def redis_key(self, key: str) -> str:
        """The redis key `limits` uses for ``key`` with the fixed and the moving window."""
        return f"{self.prefix}:LIMITER/{key}/{self.limit}/{self.window}/second"

    def sliding_keys(self, key: str) -> tuple[str, str]:
        """The sliding window counter's redis keys for ``key``: (current window, previous window)."""
        current = f"{self.prefix}:{{LIMITER/{key}/{self.limit}/{self.window}/second}}"
        return current, current + "/-1"

    def stop(self) -> dict[str, dict[str, int]]:
        """Stop every node (by PID); per URL, what it counted (its FINAL line)."""
        finals: dict[str, dict[str, int]] = {}
        for url, proc in zip(self.urls, self.procs, strict=True):
            proc.stop()
            m = proc.wait_for(r"^FINAL \S+ admitted=(\d+) limited=(\d+) errors=(\d+)", timeout=5)
            finals[url] = {"admitted": int(m.group(1)), "limited": int(m.group(2)), "errors": int(m.group(3))}
        return finals


def app_args(
    strategy: str,
    limit: int,
    window: int,
    storage: str,
    redis_url: str,
    prefix: str,
    key_header: str,
    port: int = 0,
) -> list[str]:
    args = [*APP, "--port", str(port), "--strategy", strategy, "--limit", str(limit), "--window", str(window)]
    args += ["--storage", storage, "--key-header", key_header, "--prefix", prefix]
    return args + (["--redis-url", redis_url] if storage == "redis" else [])


@contextmanager
def limits_cluster(
    strategy: str,
    limit: int,
    window: int,
    nodes: int = 3,
    storage: str = "redis",
    redis_url: str | None = None,
    key_header: str = "X-Api-Key",
    prefix: str | None = None,
) -> Iterator[LimitsCluster]:
    """N nodes of one limit. With redis storage and no ``redis_url``, a redis-server is started for the cluster (and
    stopped after it); ``prefix`` defaults to a fresh one, so clusters sharing a redis-server do not share counts."""
    if storage not in ("redis", "memory"):
        raise ValueError(f"storage must be 'redis' or 'memory', not {storage!r}")
    prefix = prefix or f"rl-{uuid.uuid4().hex[:12]}"
    with ExitStack() as stack:
        if storage == "redis" and redis_url is None:
            redis_url = stack.enter_context(redis_server())
        url = (redis_url or "") if storage == "redis" else ""
        procs: list[Proc] = []
        try:
            for _ in range(nodes):  # all start at once; READY is awaited after
                procs.append(Proc(app_args(strategy, limit, window, storage, url, prefix, key_header)))
            urls = [proc.wait_for(r"^READY (\S+)", timeout=STARTUP).group(1) for proc in procs]
            yield LimitsCluster(strategy, limit, window, storage, url, prefix, key_header, urls, procs)
        finally:
            for proc in procs:
                proc.stop()
