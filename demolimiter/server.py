"""Run one or more nodes in this process: bind, announce READY, serve until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import signal
import socket

from .config import Settings, UsageError
from .http import HttpProtocol, tick_date
from .memory import MemoryLimiter
from .metrics import NAMES
from .node import Limiter, Node
from .redis_backend import RedisLimiter


def resolve(host: str) -> tuple[int, str]:
    """(address family, numeric address) of the first address ``host`` names; one socket per node."""
    try:
        family, _, _, _, addr = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise UsageError(
            f"--host: cannot resolve {host!r} ({exc.strerror}); give an IP address such as 127.0.0.1"
        ) from None
    return family, str(addr[0])


def bind(family: int, address: str, port: int, option: str) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart without waiting out TIME_WAIT
        sock.bind((address, port))
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(
                f"{option}: port {port} on {address} is already in use; choose another {option} (0 picks free ports)"
            ) from None
        if exc.errno == errno.EACCES:
            raise UsageError(f"{option}: no permission to listen on port {port}; use a port >= 1024") from None
        raise UsageError(
            f"--host: cannot listen on {address}:{port} ({exc.strerror}); use a local address such as 127.0.0.1"
        ) from None
    sock.setblocking(False)
    return sock


def public_host(address: str) -> str:
    """Where a client on this machine reaches a socket bound to ``address`` (URL form)."""
    ip = ipaddress.ip_address(address)
    if ip.is_unspecified:
        return "127.0.0.1" if ip.version == 4 else "[::1]"
    return address if ip.version == 4 else f"[{address}]"


def default_name(address: str, port: int) -> str:
    ip = ipaddress.ip_address(address)
    # Wildcard binds (containers) would all be "0.0.0.0:8081"; the hostname keeps per-node keys and labels apart.
    host = socket.gethostname() if ip.is_unspecified else public_host(address)
    return f"{host}:{port}"


def make_limiters(settings: Settings, names: list[str]) -> list[Limiter]:
    if settings.backend == "redis":
        return [RedisLimiter(settings, name) for name in names]
    if settings.scope == "global":
        shared = MemoryLimiter(settings)  # one state for every node: the limit is global
        return [shared] * len(names)
    return [MemoryLimiter(settings) for _ in names]


async def serve(settings: Settings, ports: list[int], names: list[str | None], option: str) -> int:
    """Serve one node per port; ``option`` names the CLI flag that chose the ports, for error messages."""
    loop = asyncio.get_running_loop()
    family, address = resolve(settings.host)
    socks: list[socket.socket] = []
    try:
        for port in ports:
            socks.append(bind(family, address, port, option))
    except UsageError:
        for s in socks:
            s.close()
        raise
    bound = [s.getsockname()[1] for s in socks]
    labels = [n or default_name(address, p) for n, p in zip(names, bound, strict=True)]
    limiters = make_limiters(settings, labels)
    for lim in dict.fromkeys(limiters):  # shared memory limiter: start once
        await lim.start()
    # each route's limiter: one for the cluster, or one per node for a route limited per node
    shared = {r.path: MemoryLimiter(settings.for_route(r)) for r in settings.routes if r.scope == "global"}
    per_node = [
        {r.path: shared.get(r.path) or MemoryLimiter(settings.for_route(r)) for r in settings.routes} for _ in labels
    ]
    nodes = [Node(label, settings, lim, routes) for label, lim, routes in zip(labels, limiters, per_node, strict=True)]
    tick_date(loop)
    servers = [
        await loop.create_server(lambda node=node: HttpProtocol(node), sock=sock, backlog=1024)
        for node, sock in zip(nodes, socks, strict=True)
    ]
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    host = public_host(address)
    print("READY " + ",".join(f"http://{host}:{p}" for p in bound), flush=True)
    await stop.wait()
    for server in servers:
        server.close()
    for lim in dict.fromkeys(limiters):
        await lim.close()
    # The last word on what each node decided, for whoever reconciles counts with a node that is going away.
    for node in nodes:
        counts = " ".join(f"{name}={node.counts[i]}" for i, name in enumerate(NAMES))
        print(f"FINAL {node.name} {counts}", flush=True)
    return 0
