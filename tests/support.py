"""The tests' one set of helpers: the parts a test needs, ports and polling, and real processes (the demo cluster,
redis-server and locust), all on 127.0.0.1, stopped by PID."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TypeVar

import pytest
from prometheus_client.parser import text_string_to_metric_families

from demolimiter import resp

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "locustfiles" / "ratelimit.py"
LOCUST = [sys.executable, "-m", "locust"]
T = TypeVar("T")

# --- the parts a test needs ---------------------------------------------------------------------------------------

REQUIRE_ALL = "RLSUITE_REQUIRE_ALL"  # =1 (set by .ci/run): a missing part fails the test instead of skipping it
_MISSING = " is missing: "  # the skip reason: "<part> is missing: <how to install it>" (see missing_part)

# How to get each part; .ci/run installs the Debian packages, scripts/setup the Python ones (pip install -e '.[dev]').
INSTALL_REDIS = "apt-get install redis-server (.ci/run installs it)"
INSTALL_PROMETHEUS = "apt-get install prometheus (.ci/run installs it)"
INSTALL_COMPOSE = "apt-get install docker-compose (.ci/run installs it)"
INSTALL_CHROMIUM = "apt-get install chromium fonts-liberation (.ci/run installs it)"
INSTALL_NGINX = "apt-get install nginx (.ci/run installs it)"
INSTALL_WRK = "apt-get install wrk (.ci/run installs it)"
INSTALL_DEV = "pip install -e '.[dev]' (scripts/setup installs it)"


def require_all() -> bool:
    return os.environ.get(REQUIRE_ALL) == "1"


def require(part: str, available: bool, how: str) -> None:
    """Skip the test when ``part`` is not ``available`` (saying ``how`` to install it); with RLSUITE_REQUIRE_ALL=1
    (CI) fail it instead, so that CI cannot pass by skipping what it was meant to run."""
    __tracebackhide__ = True  # reported at the test's line, not here
    if available:
        return
    if require_all():
        pytest.fail(f"{part} is required ({REQUIRE_ALL}=1) but missing: {how}", pytrace=False)
    pytest.skip(f"{part}{_MISSING}{how}")


def need_command(name: str, how: str, *also: str) -> str:
    """The path of program ``name`` (on PATH, else the first of the paths ``also`` that exists), see require()."""
    __tracebackhide__ = True
    found = shutil.which(name) or next((path for path in also if os.path.exists(path)), None)
    require(name, found is not None, how)
    assert found is not None
    return found


def need_module(name: str, how: str) -> ModuleType:
    """The imported module ``name``, see require()."""
    __tracebackhide__ = True
    try:
        module = importlib.import_module(name)
    except ImportError:
        module = None
    require(name, module is not None, how)
    assert module is not None
    return module


def missing_part(reason: str) -> str | None:
    """The part a skip reason written by require() names; None for any other skip."""
    part, sep, _how = reason.removeprefix("Skipped: ").partition(_MISSING)
    return part if sep and part and " " not in part else None


def missing_parts_line(reasons: Iterable[str]) -> str | None:
    """One line counting the tests skipped for missing parts, by part; None when there were none."""
    parts = Counter(part for reason in reasons if (part := missing_part(reason)))
    if not parts:
        return None
    total = sum(parts.values())
    counts = ", ".join(f"{part} x{n}" for part, n in parts.most_common())
    tests = "test" if total == 1 else "tests"
    return f"rlsuite: {total} {tests} skipped for missing parts ({counts}); {REQUIRE_ALL}=1 makes them fail"


# --- ports and polling --------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def taken_port(listen: bool = True) -> Iterator[int]:
    """A port of 127.0.0.1 held by this process while the block runs: in use (``listen``), or bound with nobody
    listening, so that connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        if listen:
            s.listen()
        yield s.getsockname()[1]


def listening(port: int, timeout: float = 1) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout).close()
    except OSError:
        return False
    return True


