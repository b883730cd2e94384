"""The generator at its limits: requests/s at overload with the default options, latencies that stay within the
timeout, and CPU per request at a fixed rate; the suite side by side with plain Locust, in one run.

1. Overload: the suite with the options a user would run, `--steady-rps 15000 --burst-duration 0` (far beyond one
   core; everything that shapes the load is default: -u from the formula, --max-send-delay 1, --request-timeout 2)
   vs a plain FastHttpUser with 100 users and no wait (bench/plain_locustfile.py), and with 50, as many as the
   suite lets send (hand-picked). Requests/s per core (generator pinned to one CPU, the target to the other) and,
   from the suite's runs, the largest latencies: Locust's max response time, the suite's own (service and from the
   intended send time) against --request-timeout and --max-send-delay, and failures by kind (``pool_timeout``).
2. CPU per request at a fixed rate: the suite at `--steady-rps 4000 --burst-duration 0` (defaults) vs a plain
   FastHttpUser paced by Locust's `constant_throughput` (100 users x 40/s, bench/paced_locustfile.py): CPU seconds
   of the generator process over the measured seconds / requests Locust counted in them.
3. Rate accuracy near one core's max: the suite's peak (burst) rate at 50%, 70% and 90% of its own max on one core
   (section 1's median with the default options), steady at a third of it, bursts of 3 s every 6 s for 15 s,
   everything else default; the achieved rate of every stage (by request start time, as the suite prints it) against
   its target, and the late and dropped sends.

Runs alternate (each repetition runs every generator once, in rotated order); figures are medians with min/max and
the number of runs. With ``--baseline-root DIR`` a second copy of the suite (e.g. the last commit, from
``git archive HEAD | tar -x -C DIR``) runs beside the one measured (this checkout, or ``--suite-root DIR``) in both
sections, so before/after ratios come out of the same run.

    python bench/overload.py                          # about 13 minutes; prints the report, writes bench/OVERLOAD.md
    python bench/overload.py --baseline-root /tmp/base
    python bench/overload.py --smoke --out /tmp/O.md  # a few seconds per run: the figures come out

Everything runs on 127.0.0.1 (nginx, one worker process, 3 ports; the demo limiter without nginx), every run is
bounded in time, every process is stopped by PID.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
if __package__ in (None, ""):  # run as a script: `bench` is a package of the checkout's root
    sys.path.insert(0, str(ROOT))

from bench import BenchError, log  # noqa: E402
from bench.locust_runs import run_locust  # noqa: E402
from bench.processes import cpus  # noqa: E402
from bench.quiet import Background, QuietGate, background  # noqa: E402
from bench.report import commit, rps, table  # noqa: E402
from bench.stats import Series, paired, window_rate  # noqa: E402
from bench.targets import target  # noqa: E402

PROBE = BENCH / "overload_probe.py"
PLAIN = BENCH / "plain_locustfile.py"
PACED = BENCH / "paced_locustfile.py"
DEFAULT_OUT = BENCH / "OVERLOAD.md"

OVERLOAD_RPS = 15000.0  # beyond what one core can send
PLAIN_USERS = 100
PLAIN_FEW_USERS = 50  # as many as the suite's gate lets send at first (rlsuite.gate.BASE_ACTIVE)
FIXED_RPS = 4000.0
PACED_USERS, PACED_USER_RPS = 100, 40.0  # 100 x 40/s = FIXED_RPS
NODES = 3  # the default -u formula depends on it: peak x (0.05 + timeout / nodes)
REQUEST_TIMEOUT = 2.0  # the default, named here for the latency bounds
MAX_SEND_DELAY = 1.0  # the default

GOAL_OVERLOAD = 0.97  # suite / plain FastHttpUser requests/s per core at overload, default options
GOAL_CPU = 1.05  # suite / paced plain FastHttpUser CPU per request at 4,000/s
GOAL_ACCURACY = 0.01  # every stage's achieved rate within this share of its target, up to 90% of one core's max
ACCURACY_LEVELS = (0.5, 0.7, 0.9)  # peak rate / the suite's max on one core (section 1)
ACCURACY_MULTIPLIER = 3.0  # the default --burst-multiplier
ACCURACY_SHAPE = ("--burst-multiplier", f"{ACCURACY_MULTIPLIER:g}", "--burst-every", "6", "--burst-duration", "3")


@dataclass(frozen=True)
class Settings:
    reps: int
    overload_seconds: int
    fixed_seconds: int
    warmup: int  # whole seconds left out at the start of each measured window
    smoke: bool
    accuracy_seconds: int = 15  # two steady and two burst stages (ACCURACY_SHAPE)


def settings(ns: argparse.Namespace) -> Settings:
    if ns.smoke:
        return Settings(ns.reps or 1, 4, 5, 1, True, 9)
    return Settings(ns.reps or 5, ns.seconds or 10, 15, 2, False)


# -- one locust run, its CPU sampled -------------------------------------------------------------------------------


@dataclass
class Sampled:
    probe: dict[str, Any]
    output: str
    cpu: list[tuple[float, float]]  # (wall-clock time, CPU seconds of the locust process)

    def per_sec(self, which: str) -> dict[int, int]:
        return {int(k): v for k, v in self.probe.get(f"{which}_per_sec", {}).items()}

    def cpu_between(self, lo: float, hi: float) -> float:
        return _interpolate(self.cpu, hi) - _interpolate(self.cpu, lo)


def _interpolate(samples: list[tuple[float, float]], at: float) -> float:
    for (t1, c1), (t2, c2) in itertools.pairwise(samples):
        if t1 <= at <= t2:
            return c1 + (c2 - c1) * (at - t1) / (t2 - t1) if t2 > t1 else c1
    raise BenchError(f"no CPU samples around {at:.1f} ({len(samples)} samples)")


def run_sampled(files: list[Path], args: list[str], pin: list[str], tmp: Path, timeout: float, **env: str) -> Sampled:
    """One headless locust run to its end, its CPU time sampled every 0.1 s; the probe's JSON read back."""
    cpu: list[tuple[float, float]] = []
    res = run_locust(files, args, pin, tmp, timeout, cpu_samples=cpu, **env)
    return Sampled(res.probe, res.output, cpu)


