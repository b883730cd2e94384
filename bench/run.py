"""The suite's benchmark: generator throughput per core, listener overhead, rate accuracy, workers, limiter req/s.

Everything runs on this machine against 127.0.0.1 only, every run bounded in time, every process stopped by PID.
The load generator is pinned to one core (``taskset -c 0``) and the target to another (``taskset -c 1``) when the
machine has two; repetitions alternate the generators so that drift hits them all alike; medians with min/max.

1. requests/s per core at full speed: the suite's user with its request listener (locustfiles/ratelimit.py at
   --steady-rps 50000, far above one core; counted by the suite) vs the same user with the listener removed vs a
   plain FastHttpUser (bench/plain_locustfile.py) vs wrk -t1 -c50 (the ceiling) vs an asyncio + httpx generator
   like the old tool (bench/httpx_generator.py, 100 in flight / 100 connections);
2. the listener's overhead: the ratio of the alternating A/B runs above (A with the listener, B without);
3. rate accuracy at 25%, 50% and 90% of the suite's max from 1, with bursts (steady x/3, multiplier 3), with the
   users of 1 and (90% only) with the suite's default users;
4. distributed: --processes 1 vs --processes 2 (generator unpinned, target pinned);
5. the demo limiter's requests/s per backend (bench/limiter_rps.py).

    python bench/run.py                           # the full set, ~9 minutes; writes bench/RESULTS.md
    python bench/run.py --smoke --out /tmp/R.md   # a few seconds per item (CI: figures come out)

Needs wrk (apt-get install wrk), httpx in the venv (pip install httpx) and, for the static target and the redis
figures, nginx and redis-server; without nginx the demo limiter is the target.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import limiter_rps  # noqa: E402 - bench/limiter_rps.py: pinning, ports, wrk, the demo limiter and section 5

SUITE_LOCUSTFILE = ROOT / "locustfiles" / "ratelimit.py"
PLAIN_LOCUSTFILE = BENCH / "plain_locustfile.py"
PROBE = BENCH / "probe.py"
HTTPX_GENERATOR = BENCH / "httpx_generator.py"
DEFAULT_OUT = BENCH / "RESULTS.md"

MAX_RPS = 50000.0  # "far above one core": the suite then sends as fast as it can
USERS = 200
WRK_CONNECTIONS = 50
# Fractions of the suite's max from section 1, with the users of section 1 (-u 200 -r 1000: the same configuration
# whose max x is) or with the suite's defaults (-u = peak x 0.05, spawn 100/s), as a user would run it.
LEVELS = ((0.25, False), (0.50, False), (0.90, False), (0.90, True))


def level_label(fraction: float, default_users: bool) -> str:
    return f"{fraction:.0%}" + (", default -u" if default_users else "")


GOAL_LISTENER = 0.97  # suite user + listener >= 0.97 x plain FastHttpUser per core
GOAL_HTTPX = 20.0  # >= 20 x the asyncio + httpx generator per core
GOAL_WORKERS = 1.7  # 2 workers >= 1.7 x one worker, where cores allow
GOAL_STAGE = 0.01  # achieved/target within +-1% in every stage, after its first second
GOAL_STDEV = 0.02  # per-second std dev <= 2% of target


class BenchError(RuntimeError):
    pass


@dataclass(frozen=True)
class Settings:
    smoke: bool
    reps: int  # alternating repetitions of sections 1 and 2
    seconds: int  # length of each throughput run
    warmup: int  # whole seconds left out at the start of each throughput window
    acc_seconds: int  # length of each accuracy run, and its burst schedule
    acc_every: int
    acc_duration: int
    acc_reps: int
    dist_reps: int
    target: str  # nginx | demolimiter
    nodes: int
    request_timeout: float  # short: the suite's run ends this long (+0.5 s) after its last slot was due
    extras: bool  # also the reference rows: httpx with 10 connections, the suite with its default drop rule


def settings(ns: argparse.Namespace) -> Settings:
    target = ns.target or ("nginx" if shutil.which("nginx") else "demolimiter")
    if ns.smoke:
        return Settings(True, ns.reps or 1, ns.seconds or 1, 0, 3, 2, 1, 1, 1, target, ns.nodes, 0.5, False)
    return Settings(False, ns.reps or 5, ns.seconds or 5, 1, 15, 6, 3, 2, 3, target, ns.nodes, 1.0, True)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- processes ---------------------------------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux /proc), so that a forked worker is stopped by its own PID too."""
    out: list[int] = []
    with suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as f:
                out += [int(p) for p in f.read().split()]
    return out