def wait_until(check: Callable[[], T], timeout: float, what: str, step: float = 0.02) -> T:
    """Poll ``check`` until it returns something truthy, and return that (for conditions that have no event to
    await, e.g. a reconnect; every wait ends as soon as it can, bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what} (last: {value!r})")
        time.sleep(step)


class Proc:
    """A child process whose output is collected line by line, so tests can wait for a line instead of sleeping."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> None:
        self.args = args
        self.popen = subprocess.Popen(
            args,
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._new_line = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._new_line:
                self.lines.append(line.rstrip("\n"))
                self._new_line.notify_all()
        with self._new_line:
            self._new_line.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first output line matching ``pattern``; fails if the process exits or ``timeout`` passes first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._new_line:
            while True:
                for line in self.lines[seen:]:
                    if m := regex.search(line):
                        return m
                seen = len(self.lines)
                if self.popen.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(
                        f"{self.args[:4]} exited ({self.popen.returncode}) before {pattern!r}:\n{self.output[-4000:]}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {pattern!r} within {timeout}s:\n{self.output[-4000:]}")
                self._new_line.wait(min(remaining, 0.5))

    def wait(self, timeout: float) -> int:
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"{self.args[:4]} still running after {timeout}s:\n{self.output[-4000:]}") from None
        self._reader.join(5)
        return code

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not go within 10 s; by PID only."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self._reader.join(5)


@contextmanager
def running(proc: Proc) -> Iterator[Proc]:
    try:
        yield proc
    finally:
        proc.stop()


# Per algorithm of the demo limiter: (its options, the same algorithm declared to the suite).
DEMO_ALGORITHMS = {
    "token-bucket": (["--algorithm", "token-bucket"], ["--limit-algorithm", "token-bucket"]),
    "leaky-bucket": (
        ["--algorithm", "leaky-bucket", "--burst", "5", "--nodelay"],
        ["--limit-algorithm", "leaky-bucket", "--limit-burst", "5"],
    ),
    "fixed-window epoch": (
        ["--algorithm", "fixed-window"],
        ["--limit-algorithm", "fixed-window", "--window-alignment", "epoch"],
    ),
    "fixed-window first-request": (
        ["--algorithm", "fixed-window", "--window-alignment", "first-request"],
        ["--limit-algorithm", "fixed-window", "--window-alignment", "first-request"],
    ),
    "sliding-log": (["--algorithm", "sliding-log"], ["--limit-algorithm", "sliding-log"]),
    "sliding-window-counter": (
        ["--algorithm", "sliding-window-counter"],
        ["--limit-algorithm", "sliding-window-counter"],
    ),
}


@dataclass
class Cluster:
    urls: list[str]
    proc: Proc

    @property
    def node_hosts(self) -> str:
        return ",".join(self.urls)

    def server_counts(self) -> dict[str, dict[str, float]]:
        """Per node, per decision: what the limiter itself counted (its /metrics)."""
        counts: dict[str, dict[str, float]] = {}
        for url in self.urls:
            for sample in scrape(url + "/metrics", "demolimiter_requests_total"):
                counts.setdefault(sample.labels["node"], {})[sample.labels["decision"]] = sample.value
        return counts

    def server_total(self, decision: str) -> float:
        return sum(per_node.get(decision, 0) for per_node in self.server_counts().values())


@contextmanager
def demo_cluster(*args: str, command: list[str] | None = None, cwd: Path = ROOT) -> Iterator[Cluster]:
    """The demo cluster on free ports; ``command``: another way to start it (an installed ``rlsuite-demo``)."""
    proc = Proc([*(command or [sys.executable, "-m", "demolimiter"]), "--base-port", "0", *args], cwd=cwd)
    with running(proc):
        urls = proc.wait_for(r"^READY (\S+)", timeout=20).group(1).split(",")
        yield Cluster(urls, proc)