def suite_args(
    urls: list[str], seconds: int, rps: float, shape: tuple[str, ...] = ("--burst-duration", "0")
) -> list[str]:
    """The suite with its defaults for everything that shapes the load but the rate (and ``shape``: steady only,
    unless given); only its output is quietened."""
    return [
        "-t",
        f"{seconds}s",
        "--node-hosts",
        ",".join(urls),
        "--steady-rps",
        f"{rps:g}",
        *shape,
        "--metrics-port",
        "0",
        "--metrics-linger",
        "0",
        "--stats-interval",
        "0",
    ]


def suite_window(res: Sampled, seconds: int, warmup: int) -> tuple[int, int]:
    t0 = int(res.probe["t0"])
    return t0 + warmup, t0 + seconds


def plain_window(res: Sampled, seconds: int, warmup: int) -> tuple[int, int]:
    """Whole seconds of a plain run: its first (partial) second and the warm-up out, then as long as the suite's."""
    per_sec = res.per_sec("locust")
    if not per_sec:
        raise BenchError("no requests counted")
    first = min(per_sec) + 1 + warmup
    return first, min(first + seconds - warmup, max(per_sec))


# -- the sections ----------------------------------------------------------------------------------------------------


@dataclass
class Results:
    settings: Settings
    target: str = ""
    suite: Path = ROOT
    baseline: Path | None = None
    overload: dict[str, Series] = field(default_factory=dict)  # generator -> req/s
    per_cpu: dict[str, Series] = field(default_factory=dict)  # generator -> requests per CPU-second
    latency: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # suite generator -> per run figures
    cpu: dict[str, Series] = field(default_factory=dict)  # generator -> CPU microseconds per request
    cpu_rate: dict[str, Series] = field(default_factory=dict)  # generator -> requests/s in the window
    max_rps: float = 0.0  # section 3's reference: the suite's max on one core
    max_from: str = ""
    accuracy: dict[tuple[str, float], list[dict[str, Any]]] = field(default_factory=dict)  # (suite, level) -> runs
    background: dict[str, Background] = field(default_factory=dict)
    gate: QuietGate = field(default_factory=lambda: QuietGate(0.0, 0.0))
    notes: list[str] = field(default_factory=list)


