"""Distributed runs: recovery after a worker is SIGKILLed, and 2 workers vs 1 worker. Prints a Markdown report.

Everything runs on 127.0.0.1, every run is bounded in time, every process is stopped by PID.

1. Recovery: a master and 2 separate worker processes send --steady-rps (default 200) to the demo limiter; one
   worker is SIGKILLed 5 s into the load. The limiter's own counters are polled every 25 ms, so the *server-counted*
   rate is known per second and per half second: when it is back above 95% of the target (and stays there), how
   far it fell, and how many requests the server answered that the master never counted, beside the bound the
   master's summary prints for the lost worker.
2. Scaling: the suite at full speed (far above what the generator can send, nothing dropped) with 1 and with 2
   worker processes (``--pin``: each pinned to its own CPU), the master unpinned, against nginx answering a fixed
   ``200 ok`` (the cheapest target there is: no parsing beyond HTTP, no state). A 2-core machine cannot give the
   target no CPU at all, so the CPU every process used is measured from /proc, and the scaling is also given
   per CPU-second of the workers: that is the scaling with a target (and master) that cost the workers no CPU,
   i.e. on a machine with a core per worker to spare.
3. Coordination cost: the CPU a master and 2 workers use at 10 req/s, where requests cost almost nothing: the
   price of the heartbeats (every 0.25 s), reports (every 1 s) and plans (about every 0.2 s).

    python bench/workers.py                          # all three sections, a few minutes
    python bench/workers.py --smoke                  # one short run of each (figures come out)
    python bench/workers.py --root /tmp/base         # the same against another checkout, e.g. of `git archive HEAD`
    python bench/workers.py --only recovery --reps 5
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import re
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: `bench` is a package of the checkout's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import log
from bench.processes import cpu_seconds, descendants
from bench.quiet import Background, QuietGate, background
from bench.stats import median_or_nan as med
from bench.targets import nginx
from tests.support import Proc, demo_cluster, free_port  # the tests' process helpers

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PROBE = BENCH / "probe.py"
KILL_AT = 5.0  # seconds into the load
RECOVERED = 0.95  # of the target
POLL_SECONDS = 0.025


# -- processes ---------------------------------------------------------------------------------------------------


def locust(root: Path, *args: str, pin: list[str] | None = None, env: dict[str, str] | None = None) -> Proc:
    files = f"{root / 'locustfiles' / 'ratelimit.py'},{PROBE}"
    return Proc([*(pin or []), sys.executable, "-m", "locust", "-f", files, *args], env=env, cwd=root)


def master(root: Path, workers: int, port: int, probe_out: Path, *args: str) -> Proc:
    return locust(
        root,
        "--master",
        "--headless",
        "--master-bind-host",
        "127.0.0.1",
        "--master-bind-port",
        str(port),
        "--expect-workers",
        str(workers),
        "--expect-workers-max-wait",
        "30",
        "--metrics-port",
        "0",
        "--metrics-linger",
        "0",
        "--loglevel",
        "INFO",
        *args,
        env={"BENCH_PROBE_OUT": str(probe_out)},
    )


def worker(root: Path, port: int, pin: list[str] | None = None) -> Proc:
    return locust(root, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port), pin=pin)


def t0_of(proc: Proc) -> float:
    """The run's t0 from the master's log line (`rlsuite: run 1 sends load from HH:MM:SS`): local time, whole s."""
    hms = proc.wait_for(r"rlsuite: run \d+ sends load from (\d\d:\d\d:\d\d)", timeout=60).group(1)
    now = time.time()
    day = time.strftime("%Y-%m-%d", time.localtime(now))
    t0 = time.mktime(time.strptime(f"{day} {hms}", "%Y-%m-%d %H:%M:%S"))
    return t0 + 86400 if t0 < now - 43200 else t0


def sleep_until(at: float) -> None:
    while (left := at - time.time()) > 0:
        time.sleep(min(left, 0.5))


def stop_all(*procs: Proc) -> None:
    for p in procs:
        p.stop()


# -- 1. recovery ---------------------------------------------------------------------------------------------------

COUNTER = re.compile(r"^demolimiter_requests_total\{[^}]*\} (\S+)$", re.M)


class Poller(threading.Thread):
    """The limiter's own count of requests answered (every decision, all nodes), every POLL_SECONDS."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__(daemon=True)
        self.urls = urls
        self.samples: list[tuple[float, float]] = []
        self._done = threading.Event()

    def count(self) -> float:
        total = 0.0
        for url in self.urls:
            with urllib.request.urlopen(url + "/metrics", timeout=2) as r:
                total += sum(float(v) for v in COUNTER.findall(r.read().decode()))
        return total

    def run(self) -> None:
        while not self._done.is_set():
            started = time.time()
            n = self.count()
            self.samples.append(((started + time.time()) / 2, n))
            self._done.wait(max(0.0, POLL_SECONDS - (time.time() - started)))

    def stop(self) -> None:
        self._done.set()
        self.join(5)

    def at(self, t: float) -> float:
        """The count at time t, interpolated between polls."""
        s = self.samples
        i = bisect.bisect_left(s, (t, -1.0))
        if i == 0 or i == len(s):
            return s[0][1] if i == 0 else s[-1][1]
        (t1, c1), (t2, c2) = s[i - 1], s[i]
        return c1 + (c2 - c1) * (t - t1) / (t2 - t1) if t2 > t1 else c1


