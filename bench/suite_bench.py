"""bench/run.py's sections: what each measures and how, the settings of a full or smoke run, and the results.

1. requests/s per core at full speed: the suite's user with its request listener vs the same user with the listener
   removed vs a plain FastHttpUser vs wrk (the ceiling) vs an asyncio + httpx generator;
2. the listener's overhead: the ratio of the alternating A/B runs of section 1;
3. rate accuracy at fractions of the suite's max, with bursts;
4. distributed: --processes 1 vs --processes 2;
5. the demo limiter's requests/s per backend (bench/limiter_rps.py).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import BenchError, limiter_rps, log
from bench.locust_runs import LocustResult, run_locust
from bench.quiet import Background, QuietGate, background
from bench.stats import Series, window_rate
from bench.wrk import wrk
from tests.support import free_port

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent

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
        # long enough that whole seconds remain once the first (partial) second, the warm-up and the last (partial)
        # second are left out, also when a loaded machine starts the users late
        args = ["-t", f"{max(4 + s.warmup, s.seconds)}s", "-H", urls[0], "-u", str(USERS), "-r", "1000"]
        res = run_locust([PLAIN_LOCUSTFILE, PROBE], args, load_pin, tmp, s.seconds + 60)
        per_sec = res.per_sec("locust")
        r.throughput["plain"].add(window_rate(per_sec, *plain_window(per_sec, s)))
        r.failures += res.probe["locust_failures"]

    def wrk_ceiling() -> None:
        run = wrk(urls[:1], WRK_CONNECTIONS, s.seconds, load_pin)
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
            others.append(("wrk", wrk_ceiling))
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
            port = free_port()  # not Locust's fixed 5557 on all interfaces: a private port on loopback
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