def suite_files(root: Path) -> list[Path]:
    return [root / "locustfiles" / "ratelimit.py", PROBE]


def overload(r: Results, s: Settings, urls: list[str], pin: list[str], tmp: Path) -> None:
    """Section 1: every generator once per repetition, in rotated order."""

    def record(name: str, res: Sampled, per_sec: dict[int, int], lo: int, hi: int) -> None:
        requests = sum(per_sec.get(sec, 0) for sec in range(lo, hi))
        r.overload.setdefault(name, Series()).add(requests / (hi - lo))
        # requests per CPU-second of the generator: its speed per core, whatever share of the core it got
        r.per_cpu.setdefault(name, Series()).add(requests / res.cpu_between(lo, hi))

    def suite(name: str, root: Path, *extra: str) -> Any:
        def go() -> None:
            args = [*suite_args(urls, s.overload_seconds, OVERLOAD_RPS), *extra]
            res = run_sampled(suite_files(root), args, pin, tmp, 120)
            record(name, res, res.per_sec("suite"), *suite_window(res, s.overload_seconds, s.warmup))
            p = res.probe
            r.latency.setdefault(name, []).append(
                {
                    "locust_max_s": p["locust_max_ms"] / 1000,
                    "service_max_s": p["service_max_s"],
                    "intended_max_s": p["intended_max_s"],
                    "errors": p["errors"],
                    "dropped": sum(n for k, n in p["sends"].items() if k.endswith("dropped")),
                    "users": p["users"],
                    "requests": p["suite_requests"],
                }
            )

        return go

    def plain(name: str, users: int) -> Any:
        def go() -> None:
            args = ["-t", f"{s.overload_seconds + 1}s", "-H", urls[0], "-u", str(users), "-r", "1000"]
            res = run_sampled([PLAIN, PROBE], args, pin, tmp, 120)
            record(name, res, res.per_sec("locust"), *plain_window(res, *_ov(s)))

        return go

    steps = [("suite", suite("suite", r.suite)), ("plain", plain("plain", PLAIN_USERS))]
    if r.baseline:
        steps.insert(1, ("baseline", suite("baseline", r.baseline)))
    if not s.smoke:
        steps.append(("nodrop", suite("nodrop", r.suite, "--max-send-delay", "0")))
        steps.append(("plainfew", plain("plainfew", PLAIN_FEW_USERS)))
    _alternate(r, s, "overload", steps)


def _ov(s: Settings) -> tuple[int, int]:
    return s.overload_seconds, s.warmup


def cpu_per_request(r: Results, s: Settings, urls: list[str], pin: list[str], tmp: Path) -> None:
    """Section 2: CPU seconds over the measured whole seconds / requests Locust counted in them (by completion)."""

    def record(name: str, res: Sampled, lo: int, hi: int) -> None:
        per_sec = res.per_sec("locust")
        requests = sum(per_sec.get(sec, 0) for sec in range(lo, hi))
        if not requests:
            raise BenchError(f"{name}: no requests in the window")
        r.cpu.setdefault(name, Series()).add(res.cpu_between(lo, hi) / requests * 1e6)
        r.cpu_rate.setdefault(name, Series()).add(requests / (hi - lo))

    def suite(name: str, root: Path) -> Any:
        def go() -> None:
            res = run_sampled(suite_files(root), suite_args(urls, s.fixed_seconds, FIXED_RPS), pin, tmp, 120)
            record(name, res, *suite_window(res, s.fixed_seconds, s.warmup))

        return go

    def paced() -> None:
        args = ["-t", f"{s.fixed_seconds + 1}s", "-H", urls[0], "-u", str(PACED_USERS), "-r", "1000"]
        res = run_sampled([PACED, PROBE], args, pin, tmp, 120, BENCH_USER_RPS=f"{PACED_USER_RPS:g}")
        record("paced", res, *plain_window(res, s.fixed_seconds, s.warmup))

    steps = [("suite", suite("suite", r.suite)), ("paced", paced)]
    if r.baseline:
        steps.insert(1, ("baseline", suite("baseline", r.baseline)))
    _alternate(r, s, "cpu", steps)