@dataclass
class Recovery:
    killed: float  # seconds into the load
    back_after: float | None  # seconds after the kill from which every half second was >= 95% of the target
    per_second: list[float]  # server-counted requests per second of the run
    worst_after_2s: float  # lowest server-counted second from 2 s after the kill on, / target
    low_seconds: float  # seconds below 95% of the target, from the kill on (half-second resolution)
    unaccounted: int  # the server answered, the master never counted
    bound: int | None  # what the master's summary printed for the lost worker
    share_rps: float  # the lost worker's share of the target
    output: str = field(repr=False, default="")


def recovery_run(root: Path, rps: float, seconds: int, tmp: Path) -> Recovery:
    probe_out = tmp / f"recovery-{time.monotonic_ns()}.json"
    with demo_cluster("--limit", "1000000000", "--window", "1") as cluster:
        poller = Poller(cluster.urls)
        port = free_port()
        args = ["-t", f"{seconds}s", "--node-hosts", cluster.node_hosts, "--steady-rps", f"{rps:g}"]
        args += ["--burst-duration", "0", "--stats-interval", "0"]
        m = master(root, 2, port, probe_out, *args, "--limit", "1000000000")
        w1, w2 = worker(root, port), worker(root, port)
        try:
            t0 = t0_of(m)
            poller.start()
            sleep_until(t0 + KILL_AT)
            w2.signal(signal.SIGKILL)
            killed = time.time() - t0
            m.wait(seconds + 60)
            time.sleep(0.2)
        finally:
            poller.stop()
            stop_all(m, w1, w2)
    probe = json.loads(probe_out.read_text())
    t0 = probe["t0"]
    per_second = [poller.at(t0 + s + 1) - poller.at(t0 + s) for s in range(seconds)]
    halves = [(poller.at(t0 + h / 2 + 0.5) - poller.at(t0 + h / 2)) / (rps / 2) for h in range(2 * seconds)]
    from_kill = [h for h in range(2 * seconds) if h / 2 >= math.floor(killed * 2) / 2]
    low = [h for h in from_kill if halves[h] < RECOVERED]
    back = None if low and low[-1] == from_kill[-1] else (low[-1] + 1) / 2 - killed if low else 0.0
    after = [per_second[s] / rps for s in range(math.ceil(killed + 2), seconds)]
    server = poller.samples[-1][1]
    bound = re.search(r"at most (\d+) of its requests", m.output)
    return Recovery(
        killed=killed,
        back_after=back,
        per_second=per_second,
        worst_after_2s=min(after) if after else float("nan"),
        low_seconds=len(low) / 2,
        unaccounted=int(server - probe["suite_requests"]),
        bound=int(bound.group(1)) if bound else None,
        share_rps=rps / 2,
        output=m.output,
    )


# -- 2. scaling ----------------------------------------------------------------------------------------------------


@dataclass
class Scaling:
    workers: int
    rps: float  # Locust's count over the window
    worker_cpu: float  # cores the workers used over the window (sum)
    master_cpu: float
    target_cpu: float

    @property
    def per_worker_core(self) -> float:
        return self.rps / self.worker_cpu if self.worker_cpu else float("nan")