def stop_tree(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM the process (SIGKILL after 10 s), then SIGKILL any of its children still alive; by PID only."""
    kids = children_of(proc.pid)
    limiter_rps.stop(proc)
    for pid in kids:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def stop_group(proc: subprocess.Popen[Any]) -> None:
    """Stop the process, then whatever is left of the process group it leads (started with start_new_session)."""
    stop_tree(proc)
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def wait_for_ports(ports: list[int], proc: subprocess.Popen[Any], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"target did not listen on 127.0.0.1:{port}")
            time.sleep(0.05)


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
        with limiter_rps.limiter(["--nodes", str(nodes), *limiter_rps.HIGH], pin) as urls:
            yield urls
        return
    ports = [limiter_rps.free_port() for _ in range(nodes)]
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


# -- other load on the machine --------------------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU-seconds all CPUs spent busy since boot (/proc/stat: everything but idle and iowait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / TICK


def descendants(pid: int) -> list[int]:
    out, todo = [], children_of(pid)
    while todo:
        child = todo.pop()
        out.append(child)
        todo += children_of(child)
    return out


def process_cpu(pid: int) -> float:
    with suppress(OSError, IndexError, ValueError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    return 0.0


def own_cpu() -> float:
    """CPU-seconds used by this process and everything it started (reaped or still running, e.g. the target)."""
    used = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        ru = resource.getrusage(who)
        used += ru.ru_utime + ru.ru_stime
    return used + sum(process_cpu(pid) for pid in descendants(os.getpid()))


@dataclass
class Background:
    """How much of the machine other processes used while a section ran (the bench cannot stop them)."""

    wall: float = 0.0
    others: float = 0.0  # CPU-seconds

    @property
    def share(self) -> float:
        return self.others / (self.wall * (os.cpu_count() or 1)) if self.wall > 0 else 0.0


class QuietGate:
    """Before each measured run, wait (briefly, within a budget for the whole bench) until other processes use
    less than ``QUIET_SHARE`` of the machine over half a second: other sessions' test runs come in bursts."""

    def __init__(self, per_run: float, budget: float) -> None:
        self.per_run, self.budget, self.waited = per_run, budget, 0.0

    def wait(self) -> None:
        if self.per_run <= 0:
            return
        deadline = time.monotonic() + min(self.per_run, max(0.0, self.budget - self.waited))
        started = time.monotonic()
        while True:
            t, busy, own = time.monotonic(), machine_busy(), own_cpu()
            time.sleep(0.5)
            others = (machine_busy() - busy) - (own_cpu() - own)
            if others / ((time.monotonic() - t) * (os.cpu_count() or 1)) < QUIET_SHARE or time.monotonic() > deadline:
                break
        self.waited += time.monotonic() - started


QUIET_SHARE = 0.10


@contextmanager
def background(into: dict[str, Background], name: str) -> Iterator[None]:
    t, busy, own = time.monotonic(), machine_busy(), own_cpu()
    try:
        yield
    finally:
        b = into.setdefault(name, Background())
        b.wall += time.monotonic() - t
        b.others += max(0.0, (machine_busy() - busy) - (own_cpu() - own))


# -- locust runs -------------------------------------------------------------------------------------------------


@dataclass
class LocustResult:
    probe: dict[str, Any]
    output: str
    seconds: float  # wall-clock of the whole process

    def per_sec(self, which: str) -> dict[int, int]:
        return {int(k): v for k, v in self.probe.get(f"{which}_per_sec", {}).items()}

    @property
    def t0(self) -> int:
        return int(self.probe["t0"])


_counter = iter(range(1, 1_000_000))


def run_locust(
    files: list[Path], args: list[str], pin: list[str], tmp: Path, timeout: float, **env: str
) -> LocustResult:
    """One headless locust run to its end (cwd: a temp dir, so no locust.conf applies); the probe's JSON read back."""
    probe_out = tmp / f"probe-{next(_counter)}.json"
    cmd = [
        *pin,
        sys.executable,
        "-m",
        "locust",
        "-f",
        ",".join(str(f) for f in files),
        "--headless",
        "--only-summary",
        *args,
    ]
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=tmp,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "BENCH_PROBE_OUT": str(probe_out), **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: forked workers are found and stopped with it
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(proc)
        out = proc.stdout.read() if proc.stdout else ""  # type: ignore[union-attr]
        raise BenchError(
            f"locust still running after {timeout:.0f}s: {' '.join(cmd[:12])} ...\n{out[-3000:]}"
        ) from None
    finally:
        stop_group(proc)  # a worker left behind by a master that failed (its group is the PID we started)
    if proc.returncode not in (0, 1) or not probe_out.exists() or "Traceback" in out:
        raise BenchError(f"locust failed (exit {proc.returncode}): {' '.join(cmd)}\n{out[-3000:]}")
    return LocustResult(json.loads(probe_out.read_text()), out, time.monotonic() - started)


def suite_args(s: Settings, urls: list[str], seconds: int, steady: float, every: int, duration: int) -> list[str]:
    """The suite's options for a run of ``seconds``: ``steady`` req/s with 3x bursts (none if ``duration`` is 0)."""
    return [
        "-t",
        f"{seconds}s",
        "--node-hosts",
        ",".join(urls),
        "--steady-rps",
        f"{steady:g}",
        "--burst-multiplier",
        "3",
        "--burst-every",
        str(every),
        "--burst-duration",
        str(duration),
        "--request-timeout",
        f"{s.request_timeout:g}",
        "--metrics-port",
        "0",
        "--metrics-linger",
        "0",
        "--stats-interval",
        "0",
    ]


def window_rate(per_sec: dict[int, int], lo: int, hi: int) -> float:
    """Mean requests/s over whole seconds [lo, hi)."""
    if hi <= lo:
        raise BenchError(f"empty measuring window [{lo}, {hi})")
    return sum(per_sec.get(s, 0) for s in range(lo, hi)) / (hi - lo)


def suite_window(res: LocustResult, s: Settings) -> tuple[int, int]:
    """Whole seconds of the suite's run after the warm-up: slots are due from t0 on, users exist before it."""
    return res.t0 + s.warmup, res.t0 + s.seconds


def plain_window(per_sec: dict[int, int], s: Settings) -> tuple[int, int]:
    """Whole seconds of a plain run: the first (partial) second and the warm-up out, the last (partial) one out."""
    seconds = sorted(per_sec)
    if not seconds:
        raise BenchError("no requests counted")
    return seconds[0] + 1 + s.warmup, seconds[-1]


def summary_line(output: str, pattern: str) -> re.Match[str] | None:
    return re.search(pattern, output)


STAGE_RATES = r"Stage rates: (\d+) stages; achieved/target from ([\d.]+) \(stage \d+, \w+\) to ([\d.]+) "
COUNTED = r"Locust counted (\d+) requests; the suite counted (\d+)\."


# -- statistics --------------------------------------------------------------------------------------------------


@dataclass
class Series:
    values: list[float] = field(default_factory=list)

    def add(self, v: float) -> None:
        self.values.append(v)

    @property
    def ok(self) -> bool:
        return bool(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else 0.0

    @property
    def lo(self) -> float:
        return min(self.values) if self.values else 0.0

    @property
    def hi(self) -> float:
        return max(self.values) if self.values else 0.0


def paired(a: Series, b: Series) -> Series:
    """Per-repetition ratios a/b of runs made next to each other."""
    return Series([x / y for x, y in zip(a.values, b.values, strict=False) if y > 0])


def rps(v: float) -> str:
    return f"{v:,.0f}"


def ratio(v: float) -> str:
    return f"{v:.3f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


# -- sections ----------------------------------------------------------------------------------------------------

GENERATOR_OF_STEP = {
    "A": "suite",
    "B": "nolistener",
    "plain": "plain",
    "wrk": "wrk",
    "httpx": "httpx",
    "httpx10": "httpx10",
    "suite_drops": "suite_drops",
}
GENERATORS = {
    "suite": "suite user + listener (suite's count)",
    "suite_locust": "suite user + listener (Locust's count)",
    "nolistener": "suite user, listener removed (Locust's count)",
    "plain": "plain FastHttpUser (Locust's count)",
    "wrk": f"wrk -t1 -c{WRK_CONNECTIONS}",
    "httpx": "asyncio + httpx, 100 in flight / 100 connections",
    "httpx10": "asyncio + httpx, 10 in flight / 10 connections (reference)",
    "suite_drops": "suite user + listener, default --max-send-delay 1: late slots dropped (suite's count)",
}


@dataclass
class Results:
    settings: Settings
    urls: list[str] = field(default_factory=list)
    throughput: dict[str, Series] = field(default_factory=lambda: {k: Series() for k in GENERATORS})
    counts_agree: list[bool] = field(default_factory=list)
    failures: int = 0
    notes: list[str] = field(default_factory=list)
    accuracy: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # level label -> runs
    workers: dict[int, Series] = field(default_factory=lambda: {1: Series(), 2: Series()})
    workers_suite: dict[int, Series] = field(default_factory=lambda: {1: Series(), 2: Series()})
    workers_counts: list[tuple[int, int]] = field(default_factory=list)  # (Locust's, the suite's) per run
    limiter: list[tuple[str, float, str]] = field(default_factory=list)  # case, median req/s, runs
    limiter_output: str = ""
    elapsed: float = 0.0
    background: dict[str, Background] = field(default_factory=dict)  # per section
    run_background: dict[str, Background] = field(default_factory=dict)  # per generator / level / worker count
    gate: QuietGate = field(default_factory=lambda: QuietGate(0.0, 0.0))
    commit_start: str = ""
    commit_end: str = ""


def full_speed_args(s: Settings, urls: list[str], drop: bool = False) -> list[str]:
    """The suite far above one core. ``--max-send-delay 0``: every slot is sent (late), none dropped, so the
    figure is the cost of sending; with ``drop`` the default (1 s) applies and most slots are dropped unsent."""
    never_drop = [] if drop else ["--max-send-delay", "0"]
    return [*suite_args(s, urls, s.seconds, MAX_RPS, 30, 0), *never_drop, "-u", str(USERS), "-r", "1000"]


def measure_suite(
    urls: list[str], s: Settings, pin: list[str], tmp: Path, listener: bool, drop: bool = False
) -> LocustResult:
    args = full_speed_args(s, urls, drop)
    env = {} if listener else {"BENCH_NO_LISTENER": "1"}
    return run_locust([SUITE_LOCUSTFILE, PROBE], args, pin, tmp, s.seconds + 60, **env)


def throughput(r: Results, s: Settings, urls: list[str], load_pin: list[str], tmp: Path) -> None:
    """Sections 1 and 2: every generator once per repetition; A and B (listener on/off) always next to each other."""

    def suite_a() -> None:
        res = measure_suite(urls, s, load_pin, tmp, listener=True)
        lo, hi = suite_window(res, s)
        r.throughput["suite"].add(window_rate(res.per_sec("suite"), lo, hi))
        r.throughput["suite_locust"].add(window_rate(res.per_sec("locust"), lo, hi))
        r.failures += res.probe["locust_failures"]
        r.counts_agree.append(res.probe["suite_requests"] == res.probe["locust_requests"])

    def suite_drops() -> None:
        res = measure_suite(urls, s, load_pin, tmp, listener=True, drop=True)
        r.throughput["suite_drops"].add(window_rate(res.per_sec("suite"), *suite_window(res, s)))
        r.failures += res.probe["locust_failures"]

    def suite_b() -> None:
        res = measure_suite(urls, s, load_pin, tmp, listener=False)
        lo, hi = suite_window(res, s)
        r.throughput["nolistener"].add(window_rate(res.per_sec("locust"), lo, hi))
        r.failures += res.probe["locust_failures"]
        if res.probe.get("suite_requests"):
            raise BenchError("listener removal did not take: the suite still counted requests")

    def plain() -> None:
        # at least 3 s: the first and the last second of a plain run are partial and left out
        args = ["-t", f"{max(3, s.seconds)}s", "-H", urls[0], "-u", str(USERS), "-r", "1000"]
        res = run_locust([PLAIN_LOCUSTFILE, PROBE], args, load_pin, tmp, s.seconds + 60)
        per_sec = res.per_sec("locust")
        r.throughput["plain"].add(window_rate(per_sec, *plain_window(per_sec, s)))
        r.failures += res.probe["locust_failures"]

    def wrk() -> None:
        run = limiter_rps.wrk(urls[:1], WRK_CONNECTIONS, s.seconds, load_pin)
        r.throughput["wrk"].add(run.rps)

    def httpx(concurrency: int) -> Callable[[], None]:
        def go() -> None:
            cmd = [
                *load_pin,
                sys.executable,
                str(HTTPX_GENERATOR),
                "--urls",
                ",".join(u + "/" for u in urls),
                "--duration",
                str(s.seconds - s.warmup),
                "--warmup",
                str(1 + s.warmup if s.warmup else 0.5),  # as the Locust runs: start-up + warm-up, then measure
                "--concurrency",
                str(concurrency),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=s.seconds + 60, check=False)
            if proc.returncode != 0:
                raise BenchError(f"httpx generator failed:\n{proc.stderr[-3000:]}")
            r.throughput["httpx" if concurrency == 100 else "httpx10"].add(json.loads(proc.stdout)["rps"])

        return go

    has_httpx = subprocess.run([sys.executable, "-c", "import httpx"], capture_output=True).returncode == 0
    if not has_httpx:
        r.notes.append("httpx is not installed in this Python (pip install httpx): the httpx rows are missing.")
    has_wrk = shutil.which("wrk") is not None
    if not has_wrk:
        r.notes.append("wrk is not installed (apt-get install wrk): the wrk row is missing.")
    for rep in range(s.reps):
        ab = [("A", suite_a), ("B", suite_b)] if rep % 2 == 0 else [("B", suite_b), ("A", suite_a)]
        others: list[tuple[str, Callable[[], None]]] = [("plain", plain)]
        if has_wrk:
            others.append(("wrk", wrk))
        if has_httpx:
            others.append(("httpx", httpx(100)))
        if s.extras and rep % 2 == 0:  # the reference rows: every other repetition
            others += [*([("httpx10", httpx(10))] if has_httpx else []), ("suite_drops", suite_drops)]
        k = rep % len(others)
        order = [*ab, *others[k:], *others[:k]]  # A/B adjacent; the rest rotated, so nobody always runs first
        for name, fn in order:
            r.gate.wait()
            log(f"throughput rep {rep + 1}/{s.reps}: {name}")
            with background(r.run_background, GENERATOR_OF_STEP[name]):
                fn()


def stage_figures(res: LocustResult) -> dict[str, Any]:
    """Per stage: achieved/target over all its seconds and after its first second; per-second deviations."""
    per_sec = res.per_sec("suite")
    t0 = res.t0
    stages = []
    deviations: list[float] = []
    for index, mode, rate, start, end in res.probe["stages"]:
        first, last = t0 + int(start), t0 + int(end)
        if last - first < 1:
            continue
        whole = window_rate(per_sec, first, last) / rate
        after = window_rate(per_sec, first + 1, last) / rate if last - first >= 2 else None
        deviations += [per_sec.get(sec, 0) / rate - 1 for sec in range(first + 1, last)]
        stages.append({"index": index, "mode": mode, "target": rate, "whole": whole, "after_first": after})
    printed = summary_line(res.output, STAGE_RATES)
    return {
        "stages": stages,
        "stdev": statistics.pstdev(deviations) if len(deviations) > 1 else 0.0,
        "worst_second": max((abs(d) for d in deviations), default=0.0),
        "seconds": len(deviations),
        "printed": (float(printed.group(2)), float(printed.group(3))) if printed else None,
        "failures": res.probe["locust_failures"],
    }


def accuracy(r: Results, s: Settings, urls: list[str], load_pin: list[str], tmp: Path, core_max: float) -> None:
    """Section 3: the suite at fractions of its own max, steady x/3 with 3x bursts that hit x."""
    for rep in range(s.acc_reps):
        for fraction, default_users in LEVELS:
            if default_users and not s.extras:
                continue
            label = level_label(fraction, default_users)
            peak = fraction * core_max
            log(f"accuracy rep {rep + 1}/{s.acc_reps}: {label} of {core_max:,.0f} req/s (burst {peak:,.0f})")
            args = suite_args(s, urls, s.acc_seconds, round(peak / 3, 1), s.acc_every, s.acc_duration)
            if not default_users:
                args += ["-u", str(USERS), "-r", "1000"]
            r.gate.wait()
            with background(r.run_background, f"accuracy {label}"):
                res = run_locust([SUITE_LOCUSTFILE, PROBE], args, load_pin, tmp, s.acc_seconds + 60)
            figures = stage_figures(res)
            figures["peak"] = peak
            r.accuracy.setdefault(label, []).append(figures)


def distributed(r: Results, s: Settings, urls: list[str], tmp: Path) -> None:
    """Section 4: the suite at full speed with 1 and 2 worker processes (plus the master), unpinned."""
    for rep in range(s.dist_reps):
        for n in (1, 2) if rep % 2 == 0 else (2, 1):
            log(f"workers rep {rep + 1}/{s.dist_reps}: --processes {n}")
            port = limiter_rps.free_port()  # not Locust's fixed 5557 on all interfaces: a private port on loopback
            args = [
                *full_speed_args(s, urls),
                *("--processes", str(n)),
                *("--master-bind-host", "127.0.0.1", "--master-bind-port", str(port), "--master-port", str(port)),
            ]
            r.gate.wait()
            with background(r.run_background, f"workers {n}"):
                res = run_locust([SUITE_LOCUSTFILE, PROBE], args, [], tmp, s.seconds + 90)
            lo, hi = suite_window(res, s)
            # Locust's count: the suite's own misses a worker's last report (see the report's section 4)
            r.workers[n].add(window_rate(res.per_sec("locust"), lo, hi))
            r.workers_suite[n].add(window_rate(res.per_sec("suite"), lo, hi))
            r.workers_counts.append((res.probe["locust_requests"], res.probe["suite_requests"]))


def limiter(r: Results, s: Settings) -> None:
    """Section 5: bench/limiter_rps.py as it is (it pins the limiter and wrk itself)."""
    cmd = [sys.executable, str(BENCH / "limiter_rps.py")]
    if s.smoke:
        cmd += ["--smoke", "--cases", "1 process,redis: 1 node"]
    log("limiter: " + " ".join(cmd[1:]))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
    r.limiter_output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        r.notes.append(f"bench/limiter_rps.py exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
        return
    for line in proc.stdout.splitlines():
        for case in limiter_rps.CASES:
            if line.startswith(case.name):
                fields = line[len(case.name) :].split()
                r.limiter.append((case.name, float(fields[0].replace(",", "")), " ".join(fields[1:-2])))


# -- report ------------------------------------------------------------------------------------------------------


def commit() -> str:
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, cwd=ROOT)
    changed = len([ln for ln in dirty.stdout.splitlines() if ln.strip()])
    return (git.stdout.strip() or "?") + (f" + {changed} uncommitted change(s)" if changed else "")


def machine() -> dict[str, str]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    models = re.findall(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    mhz = re.findall(r"^cpu MHz\s*:\s*(.+)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=False).stdout.strip()

    def version(cmd: list[str], pattern: str) -> str:
        if not shutil.which(cmd[0]):
            return "not installed"
        p = subprocess.run(cmd, capture_output=True, text=True, check=False)
        m = re.search(pattern, p.stdout + p.stderr)
        return m.group(1) if m else "?"

    def dist(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "CPU": f"{models[0] if models else '?'} ({len(models)} logical CPUs in /proc/cpuinfo"
        + (f", {float(mhz[0]):.0f} MHz" if mhz else "")
        + ")",
        "nproc": nproc,
        "Memory": f"{int(mem.group(1)) / 1024 / 1024:.1f} GiB" if mem else "?",
        "Kernel": platform.release(),
        "Python": platform.python_version(),
        "locust": dist("locust"),
        "gevent / geventhttpclient": f"{dist('gevent')} / {dist('geventhttpclient')}",
        "httpx / httpcore": f"{dist('httpx')} / {dist('httpcore')}",
        "wrk": version(["wrk", "-v"], r"wrk (\S+)"),
        "nginx": version(["nginx", "-v"], r"nginx/(\S+)"),
        "redis-server": version(["redis-server", "--version"], r"v=(\S+)"),
    }


def goal_rows(r: Results) -> list[tuple[str, str, str, str]]:
    t = r.throughput
    rows = []
    lst = paired(t["suite"], t["plain"])
    if lst.ok:
        rows.append(
            (
                "suite user + listener vs plain FastHttpUser, per core",
                f">= {GOAL_LISTENER}x",
                f"{ratio(lst.median)}x (min {ratio(lst.lo)}, max {ratio(lst.hi)})",
                verdict(lst.median >= GOAL_LISTENER),
            )
        )
    hx = paired(t["suite"], t["httpx"])
    if hx.ok:
        rows.append(
            (
                "suite user + listener vs asyncio + httpx, per core",
                f">= {GOAL_HTTPX:g}x",
                f"{hx.median:.1f}x (min {hx.lo:.1f}, max {hx.hi:.1f})",
                verdict(hx.median >= GOAL_HTTPX),
            )
        )
    w = paired(r.workers[2], r.workers[1])
    if w.ok:
        rows.append(
            (
                "2 workers vs 1 worker (2-core machine: see section 4)",
                f">= {GOAL_WORKERS}x where cores allow",
                f"{ratio(w.median)}x (min {ratio(w.lo)}, max {ratio(w.hi)})",
                verdict(w.median >= GOAL_WORKERS)
                if (os.cpu_count() or 1) >= 3
                else f"not judged: {os.cpu_count()} cores (the 2nd worker shares a core with the target)",
            )
        )
    for level, runs in r.accuracy.items():
        devs = [abs(st["after_first"] - 1) for run in runs for st in run["stages"] if st["after_first"] is not None]
        stdev = max(run["stdev"] for run in runs)
        if devs:
            rows.append(
                (
                    f"rate accuracy at {level}: every stage after its first second",
                    f"within +-{GOAL_STAGE:.0%}",
                    f"worst stage off by {max(devs):.2%}",
                    verdict(max(devs) <= GOAL_STAGE),
                )
            )
        if any(run["seconds"] > 1 for run in runs):
            rows.append(
                (
                    f"rate accuracy at {level}: per-second std dev",
                    f"<= {GOAL_STDEV:.0%} of target",
                    f"{stdev:.2%} (worst run)",
                    verdict(stdev <= GOAL_STDEV),
                )
            )
    return rows


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def render(r: Results, command: str) -> str:
    s = r.settings
    t = r.throughput
    kind = "smoke run (CI check: figures come out; too short to judge the goals)" if s.smoke else "full run"
    target_desc = (
        f"nginx {machine()['nginx']} (1 worker process, `return 200`)"
        if s.target == "nginx"
        else "the demo limiter (`python -m demolimiter`, limit 10^9/s: nothing is limited)"
    )
    out = [
        "# Benchmark results",
        "",
        f"Written by `bench/run.py` ({kind}, {r.elapsed:.0f} s) on {time.strftime('%Y-%m-%d %H:%M %Z')}. Reproduce:",
        "",
        "```sh",
        ". .venv/bin/activate && pip install httpx   # once; plus apt-get install wrk nginx redis-server",
        command,
        "```",
        "",
        "## Machine",
        "",
        *table(
            ["", ""],
            [
                *([k, v] for k, v in machine().items()),
                [
                    "Commit",
                    r.commit_start
                    if r.commit_start == r.commit_end
                    else f"{r.commit_start} at the start, {r.commit_end} at the end (the code changed during the run)",
                ],
            ],
        ),
        "",
        f"Target: {target_desc}, {len(r.urls)} node(s) on 127.0.0.1, pinned to CPU 1 (`taskset -c 1`). Load "
        "generators pinned to CPU 0 (`taskset -c 0`) except in section 4. Everything is 127.0.0.1 only.",
        "",
        "Other processes on the machine (not started by the bench) used, per section, this share of all CPUs "
        "(/proc/stat busy time minus the bench's own process tree): "
        + ", ".join(f"section {k} {b.share:.1%}" for k, b in r.background.items())
        + ". Above a few percent the figures are disturbed (the *others' CPU* columns give it per row); the "
        "alternating repetitions and medians damp it"
        + (
            f", and before each run the bench waited up to 5 s for a half second in which other processes used "
            f"under {QUIET_SHARE:.0%} (waited {r.gate.waited:.0f} s in all, budget {r.gate.budget:.0f} s)."
            if r.gate.budget
            else "."
        ),
        "",
        "## Goals",
        "",
        *table(["Goal", "Wanted", "Measured (median of paired runs)", ""], [list(row) for row in goal_rows(r)]),
        "",
    ]
    out += [
        "## 1. Requests/s per core",
        "",
        f"{s.reps} alternating repetitions of {s.seconds} s per generator; each figure is the mean rate over the "
        f"whole seconds of a run after {'a 1 s warm-up' if s.warmup else 'its first second'}. The suite runs "
        f"`locustfiles/ratelimit.py --steady-rps {MAX_RPS:g} --burst-duration 0 --max-send-delay 0 -u {USERS} "
        "-r 1000` (far above one core, so it sends as fast as it can, every slot late but none dropped; its own "
        "count is by request start second, from its t0 on); the "
        f'plain FastHttpUser has the same {USERS} users, `wait_time = constant(0)` and one `self.client.get("/")`. '
        "All Locust runs: `--headless --only-summary`, generator pinned to CPU 0.",
        "",
    ]
    rows = []
    for key, label in GENERATORS.items():
        se = t[key]
        if se.ok:
            bg = r.run_background.get("suite" if key == "suite_locust" else key, Background())
            rows.append(
                [label, rps(se.median), rps(se.lo), rps(se.hi), ", ".join(rps(v) for v in se.values), f"{bg.share:.0%}"]
            )
    out += table(["Generator", "req/s median", "min", "max", "runs", "others' CPU"], rows)
    lst, hx, ceiling = paired(t["suite"], t["plain"]), paired(t["suite"], t["httpx"]), paired(t["wrk"], t["suite"])
    out += [""]
    if lst.ok:
        out.append(
            f"- suite + listener / plain FastHttpUser: **{ratio(lst.median)}x** (min {ratio(lst.lo)}, max "
            f"{ratio(lst.hi)}); goal >= {GOAL_LISTENER}x: {verdict(lst.median >= GOAL_LISTENER)}."
        )
    if hx.ok:
        out.append(
            f"- suite + listener / asyncio + httpx: **{hx.median:.1f}x** (min {hx.lo:.1f}, max {hx.hi:.1f}); goal >= "
            f"{GOAL_HTTPX:g}x: {verdict(hx.median >= GOAL_HTTPX)}. httpx 0.28 / httpcore 1.0 scan the whole "
            "connection pool for every request (quadratic in connections; encode/httpcore#1035), so the generator "
            "with 100 connections is far slower than with 10"
            + ("; the 10-connection row shows how much." if t["httpx10"].ok else ".")
        )
    if t["suite_drops"].ok and t["suite"].ok:
        out.append(
            f"- With the default `--max-send-delay 1` at {MAX_RPS:g}/s (about "
            f"{1 - t['suite'].median / MAX_RPS:.0%} of the slots dropped unsent, each still claimed, timed and "
            f"counted) the suite sends {ratio(t['suite_drops'].median / t['suite'].median)}x as many requests as "
            "with `--max-send-delay 0` (ratio of medians; that row ran in every other repetition)."
        )
    if ceiling.ok:
        out.append(
            f"- wrk / suite: {ceiling.median:.1f}x: the target is not the bottleneck for any Python generator here."
        )
    agree = all(r.counts_agree) if r.counts_agree else None
    out.append(
        f"- The suite's count equalled Locust's in {'every' if agree else 'not every'} run; Locust failures in all "
        f"locust runs of sections 1-2: {r.failures}."
    )
    out += ["", "## 2. Listener overhead (A/B)", ""]
    ab = paired(t["suite_locust"], t["nolistener"])
    if ab.ok:
        out += [
            "A = the suite's user with the suite's request listener, B = the same user with that listener removed "
            "(`bench/probe.py` with `BENCH_NO_LISTENER=1` takes `Suite.on_request` off `events.request` after the "
            "suite's init). Both counted by Locust over the same window; A and B ran next to each other, in "
            "alternating order.",
            "",
            *table(
                ["", "median", "min", "max"],
                [
                    [
                        "A (listener) req/s",
                        rps(t["suite_locust"].median),
                        rps(t["suite_locust"].lo),
                        rps(t["suite_locust"].hi),
                    ],
                    [
                        "B (no listener) req/s",
                        rps(t["nolistener"].median),
                        rps(t["nolistener"].lo),
                        rps(t["nolistener"].hi),
                    ],
                    ["A/B per pair", ratio(ab.median), ratio(ab.lo), ratio(ab.hi)],
                ],
            ),
            "",
            f"Listener overhead: **{(1 - ab.median):+.1%}** of throughput (median of pairs; a negative figure means A "
            "was faster: noise). B / plain FastHttpUser (the cost of the pacer and the suite's user without the "
            f"listener): {ratio(paired(t['nolistener'], t['plain']).median)}x.",
        ]
    out += ["", "## 3. Rate accuracy per stage", ""]
    core_max = t["suite"].median
    out += [
        f"x = the suite's max from section 1 ({rps(core_max)} req/s). Per level: `--steady-rps x*level/3 "
        f"--burst-multiplier 3 --burst-every {s.acc_every} --burst-duration {s.acc_duration} -t {s.acc_seconds}s`, "
        f"`-u {USERS} -r 1000` as in section 1 (so that x is the max of the same configuration), or, in the rows "
        "marked *default -u*, the suite's defaults (`-u` = peak x 0.05, i.e. "
        f"{max(10, math.ceil(0.9 * core_max * 0.05))} users at 90%, and spawn rate 100/s); generator pinned to "
        f"CPU 0; {s.acc_reps} run(s) per level, levels alternating. Achieved rates are the suite's own per-second "
        "counts by request start time (the numbers behind its `Stage rates` line and status line; read at exit by "
        "`bench/probe.py` through `RunView.started_between`). *Printed* is the suite's own `Stage rates` line "
        "(whole stages, first second included); *after 1st s* leaves each stage's first second out; the per-second "
        "std dev is that of "
        "achieved/target over those seconds.",
        "",
    ]
    rows = []
    for level, runs in r.accuracy.items():
        stages = [st for run in runs for st in run["stages"]]
        after = [st["after_first"] for st in stages if st["after_first"] is not None]
        printed = [run["printed"] for run in runs if run["printed"]]
        rows.append(
            [
                level,
                f"{rps(runs[0]['peak'] / 3)} / {rps(runs[0]['peak'])}",
                f"{min(p[0] for p in printed):.3f} - {max(p[1] for p in printed):.3f}" if printed else "n/a",
                f"{min(after):.4f} - {max(after):.4f}" if after else "n/a (stages too short)",
                ", ".join(f"{run['stdev']:.2%}" for run in runs),
                ", ".join(f"{run['worst_second']:.2%}" for run in runs),
                str(sum(run["failures"] for run in runs)),
                f"{r.run_background.get(f'accuracy {level}', Background()).share:.0%}",
            ]
        )
    out += table(
        [
            "Level",
            "steady / burst req/s",
            "Printed Stage rates (min - max)",
            "After 1st s (min - max)",
            "Per-second std dev",
            "Worst second",
            "Failures",
            "others' CPU",
        ],
        rows,
    )
    out += [
        "",
        "Per stage, every run (achieved/target, whole stage | after its first second):",
        "",
    ]
    for level, runs in r.accuracy.items():
        for i, run in enumerate(runs):
            parts = [
                f"{st['index']} {st['mode']} {st['whole']:.4f}"
                + (f" / {st['after_first']:.4f}" if st["after_first"] is not None else "")
                for st in run["stages"]
            ]
            out.append(f"- {level} run {i + 1}: " + "; ".join(parts))
    out += ["", "## 4. Distributed: 1 worker vs 2 workers", ""]
    w = paired(r.workers[2], r.workers[1])
    if w.ok:
        out += [
            f"`--processes 1` vs `--processes 2` (a master plus N forked workers), the suite at full speed as in "
            f"section 1 (`-u {USERS}` split over the workers), generator unpinned, target pinned to CPU 1; "
            f"{s.dist_reps} alternating repetition(s) of {s.seconds} s, the master bound to a free port on 127.0.0.1. "
            "Figures are Locust's count on the master (workers' stats, by completion second) over the same window "
            "as section 1; the suite's own count is in the last column (see the note below the table).",
            "",
            *table(
                ["", "req/s median", "min", "max", "runs", "suite's count, median", "others' CPU"],
                [
                    [
                        f"{n} worker(s)",
                        rps(se.median),
                        rps(se.lo),
                        rps(se.hi),
                        ", ".join(rps(v) for v in se.values),
                        rps(r.workers_suite[n].median),
                        f"{r.run_background.get(f'workers {n}', Background()).share:.0%}",
                    ]
                    for n, se in r.workers.items()
                ],
            ),
            "",
            f"2 workers / 1 worker: **{ratio(w.median)}x** (min {ratio(w.lo)}, max {ratio(w.hi)}).",
            "",
            "Whole runs, Locust's count vs the suite's (master): "
            + ", ".join(f"{a} vs {b}" for a, b in r.workers_counts)
            + ". "
            + (
                "They differ: a worker's last report is drained after `test_stop` cleared its pacer's plan, so "
                "it carries run id -1 and the master leaves it out of the run's counts (summary, `Stage rates`); "
                "the Prometheus totals have it."
                if any(a != b for a, b in r.workers_counts)
                else "They agree."
            ),
            "",
            f"What this measures on a {os.cpu_count()}-core machine: with one worker, that worker has a core to itself "
            "and the master, the target and the OS share the other. With two workers, both cores carry a worker "
            "*and* the target (pinned to CPU 1), the master and the OS, so the second worker gets well under one "
            "core. The ratio is therefore a lower bound of the scaling, and says mainly that the slot split across "
            "workers adds no coordination cost that would stop the second worker from adding load; the 1.7x goal "
            "needs at least 3 cores (2 for the workers, 1 for target and master) to be judged.",
        ]
    out += ["", "## 5. Demo limiter requests/s (bench/limiter_rps.py)", ""]
    if r.limiter:
        out += table(["Case", "req/s median", "runs", ""], [[name, rps(v), runs, ""] for name, v, runs in r.limiter])
        mem = next((v for name, v, _ in r.limiter if name.startswith("memory: 3 nodes, 1 process")), None)
        red = next((v for name, v, _ in r.limiter if name.startswith("redis: 1 node")), None)
        red3 = next((v for name, v, _ in r.limiter if name.startswith("redis: 3 node processes")), None)
        if mem and red:
            out += ["", f"redis (1 node process) / memory: {ratio(red / mem)}x per server core."]
        if mem and red3:
            out.append(f"redis (3 node processes) / memory: {ratio(red3 / mem)}x (one core shared by 3 nodes + redis).")
    out += ["", "Output of bench/limiter_rps.py:", "", "```", r.limiter_output, "```"]
    if r.notes:
        out += ["", "## Notes", "", *(f"- {n}" for n in r.notes)]
    return "\n".join(out) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="a few seconds per item, one repetition (CI)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the report (default {DEFAULT_OUT})")
    p.add_argument("--target", choices=("nginx", "demolimiter"), help="static target (default nginx if installed)")
    p.add_argument("--nodes", type=int, default=1, help="target nodes (ports) the suite round-robins over (default 1)")
    p.add_argument("--reps", type=int, help="repetitions of sections 1-2 (default 5; smoke 1)")
    p.add_argument("--seconds", type=int, help="seconds per throughput run (default 5; smoke 1)")
    ns = p.parse_args()
    s = settings(ns)
    started = time.monotonic()
    r = Results(s)
    r.commit_start = commit()
    if not s.smoke:
        r.gate = QuietGate(per_run=5.0, budget=120.0)
    server_pin, load_pin = limiter_rps.cpus()
    if not server_pin:
        r.notes.append("fewer than 2 CPUs or no taskset: nothing was pinned")
    with tempfile.TemporaryDirectory(prefix="rlsuite-bench-") as tmp_name:
        tmp = Path(tmp_name)
        with target(s.target, s.nodes, server_pin, tmp) as urls:
            r.urls = urls
            log(f"target {s.target}: {', '.join(urls)}")
            with background(r.background, "1-2"):
                throughput(r, s, urls, load_pin, tmp)
            core_max = r.throughput["suite"].median
            with background(r.background, "3"):
                accuracy(r, s, urls, load_pin, tmp, core_max)
            with background(r.background, "4"):
                distributed(r, s, urls, tmp)
    with background(r.background, "5"):
        limiter(r, s)
    r.elapsed = time.monotonic() - started
    r.commit_end = commit()
    argv = " ".join(sys.argv[1:])
    command = f"python bench/run.py {argv}".strip()
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(render(r, command))
    log(f"wrote {ns.out} in {r.elapsed:.0f}s")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(1)