def accuracy(r: Results, s: Settings, urls: list[str], pin: list[str], tmp: Path) -> None:
    """Section 3: every level (and suite) once per repetition, in rotated order."""
    if "suite" in r.overload and r.overload["suite"].ok:
        r.max_rps, r.max_from = r.overload["suite"].median, "section 1's median, default options"
    else:
        rates = Series()
        for _ in range(1 if s.smoke else 3):
            r.gate.wait()
            res = run_sampled(suite_files(r.suite), suite_args(urls, s.overload_seconds, OVERLOAD_RPS), pin, tmp, 120)
            lo, hi = suite_window(res, s.overload_seconds, s.warmup)
            rates.add(window_rate(res.per_sec("suite"), lo, hi))
        r.max_rps, r.max_from = rates.median, f"median of {len(rates.values)} overload run(s) as in section 1"

    def level_run(name: str, root: Path, level: float) -> Any:
        def go() -> None:
            peak = r.max_rps * level
            args = suite_args(urls, s.accuracy_seconds, peak / ACCURACY_MULTIPLIER, ACCURACY_SHAPE)
            res = run_sampled(suite_files(root), args, pin, tmp, 120)
            p = res.probe
            r.accuracy.setdefault((name, level), []).append(
                {
                    "stages": p.get("stages", []),
                    "late": sum(n for k, n in p["sends"].items() if k.endswith("late")),
                    "dropped": sum(n for k, n in p["sends"].items() if k.endswith("dropped")),
                    "errors": sum(p["errors"].values()),
                    "requests": p["suite_requests"],
                }
            )

        return go

    steps = []
    for level in ACCURACY_LEVELS:
        steps.append((f"suite {level:.0%}", level_run("suite", r.suite, level)))
        if r.baseline:
            steps.append((f"baseline {level:.0%}", level_run("baseline", r.baseline, level)))
    _alternate(r, s, "accuracy", steps)


def _alternate(r: Results, s: Settings, section: str, steps: list[tuple[str, Any]]) -> None:
    for rep in range(s.reps):
        k = rep % len(steps)
        for name, fn in steps[k:] + steps[:k]:
            r.gate.wait()
            log(f"{section} rep {rep + 1}/{s.reps}: {name}")
            with background(r.background, f"{section} {name}"):
                fn()


# -- the report ------------------------------------------------------------------------------------------------------

LABELS = {
    "suite": "suite, default options",
    "baseline": "suite (--baseline-root), default options",
    "nodrop": "suite, --max-send-delay 0 (hand-picked: no slot dropped)",
    "plain": f"plain FastHttpUser, {PLAIN_USERS} users, no wait",
    "plainfew": f"plain FastHttpUser, {PLAIN_FEW_USERS} users, no wait (hand-picked: as many as the suite lets send)",
    "paced": f"plain FastHttpUser, {PACED_USERS} users x constant_throughput({PACED_USER_RPS:g})",
}


def _row(label: str, se: Series, fmt: Any, share: float) -> list[str]:
    return [label, fmt(se.median), fmt(se.lo), fmt(se.hi), str(len(se.values)), f"{share:.0%}"]


def _ratio(a: Series, b: Series) -> str:
    p = paired(a, b)
    return f"**{p.median:.3f}x** (min {p.lo:.3f}, max {p.hi:.3f}, {len(p.values)} pairs)" if p.ok else "n/a"


def _where(root: Path) -> str:
    return "this checkout" if root == ROOT else f"`{root}`"


