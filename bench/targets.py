"""Load targets on 127.0.0.1: nginx answering ``200 ok`` to everything, the demo limiter, a private redis-server.

Each is a context manager that yields once the target listens and stops it by PID on the way out.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.processes import stop, stop_group, wait_for_ports
from tests.support import RedisServer, free_port  # the tests' launcher and ports: one of each in the repo

ROOT = Path(__file__).resolve().parents[1]

HIGH = ["--limit", "1000000000", "--window", "1"]  # the demo limiter limits nothing: its figures are the server's
LOW = ["--limit", "1", "--window", "3600"]  # first request admitted, the rest limited

NGINX_CONF = """worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 60s;
    server {{
{listen}
        location / {{ default_type text/plain; return 200 "ok\\n"; }}
    }}
}}
"""


@contextmanager
def target(kind: str, nodes: int, pin: list[str], tmp: Path) -> Iterator[list[str]]:
    """Base URLs of a static target that answers 200 to everything: nginx (one worker) or the demo limiter."""
    if kind == "demolimiter":
        with demo_limiter(["--nodes", str(nodes), *HIGH], pin) as urls:
            yield urls
        return
    with nginx(nodes, pin, tmp) as urls:
        yield urls


@contextmanager
def nginx(nodes: int, pin: list[str], tmp: Path) -> Iterator[list[str]]:
    """nginx, one worker process, listening on ``nodes`` free ports; its config and pid file in a temp dir under
    ``tmp`` (``nginx-*/nginx.pid``)."""
    ports = [free_port() for _ in range(nodes)]
    conf_dir = Path(tempfile.mkdtemp(prefix="nginx-", dir=tmp))
    conf = conf_dir / "nginx.conf"
    listen = "\n".join(f"        listen 127.0.0.1:{p};" for p in ports)
    conf.write_text(NGINX_CONF.format(dir=conf_dir, listen=listen))
    proc = subprocess.Popen(
        [*pin, "nginx", "-p", str(conf_dir), "-c", str(conf), "-e", str(conf_dir / "error.log"), "-g", "daemon off;"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_ports(ports, proc)
        yield [f"http://127.0.0.1:{p}" for p in ports]
    finally:
        stop_group(proc)  # the master ends its worker on SIGTERM; the worker is killed if it did not


@contextmanager
def demo_limiter(args: list[str], pin: list[str], root: Path = ROOT) -> Iterator[list[str]]:
    """``python -m demolimiter --base-port 0 ARGS`` from the checkout ``root``; yields its node URLs (READY line)."""
    proc = subprocess.Popen(
        [*pin, sys.executable, "-m", "demolimiter", "--base-port", "0", *args],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
    )
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
            line = proc.stdout.readline().decode() if sel.select(20) else ""  # type: ignore[union-attr]
        if not line.startswith("READY "):
            raise SystemExit(f"bench: demolimiter {' '.join(args)} did not start")
        yield line[6:].strip().split(",")
    finally:
        stop(proc)
        proc.stdout.close()  # type: ignore[union-attr]


@contextmanager
def redis_server(pin: list[str]) -> Iterator[str]:
    """The URL of a private redis-server (tests/support.py's), pinned with ``pin``."""
    with RedisServer(prefix=pin) as server:
        yield server.url
