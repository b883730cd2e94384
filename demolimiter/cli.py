"""Command line.

    python -m demolimiter [--nodes 3] [--base-port 8081] [--node-names a,b,c] [COMMON]   # a cluster
    python -m demolimiter node [--port 8081] [--node-name NAME] [COMMON]                # one node (containers)
    COMMON: [--host 127.0.0.1] [--backend memory|redis] [--redis-url redis://127.0.0.1:6379/0]
            [--redis-failure open|closed] [--redis-timeout 0.5] [--redis-prefix demolimiter]
            [--algorithm token-bucket|fixed-window|sliding-log|sliding-window-counter|leaky-bucket]
            [--limit 100] [--window 1] [--burst N] [--window-alignment epoch|first-request] [--nodelay]
            [--key-header X-Api-Key] [--no-retry-after] [--route PATH=LIMIT/WINDOW[:per-node]]... [--cost-header X-Cost]
            broken on purpose: [--scope per-node] [--race [--race-delay 0.002]] [--counts-rejected]

Once every node listens, one line goes to stdout: ``READY http://127.0.0.1:P1,http://127.0.0.1:P2,...``.
Bad input: one line on stderr naming the option and the fix, exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, NoReturn

from .algorithms import ALGORITHMS
from .config import Settings, UsageError, parse_redis_url, parse_route


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, no usage dump: the message already names the option and what it accepts.
        print(f"demolimiter: {message}", file=sys.stderr)
        sys.exit(2)


def integer(low: int, high: int | None = None) -> Callable[[str], int]:
    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"{text!r} is not valid; give an integer {bound}")
        return value

    return check


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; give a number of seconds > 0, e.g. 1 or 0.5")
    return value


def delay_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"{text!r} is not valid; give a number of seconds >= 0, e.g. 0.002")
    return value


def common(p: Parser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument(
        "--backend",
        choices=("memory", "redis"),
        default="memory",
        help="memory: nodes share state in one process; redis: node processes share it in redis",
    )
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="redis://[user:pass@]host[:port][/db]")
    p.add_argument(
        "--redis-failure",
        choices=("open", "closed"),
        default="open",
        help="while redis is unreachable: admit (open) or answer 503 (closed)",
    )
    p.add_argument(
        "--redis-timeout",
        type=seconds,
        default=0.5,
        help="seconds without a redis reply before the connection is dropped (default 0.5)",
    )
    p.add_argument("--redis-prefix", default="demolimiter", help="key prefix in redis")
    p.add_argument(
        "--algorithm",
        choices=tuple(ALGORITHMS),
        default="token-bucket",
        help="token-bucket (default), fixed-window, sliding-log (exact: at most --limit in any --window-long span), "
        "sliding-window-counter (current + floor(previous x unelapsed fraction) of epoch-aligned windows) or "
        "leaky-bucket (nginx limit_req: rate --limit/--window, --burst queued)",
    )
    p.add_argument("--limit", type=integer(1), default=100, help="requests per window (default 100)")
    p.add_argument("--window", type=seconds, default=1.0, help="window in seconds (default 1)")
    p.add_argument(
        "--burst",
        type=integer(0),
        default=None,
        help="token bucket: capacity (default --limit, at least 1); leaky bucket: nginx's burst, how many requests "
        "beyond the rate may wait (or, with --nodelay, pass at once) (default 0); the window algorithms ignore it",
    )
    p.add_argument(
        "--window-alignment",
        choices=("epoch", "first-request"),
        default=None,
        help="fixed window only: epoch (default) aligns windows to the Unix epoch; first-request opens a key's "
        "window at its first request after the last one ended, for --window seconds (Redis INCR + EXPIRE)",
    )
    p.add_argument(
        "--nodelay",
        action="store_true",
        help="leaky bucket only: answer admitted requests at once, like nginx's nodelay (default: as nginx, "
        "answer a request admitted into the burst after (excess - 1) / rate seconds)",
    )
    p.add_argument("--key-header", default="X-Api-Key", help="request header that partitions the limit")
    p.add_argument(
        "--route",
        dest="routes",
        action="append",
        default=[],
        metavar="PATH=LIMIT/WINDOW[:per-node]",
        help="a path with a limit of its own (same algorithm, its own state; repeat for more paths); other paths "
        "share --limit. ':per-node' makes that route's limit per node (deliberately broken). Memory backend only",
    )
    p.add_argument(
        "--cost-header",
        default="",
        help="request header with the units of the limit a request spends (a whole number, default 1), e.g. "
        "X-Cost; unset: every request spends 1. Memory backend only",
    )
    p.add_argument(
        "--scope",
        choices=("global", "per-node"),
        default="global",
        help="per-node: each node limits alone (deliberately broken: N nodes admit N x the limit)",
    )
    p.add_argument(
        "--race",
        action="store_true",
        help="deliberately broken: read a key's state, wait --race-delay, then write it back (redis: GET, Python, "
        "SET), so concurrent requests lose each other's updates and the cluster admits more than the limit; "
        "one request at a time is still limited correctly",
    )
    p.add_argument(
        "--race-delay",
        type=delay_seconds,
        default=None,
        help="with --race: seconds between reading and writing a key's state (default 0.002)",
    )
    p.add_argument(
        "--counts-rejected",
        action="store_true",
        help="deliberately broken: rejected requests count toward the limit too (HAProxy track-sc before deny), so "
        "goodput collapses under overload; with fixed-window only the count changes, admissions do not",
    )
    p.add_argument(
        "--no-retry-after",
        dest="retry_after",
        action="store_false",
        help="omit Retry-After on 429/503 (deliberately non-conformant)",
    )


def cluster_parser() -> Parser:
    p = Parser(
        prog="python -m demolimiter",
        description="Start a demo rate-limiter cluster; prints 'READY http://HOST:PORT,...' once every node listens.",
        epilog="One node per process (e.g. per container): python -m demolimiter node --port P [options].",
    )
    p.add_argument("--nodes", type=integer(1, 64), default=3, help="number of nodes (default 3)")
    p.add_argument(
        "--base-port",
        type=integer(0, 65535),
        default=8081,
        help="the first node listens on the base port itself and node i (counting from 0) on base + i "
        "(default 8081: 8081, 8082, ...); 0 = ephemeral ports",
    )
    p.add_argument("--node-names", default=None, help="comma-separated node labels (default host:port)")
    common(p)
    return p


def node_parser() -> Parser:
    p = Parser(prog="python -m demolimiter node", description="Run a single node (one per container).")
    p.add_argument("--port", type=integer(0, 65535), default=8081, help="listen port (default 8081; 0 = ephemeral)")
    p.add_argument("--node-name", default=None, help="node label (default host:port)")
    # The cluster command's option that chose the port, so a node's error names what its user typed.
    p.add_argument("--port-option", default="--port", help=argparse.SUPPRESS)
    common(p)
    return p


def settings_from(ns: argparse.Namespace) -> Settings:
    header = ns.key_header
    if not header or any(c in header for c in ' \t\r\n:()<>@,;\\"/[]?={}') or not header.isascii():
        raise UsageError(f"--key-header: {header!r} is not a header name; give a token such as X-Api-Key")
    if ns.backend == "redis":
        parse_redis_url(ns.redis_url)
    if not ns.redis_prefix or any(c.isspace() for c in ns.redis_prefix):
        raise UsageError("--redis-prefix: must be non-empty without spaces; e.g. demolimiter")
    algorithm = ns.algorithm
    burst = ns.burst
    if burst == 0 and algorithm != "leaky-bucket":
        raise UsageError(
            "--burst: 0 is only meaningful with --algorithm leaky-bucket; give a bucket capacity of at least 1"
        )
    if burst is not None and algorithm not in ("token-bucket", "leaky-bucket"):
        print(f"demolimiter: note: --burst has no effect with --algorithm {algorithm}", file=sys.stderr)
        burst = None
    if ns.window_alignment is not None and algorithm != "fixed-window":
        raise UsageError(
            f"--window-alignment: only --algorithm fixed-window has one ({algorithm} does not); "
            "drop --window-alignment or add --algorithm fixed-window"
        )
    if ns.nodelay and algorithm != "leaky-bucket":
        raise UsageError("--nodelay: only --algorithm leaky-bucket delays requests; add --algorithm leaky-bucket")
    if ns.race_delay is not None and not ns.race:
        raise UsageError("--race-delay: only used with --race; add --race or drop --race-delay")
    routes = tuple(parse_route(r) for r in ns.routes)
    if len({r.path for r in routes}) != len(routes):
        raise UsageError("--route: a path is given twice; give each path once")
    cost_header = ns.cost_header
    if cost_header and (any(c in cost_header for c in ' \t\r\n:()<>@,;\\"/[]?={}') or not cost_header.isascii()):
        raise UsageError(f"--cost-header: {cost_header!r} is not a header name; give a token such as X-Cost")
    if ns.backend == "redis" and (routes or cost_header):
        option = "--route" if routes else "--cost-header"
        raise UsageError(
            f"{option}: only the memory backend has per-route limits and costs; drop it or --backend redis"
        )
    return Settings(
        host=ns.host,
        backend=ns.backend,
        redis_url=ns.redis_url,
        redis_failure=ns.redis_failure,
        redis_timeout=ns.redis_timeout,
        redis_prefix=ns.redis_prefix,
        algorithm=algorithm,
        limit=ns.limit,
        window=ns.window,
        burst=burst,
        key_header=header,
        scope=ns.scope,
        retry_after=ns.retry_after,
        window_alignment=ns.window_alignment or "epoch",
        nodelay=ns.nodelay,
        race=ns.race,
        race_delay=0.002 if ns.race_delay is None else ns.race_delay,
        counts_rejected=ns.counts_rejected,
        routes=routes,
        cost_header=cost_header,
    )


def label_ok(name: str) -> bool:
    return bool(name) and name.isprintable() and "," not in name


def run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop
    except ImportError:
        factory = None
    else:
        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["node"]:
            return node_main(args[1:])
        return cluster_main(args[1:] if args[:1] == ["cluster"] else args)
    except UsageError as exc:
        print(f"demolimiter: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


def node_main(args: list[str]) -> int:
    from .cluster import follow_parent
    from .server import serve

    ns = node_parser().parse_args(args)
    settings = settings_from(ns)
    if ns.node_name is not None and not label_ok(ns.node_name):
        raise UsageError(f"--node-name: {ns.node_name!r} is not usable; give a printable name without commas")
    follow_parent()
    return run(serve(settings, [ns.port], [ns.node_name], ns.port_option))


def cluster_main(args: list[str]) -> int:
    from .cluster import supervise
    from .server import serve

    ns = cluster_parser().parse_args(args)
    settings = settings_from(ns)
    n = ns.nodes
    if ns.base_port and ns.base_port + n - 1 > 65535:
        raise UsageError(f"--base-port: {ns.base_port} + {n} nodes passes 65535; give a base port <= {65536 - n}")
    ports = [ns.base_port + i if ns.base_port else 0 for i in range(n)]
    names: list[str | None] = [None] * n
    if ns.node_names is not None:
        given = [s.strip() for s in ns.node_names.split(",")]
        if len(given) != n or not all(map(label_ok, given)) or len(set(given)) != n:
            raise UsageError(f"--node-names: give {n} distinct comma-separated names (one per --nodes)")
        names = list(given)
    if settings.backend == "memory":
        return run(serve(settings, ports, names, "--base-port"))
    # Separate processes share only redis, like real replicas; plain asyncio suffices for supervising.
    return asyncio.run(supervise(settings, ports, names))