def render(r: Results, command: str) -> str:
    s = r.settings
    share = {k: b.share for k, b in r.background.items()}
    out = [
        "# Overload, latency and CPU per request",
        "",
        f"Written by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} (commit "
        f"{commit()}); {os.cpu_count()} CPUs. The suite: {_where(r.suite)}"
        + (f"; the baseline suite: {_where(r.baseline)}" if r.baseline else "")
        + ". "
        f"Target: {r.target}, {NODES} ports on 127.0.0.1, pinned to CPU 1; every generator pinned to CPU 0. Runs "
        f"alternate; medians of {s.reps} repetition(s) with min/max; *others' CPU* is the share of all CPUs that "
        f"other processes used meanwhile (the machine is shared; before each run the bench waited up to 5 s for "
        f"a quiet half second: {r.gate.waited:.0f} s in all).",
        "",
        "## 1. Overload with the default options",
        "",
        f"The suite: `--steady-rps {OVERLOAD_RPS:g} --burst-duration 0 -t {s.overload_seconds}s` and nothing else "
        "that shapes the load (-u from the formula, --max-send-delay 1, --request-timeout 2; output quietened: "
        "`--metrics-port 0 --metrics-linger 0 --stats-interval 0`), counted by the suite by start second over "
        f"[t0+{s.warmup}, t0+{s.overload_seconds}). Plain: `-u {PLAIN_USERS} -r 1000 -H <first port>`, Locust's "
        "count over as many whole seconds after its first and the warm-up.",
        "",
        *table(
            ["Generator", "req/s median", "min", "max", "per CPU-second median", "min", "max", "runs", "others' CPU"],
            [
                [
                    LABELS[k],
                    rps(se.median),
                    rps(se.lo),
                    rps(se.hi),
                    rps(r.per_cpu[k].median),
                    rps(r.per_cpu[k].lo),
                    rps(r.per_cpu[k].hi),
                    str(len(se.values)),
                    f"{share.get(f'overload {k}', 0.0):.0%}",
                ]
                for k, se in r.overload.items()
                if se.ok
            ],
        ),
        "",
        "*Per CPU-second*: requests over the CPU time the generator process used in the same seconds, its speed per "
        "core whatever share of the core the machine's other processes left it (each generator is CPU-bound here).",
        "",
    ]
    ov, pc = r.overload, r.per_cpu
    for a, b, goal in (("suite", "plain", True), ("baseline", "plain", False), ("suite", "baseline", False)):
        if a in ov and b in ov:
            out.append(
                f"- {a} / {b}: {_ratio(ov[a], ov[b])} in requests/s, {_ratio(pc[a], pc[b])} per CPU-second"
                + (f"; goal >= {GOAL_OVERLOAD}x." if goal else ".")
            )
    if "nodrop" in ov and "plain" in ov:
        out.append(
            f"- suite with --max-send-delay 0 / plain: {_ratio(ov['nodrop'], ov['plain'])} in requests/s, "
            f"{_ratio(pc['nodrop'], pc['plain'])} per CPU-second (every slot sent, however late; the "
            "default drops those more than 1 s late, in Pacer.next_slot)."
        )
    if "plainfew" in ov and "plain" in ov:
        out.append(
            f"- suite / plain with {PLAIN_FEW_USERS} users: {_ratio(ov['suite'], ov['plainfew'])} in requests/s, "
            f"{_ratio(pc['suite'], pc['plainfew'])} per CPU-second; plain with {PLAIN_FEW_USERS} users / with "
            f"{PLAIN_USERS}: {_ratio(ov['plainfew'], ov['plain'])} in requests/s (fewer requests in flight cost "
            "less per request on a busy core, for plain Locust too)."
        )
    out += [
        "",
        f"Largest latencies of the suite's runs (bounds: --request-timeout {REQUEST_TIMEOUT:g} s for a request's own "
        f"time, plus --max-send-delay {MAX_SEND_DELAY:g} s from its intended send time):",
        "",
    ]
    rows = []
    for name, runs in r.latency.items():
        errors: dict[str, int] = {}
        for run in runs:
            for kind, n in run["errors"].items():
                errors[kind] = errors.get(kind, 0) + n
        rows.append(
            [
                LABELS[name],
                f"{max(run['locust_max_s'] for run in runs):.3f}",
                f"{max(run['service_max_s'] for run in runs):.3f}",
                f"{max(run['intended_max_s'] for run in runs):.3f}",
                ", ".join(f"{k} {v}" for k, v in sorted(errors.items()) if v) or "none",
                f"{statistics.median(run['dropped'] for run in runs):,.0f}",
                f"{max(run['users'] for run in runs):,}",
            ]
        )
    out += table(
        [
            "Suite",
            "Locust max response time s",
            "suite's max latency s",
            "max from intended send s",
            "failures by kind (all runs)",
            "dropped sends (median)",
            "users",
        ],
        rows,
    )
    if r.cpu:  # (section 2 ran)
        out += render_cpu(r, share)

    if r.accuracy:
        out += ["", *render_accuracy(r, share)]
    if r.notes:
        out += ["", "## Notes", "", *(f"- {n}" for n in r.notes)]
    return "\n".join(out) + "\n"