class RedisServer:
    """A private redis-server on 127.0.0.1 (on ``port``, else a free one), no persistence, stopped by PID; ready when
    constructed. ``prefix`` goes before the command (e.g. ``taskset -c 1``). Tests that need one take the
    ``redis_available`` fixture (tests/conftest.py) first."""

    def __init__(self, port: int | None = None, prefix: Iterable[str] = ()) -> None:
        self.port = port or free_port()
        self.proc = Proc(
            [
                *prefix,
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ]
        )
        try:
            self.proc.wait_for(r"Ready to accept connections", timeout=20)
        except BaseException:
            self.proc.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self, *args: bytes | str | int | float) -> resp.Reply:
        """One command over a fresh connection; its reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(resp.encode(*args))
            buf = b""
            while True:
                buf += s.recv(65536)
                try:
                    return resp.parse(buf, 0)[0]
                except resp._Incomplete:
                    continue

    def ping(self) -> bool:
        try:
            return self.command("PING") == b"PONG"
        except OSError:
            return False

    def stop(self) -> None:
        self.proc.stop()

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


@contextmanager
def redis_server() -> Iterator[str]:
    """The URL of a RedisServer, for tests that only hand it to the limiter."""
    with RedisServer() as server:
        yield server.url


def metrics_page(url: str) -> tuple[str, str]:
    """The text of a Prometheus endpoint and its Content-Type."""
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode(), response.headers.get("Content-Type", "")


def scrape(url: str, name: str | None = None) -> list:
    """Samples from a Prometheus endpoint (optionally only those of metric sample ``name``)."""
    text, _content_type = metrics_page(url)
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    return [s for s in samples if name is None or s.name == name]


def sample_sum(samples: list, name: str, **labels: str) -> float:
    return sum(s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


@dataclass
class LocustRun:
    proc: Proc
    json_file: Path
    metrics: list = field(default_factory=list)  # the last scrape, taken while the run lingered

    @property
    def locust_requests(self) -> int:
        return sum(entry["num_requests"] for entry in json.loads(self.json_file.read_text()))

    @property
    def locust_failures(self) -> int:
        return sum(entry["num_failures"] for entry in json.loads(self.json_file.read_text()))


def locust_args(node_hosts: str, *args: str, locustfile: Path = LOCUSTFILE, locust: list[str] = LOCUST) -> list[str]:
    return [
        *locust,
        "-f",
        str(locustfile),
        "--headless",
        "--node-hosts",
        node_hosts,
        "--metrics-port",
        "0",
        "--loglevel",
        "INFO",
        *args,
    ]


def run_locust(
    node_hosts: str,
    tmp_path: Path,
    *args: str,
    timeout: float = 90,
    exit_code: int = 0,
    locustfile: Path = LOCUSTFILE,
    locust: list[str] = LOCUST,
    cwd: Path = ROOT,
    user_error: bool = False,
) -> LocustRun:
    """A headless run to its end; /metrics is scraped once after the run, while it lingers for that scrape.
    ``locustfile``, ``locust`` (the command) and ``cwd``: another locustfile, installation or directory;
    ``user_error``: the locustfile's own code raises on purpose (Locust logs its traceback)."""
    json_file = tmp_path / "locust_stats"
    proc = Proc(
        locust_args(
            node_hosts,
            "--metrics-linger",
            "30",
            "--json-file",
            str(json_file),
            *args,
            locustfile=locustfile,
            locust=locust,
        ),
        cwd=cwd,
    )
    with running(proc):
        url = proc.wait_for(r"waiting up to \S+ for a last scrape of (\S+)", timeout=timeout).group(1)
        metrics = scrape(url)
        code = proc.wait(30)
    assert code == exit_code, proc.output[-4000:]
    assert user_error or "Traceback" not in proc.output, proc.output
    return LocustRun(proc, json_file.with_suffix(".json"), metrics)