def cpu_of(pids: list[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def nginx_pids(tmp: Path) -> list[int]:
    """nginx's master and worker (bench/targets.py's nginx writes its pid file in a temp dir under ``tmp``)."""
    files = sorted(tmp.glob("nginx-*/nginx.pid"))
    deadline = time.monotonic() + 10
    while not files and time.monotonic() < deadline:
        time.sleep(0.05)
        files = sorted(tmp.glob("nginx-*/nginx.pid"))
    pid = int(files[-1].read_text().split()[0])
    return [pid, *descendants(pid)]


def scaling_run(root: Path, n: int, seconds: int, urls: list[str], target: list[int], tmp: Path, pin: bool) -> Scaling:
    probe_out = tmp / f"scaling-{n}-{time.monotonic_ns()}.json"
    port = free_port()
    cpus = sorted(os.sched_getaffinity(0))
    args = [
        "-t",
        f"{seconds}s",
        "--node-hosts",
        ",".join(urls),
        "--steady-rps",
        "50000",
        "--burst-duration",
        "0",
        "--max-send-delay",
        "0",
        "--request-timeout",
        "1",
        "--stats-interval",
        "0",
        "-u",
        "200",
        "-r",
        "1000",
    ]
    m = master(root, n, port, probe_out, *args)
    ws = [worker(root, port, ["taskset", "-c", str(cpus[i % len(cpus)])] if pin else None) for i in range(n)]
    try:
        t0 = t0_of(m)
        lo, hi = t0 + 1, t0 + seconds  # the first second out: users and connections warm up
        sleep_until(lo)
        pids = [w.popen.pid for w in ws]
        c0 = (cpu_of(pids), cpu_of([m.popen.pid]), cpu_of(target))
        sleep_until(hi)
        c1 = (cpu_of(pids), cpu_of([m.popen.pid]), cpu_of(target))
        m.wait(seconds + 60)
    finally:
        stop_all(m, *ws)
    probe = json.loads(probe_out.read_text())
    per_sec = {int(k): v for k, v in probe["locust_per_sec"].items()}  # by completion second
    rate = sum(per_sec.get(s, 0) for s in range(int(lo), int(hi))) / (hi - lo)
    span = hi - lo
    return Scaling(n, rate, (c1[0] - c0[0]) / span, (c1[1] - c0[1]) / span, (c1[2] - c0[2]) / span)


# -- 3. coordination cost -----------------------------------------------------------------------------------------


@dataclass
class Idle:
    master_cpu: float  # share of a core, over the window
    worker_cpu: float  # per worker


def idle_run(root: Path, seconds: int, urls: list[str], tmp: Path) -> Idle:
    """Master + 2 workers at 10 req/s: what heartbeats, reports and plan messages cost where requests cost ~nothing."""
    probe_out = tmp / f"idle-{time.monotonic_ns()}.json"
    port = free_port()
    args = ["-t", f"{seconds + 2}s", "--node-hosts", ",".join(urls), "--steady-rps", "10", "--burst-duration", "0"]
    m = master(root, 2, port, probe_out, *args, "--stats-interval", "0")
    ws = [worker(root, port) for _ in range(2)]
    try:
        t0 = t0_of(m)
        sleep_until(t0 + 1)
        c0 = (cpu_of([m.popen.pid]), cpu_of([w.popen.pid for w in ws]))
        sleep_until(t0 + 1 + seconds)
        c1 = (cpu_of([m.popen.pid]), cpu_of([w.popen.pid for w in ws]))
        m.wait(seconds + 60)
    finally:
        stop_all(m, *ws)
    return Idle((c1[0] - c0[0]) / seconds, (c1[1] - c0[1]) / seconds / 2)


# -- report --------------------------------------------------------------------------------------------------------


def fmt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def report_recovery(runs: list[Recovery], rps: float, seconds: int, root: Path) -> list[str]:
    out = [
        "## 1. Recovery after a worker is SIGKILLed",
        "",
        f"`{root}`: master + 2 workers, {rps:g} req/s steady for {seconds} s against the demo limiter; one worker "
        f"SIGKILLed about {KILL_AT:g} s into the load. Server-counted: the limiter's own counters, polled every "
        f"{POLL_SECONDS * 1000:g} ms.",
        "",
        "| run | killed at | back >= 95% after | s below 95% | worst second from kill+2 s | unaccounted | "
        "printed bound | unaccounted, s of its share |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(runs, 1):
        out.append(
            f"| {i} | {r.killed:.2f} s | {fmt(r.back_after)} s | {r.low_seconds:g} | {r.worst_after_2s:.3f} | "
            f"{r.unaccounted} | {r.bound if r.bound is not None else '-'} | {r.unaccounted / r.share_rps:.2f} |"
        )
    out += ["", "Server-counted requests per second (run 1): " + ", ".join(f"{c:.0f}" for c in runs[0].per_second)]
    backs = [r.back_after for r in runs if r.back_after is not None]
    out += [
        "",
        f"Median: back above 95% {fmt(med(backs))} s after the kill (goal: from 2 s); "
        f"unaccounted {med([r.unaccounted / r.share_rps for r in runs]):.2f} s of the lost worker's share "
        "(goal: at most 1.2 s); every bound >= unaccounted: "
        + ("yes" if all(r.bound is not None and r.bound >= r.unaccounted for r in runs) else "no"),
        "",
    ]
    return out


def report_scaling(results: dict[int, list[Scaling]], seconds: int, reps: int, pinned: bool) -> list[str]:
    out = [
        "## 2. 2 workers vs 1 worker",
        "",
        f"Full speed (`--steady-rps 50000 --max-send-delay 0 -u 200`), {reps} alternating repetition(s) of {seconds} s "
        f"(the first second out), {'each worker pinned to its own CPU' if pinned else 'workers unpinned'}, master "
        "unpinned, target nginx `return 200` (one nginx worker, unpinned). CPU: cores used over the window, from "
        "/proc; req/s per worker core = requests / CPU-seconds of the workers.",
        "",
        "| workers | req/s median (min-max) | workers' CPU | master CPU | target CPU | req/s per worker core |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for n, runs in sorted(results.items()):
        rates = [r.rps for r in runs]
        out.append(
            f"| {n} | {med(rates):,.0f} ({min(rates):,.0f}-{max(rates):,.0f}) | "
            f"{med([r.worker_cpu for r in runs]):.2f} | {med([r.master_cpu for r in runs]):.2f} | "
            f"{med([r.target_cpu for r in runs]):.2f} | "
            f"{med([r.per_worker_core for r in runs]):,.0f} |"
        )
    if 1 in results and 2 in results:
        raw = med([r.rps for r in results[2]]) / med([r.rps for r in results[1]])
        per_core = med([r.per_worker_core for r in results[2]]) / med([r.per_worker_core for r in results[1]])
        out += [
            "",
            f"2 workers / 1 worker, as measured: **{raw:.2f}x** (both workers share 2 cores with the target, the "
            f"master and whatever else runs on the machine). Requests per CPU-second of the workers, 2 workers / 1 "
            f"worker: {per_core:.3f} (1 = a second worker costs nothing per request): with a target and master that "
            f"take no CPU from the workers (a core per worker), 2 workers give **{2 * per_core:.2f}x**.",
            "",
        ]
    return out


def report_idle(runs: list[Idle], seconds: int) -> list[str]:
    return [
        "## 3. Coordination cost",
        "",
        f"Master + 2 workers at 10 req/s for {seconds} s ({len(runs)} run(s), medians): CPU that heartbeats, reports "
        f"and plan messages cost when requests cost almost nothing. Master {med([r.master_cpu for r in runs]):.1%} "
        f"of a core, each worker {med([r.worker_cpu for r in runs]):.1%} (CPU-time resolution: 10 ms).",
        "",
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="one short run of each section")
    p.add_argument(
        "--root", type=Path, default=ROOT, help="checkout whose locustfiles/ratelimit.py runs (default: this)"
    )
    p.add_argument("--only", choices=["recovery", "scaling", "cost"], help="one section only")
    p.add_argument("--reps", type=int, help="runs per case (default 3; smoke 1)")
    p.add_argument("--rps", type=float, default=200.0, help="recovery: target req/s (default 200)")
    p.add_argument("--out", type=Path, help="also write the report here")
    p.add_argument("--pin", action="store_true", help="scaling: pin worker i to CPU i (on a shared machine, don't)")
    ns = p.parse_args()
    reps = ns.reps or (1 if ns.smoke else 3)
    root = ns.root.resolve()
    lines = ["# Distributed runs: recovery, scaling, coordination cost", ""]
    gate = QuietGate(0.0 if ns.smoke else 5.0, 120.0)  # wait for other sessions' bursts to pass
    busy: dict[str, Background] = {}
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp_name:
        tmp = Path(tmp_name)
        if ns.only in (None, "recovery"):
            seconds = 8 if ns.smoke else 14
            runs = []
            for rep in range(reps):
                log(f"recovery {rep + 1}/{reps}")
                gate.wait()
                with background(busy, "recovery"):
                    runs.append(recovery_run(root, ns.rps, seconds, tmp))
            lines += report_recovery(runs, ns.rps, seconds, root)
        if ns.only in (None, "scaling"):
            seconds = 3 if ns.smoke else 8
            results: dict[int, list[Scaling]] = {1: [], 2: []}
            with nginx(3, [], tmp) as urls:
                target_pids = nginx_pids(tmp)
                for rep in range(reps):
                    for n in (1, 2) if rep % 2 == 0 else (2, 1):
                        log(f"scaling {rep + 1}/{reps}: {n} worker(s)")
                        gate.wait()
                        with background(busy, f"scaling {n}"):
                            results[n].append(scaling_run(root, n, seconds, urls, target_pids, tmp, ns.pin))
            lines += report_scaling(results, seconds, reps, ns.pin)
        if ns.only in (None, "cost"):
            seconds = 3 if ns.smoke else 10
            idle = []
            with nginx(3, [], tmp) as urls:
                for rep in range(reps):
                    log(f"cost {rep + 1}/{reps}")
                    idle.append(idle_run(root, seconds, urls, tmp))
            lines += report_idle(idle, seconds)
    if busy:
        lines.append(
            "Other processes on the machine (not started by this bench) used, of all CPUs: "
            + ", ".join(f"{name} {b.share:.0%}" for name, b in busy.items())
            + "."
        )
    text = "\n".join(lines)
    print(text)
    if ns.out:
        ns.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