def render_cpu(r: Results, share: dict[str, float]) -> list[str]:
    s = r.settings
    out: list[str] = []
    out += [
        "",
        "## 2. CPU per request at a fixed rate",
        "",
        f"{FIXED_RPS:,.0f} requests/s for {s.fixed_seconds} s. The suite: `--steady-rps {FIXED_RPS:g} "
        f"--burst-duration 0` (defaults otherwise, as in 1); plain: `-u {PACED_USERS} -r 1000` with "
        f"`wait_time = constant_throughput({PACED_USER_RPS:g})`. CPU: utime + stime of the locust process "
        f"(/proc, sampled every 0.1 s) over the whole seconds after its first {s.warmup} (suite: from t0), divided "
        "by the requests Locust counted in those seconds.",
        "",
        *table(
            ["Generator", "CPU us/request median", "min", "max", "runs", "others' CPU"],
            [_row(LABELS[k], se, lambda v: f"{v:.1f}", share.get(f"cpu {k}", 0.0)) for k, se in r.cpu.items() if se.ok],
        ),
        "",
        "Requests/s in the measured seconds (median): "
        + ", ".join(f"{k} {rps(se.median)}" for k, se in r.cpu_rate.items())
        + ".",
        "",
    ]
    cpu = r.cpu
    if "suite" in cpu and "paced" in cpu:
        ratio = _ratio(cpu["suite"], cpu["paced"])
        out.append(f"- suite / paced plain, CPU per request: {ratio}; goal <= {GOAL_CPU}x.")
    if "baseline" in cpu and "paced" in cpu:
        out.append(f"- baseline suite / paced plain: {_ratio(cpu['baseline'], cpu['paced'])}.")
    if "baseline" in cpu and "suite" in cpu:
        out.append(f"- suite / baseline suite: {_ratio(cpu['suite'], cpu['baseline'])}.")
    return out


def _worst(run: dict[str, Any], key: str) -> float:
    """The largest |achieved/target - 1| over the run's stages (``key``: achieved or settled)."""
    offs = [abs(st[key] / st["rps"] - 1) for st in run["stages"] if st[key] is not None]
    return max(offs) if offs else float("nan")