class Node:
    """One demo limiter node as its own process (as in docker/), so a test can kill, stop or restart it alone."""

    def __init__(self, *args: str, port: int = 0) -> None:
        self.args = args
        self.proc = Proc([sys.executable, "-m", "demolimiter", "node", "--port", str(port), *args])
        self.url = self.proc.wait_for(r"^READY (\S+)", timeout=20).group(1)
        self.port = int(self.url.rsplit(":", 1)[1])
        self.name = self.url.removeprefix("http://")
        self.admitted_before_restart = 0.0

    def counts(self) -> dict[str, float]:
        return {s.labels["decision"]: s.value for s in scrape(self.url + "/metrics", "demolimiter_requests_total")}

    def kill(self) -> None:
        """Refuse connections from now on; what it admitted until then (its FINAL line) is kept for reconciliation."""
        self.proc.stop()
        final = self.proc.wait_for(r"^FINAL \S+ .*\badmitted=(\d+)", timeout=5)
        self.admitted_before_restart += int(final.group(1))

    def restart(self) -> None:
        self.proc = Proc([sys.executable, "-m", "demolimiter", "node", "--port", str(self.port), *self.args])
        self.proc.wait_for(r"^READY ", timeout=20)

    def admitted_total(self) -> float:
        return self.admitted_before_restart + self.counts().get("admitted", 0)


@contextmanager
def nodes(count: int, *args: str) -> Iterator[list[Node]]:
    started: list[Node] = []
    try:
        for _ in range(count):
            started.append(Node(*args))
        yield started
    finally:
        for node in started:
            node.proc.stop()


def worker(master_port: int, *args: str, locustfile: Path = LOCUSTFILE) -> Proc:
    """A locust worker process connected to a master on 127.0.0.1."""
    return Proc(
        [
            *LOCUST,
            "-f",
            str(locustfile),
            "--worker",
            "--master-host",
            "127.0.0.1",
            "--master-port",
            str(master_port),
            *args,
        ]
    )


def processes(n: int) -> tuple[str, ...]:
    """``--processes n`` with the master on a free port of its own: on Locust's default (5557) the forked workers of
    two runs side by side (tests running at once) could connect to each other's master."""
    port = str(free_port())
    return ("--processes", str(n), "--master-bind-host", "127.0.0.1", "--master-bind-port", port, "--master-port", port)


def master_args(node_hosts: str, tmp_path: Path, workers: int, *args: str) -> tuple[list[str], int]:
    """A headless master's command line (on a free port, lingering for one last scrape) and its port."""
    port = free_port()
    args_ = locust_args(
        node_hosts,
        "--master",
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        str(port),
        "--expect-workers",
        str(workers),
        "--expect-workers-max-wait",
        "30",
        "--metrics-linger",
        "30",
        "--json-file",
        str(tmp_path / "stats"),
        *args,
    )
    return args_, port


def finish(proc: Proc, tmp_path: Path, exit_code: int = 0) -> tuple[list, int]:
    """Scrape /metrics while a headless run lingers after its end; returns the samples and Locust's own count."""
    url = proc.wait_for(r"waiting up to \S+ for a last scrape of (\S+)", timeout=90).group(1)
    samples = scrape(url)
    assert proc.wait(30) == exit_code, proc.output[-4000:]
    assert "Traceback" not in proc.output
    locust_total = sum(e["num_requests"] for e in json.loads((tmp_path / "stats.json").read_text()))
    # the run's own summary has every request, also the workers' final reports (sent after they stopped)
    assert f"Locust counted {locust_total} requests; the suite counted {locust_total}." in proc.output
    return samples, locust_total


def run_cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A short headless `locust` run to its end (for runs that should stop at once: bad input, missing workers)."""
    return subprocess.run(
        [*LOCUST, "-f", str(LOCUSTFILE), "--headless", "-t", "5s", "--metrics-port", "0", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