def render_accuracy(r: Results, share: dict[str, float]) -> list[str]:
    s = r.settings
    out = [
        "## 3. Rate accuracy near one core's max",
        "",
        f"x = the suite's max on one core: {rps(r.max_rps)} req/s ({r.max_from}). Per level: peak (burst) "
        f"rate = level x x, `--steady-rps <peak / {ACCURACY_MULTIPLIER:g}> {' '.join(ACCURACY_SHAPE)} "
        f"-t {s.accuracy_seconds}s`, everything else default (-u from the formula, --max-send-delay 1; output "
        "quietened as in 1); generator pinned to CPU 0. Stages 0 and 2 steady, 1 and 3 burst; achieved rates are the "
        "suite's own, by request start second (`rlsuite.rates.stage_rates`, the numbers behind its `Stage rates` "
        "line): *whole stage* as the suite prints it, *after 1st s* leaving each stage's first second out. *Worst "
        "stage* is the largest |achieved/target - 1| of a run's stages.",
        "",
    ]
    rows, detail, goal = [], [], []
    for (name, level), runs in r.accuracy.items():
        whole = [st["achieved"] / st["rps"] for run in runs for st in run["stages"]]
        settled = [st["settled"] / st["rps"] for run in runs for st in run["stages"] if st["settled"] is not None]
        spread = [st["spread"] for run in runs for st in run["stages"] if st["spread"] is not None]
        worst = [_worst(run, "achieved") for run in runs]
        steady = r.max_rps * level / ACCURACY_MULTIPLIER
        within = sum(w <= GOAL_ACCURACY for w in worst)
        rows.append(
            [
                "suite" if name == "suite" else "baseline suite",
                f"{level:.0%}",
                f"{rps(steady)} / {rps(steady * ACCURACY_MULTIPLIER)}",
                f"{min(whole):.4f} - {max(whole):.4f}" if whole else "-",
                f"{min(settled):.4f} - {max(settled):.4f}" if settled else "-",
                f"{100 * statistics.median(worst):.2f}% ({100 * max(worst):.2f}%)",
                f"{100 * max(spread):.2f}%" if spread else "-",
                f"{statistics.median(run['late'] for run in runs):,.0f}",
                f"{statistics.median(run['dropped'] for run in runs):,.0f}",
                str(sum(run["errors"] for run in runs)),
                f"{within} of {len(runs)}",
                f"{share.get(f'accuracy {name} {level:.0%}', 0.0):.0%}",
            ]
        )
        if name == "suite":
            goal.append((level, within, len(runs)))
        for i, run in enumerate(runs, 1):
            stages = "; ".join(
                f"{st['index']} {st['mode']} {st['achieved'] / st['rps']:.4f}"
                + (f" / {st['settled'] / st['rps']:.4f}" if st["settled"] is not None else "")
                for st in run["stages"]
            )
            detail.append(f"- {name} {level:.0%} run {i}: {stages}; late {run['late']:,}, dropped {run['dropped']:,}")
    out += table(
        [
            "Suite",
            "Level",
            "target steady / burst req/s",
            "whole stage (all runs)",
            "after 1st s",
            "worst stage: median (max)",
            "per-second std dev (max)",
            "late (median)",
            "dropped (median)",
            "errors",
            f"runs within {GOAL_ACCURACY:.0%}",
            "others' CPU",
        ],
        rows,
    )
    out += ["", "Per stage, every run (achieved/target, whole stage / after its first second):", "", *detail, ""]
    for level, within, n in goal:
        out.append(
            f"- {level:.0%}: every stage within {GOAL_ACCURACY:.0%} of its target in {within} of {n} run(s); goal: "
            f"all, up to 90%."
        )
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="one short repetition (CI: the figures come out)")
    p.add_argument("--reps", type=int, help="repetitions per section (default 5; smoke 1)")
    p.add_argument("--seconds", type=int, help="seconds per overload run (default 10)")
    p.add_argument("--suite-root", type=Path, default=ROOT, help="the checkout of the suite to measure (default: this)")
    p.add_argument("--baseline-root", type=Path, help="another checkout of the suite to run beside it")
    p.add_argument("--sections", default="1,2,3", help="which sections (default 1,2,3)")
    p.add_argument("--target", choices=("nginx", "demolimiter"), help="static target (default nginx if installed)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the report (default {DEFAULT_OUT})")
    ns = p.parse_args()
    s = settings(ns)
    r = Results(s, suite=ns.suite_root.resolve(), baseline=ns.baseline_root.resolve() if ns.baseline_root else None)
    for option, root in (("--suite-root", r.suite), ("--baseline-root", r.baseline)):
        if root and not (root / "locustfiles" / "ratelimit.py").exists():
            raise BenchError(f"{option} {root}: no locustfiles/ratelimit.py there")
    if not s.smoke:
        r.gate = QuietGate(per_run=5.0, budget=180.0)
    server_pin, load_pin = cpus()
    if not server_pin:
        r.notes.append("fewer than 2 CPUs or no taskset: nothing was pinned")
    kind = ns.target or ("nginx" if shutil.which("nginx") else "demolimiter")
    r.target = "nginx (1 worker process, `return 200`)" if kind == "nginx" else "the demo limiter (memory, no limit)"
    sections = {x.strip() for x in ns.sections.split(",")}
    with tempfile.TemporaryDirectory(prefix="rlsuite-overload-") as tmp_name:
        tmp = Path(tmp_name)
        with target(kind, NODES, server_pin, tmp) as urls:
            if "1" in sections:
                overload(r, s, urls, load_pin, tmp)
            if "2" in sections:
                cpu_per_request(r, s, urls, load_pin, tmp)
            if "3" in sections:
                accuracy(r, s, urls, load_pin, tmp)
    command = f"python bench/overload.py {' '.join(sys.argv[1:])}".strip()
    text = render(r, command)
    ns.out.parent.mkdir(parents=True, exist_ok=True)
    ns.out.write_text(text)
    print(text)
    log(f"wrote {ns.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(1)
