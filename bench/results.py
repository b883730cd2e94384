"""bench/run.py's report (RESULTS.md): the machine, the goals, then one part per section."""

from __future__ import annotations

import math
import os
import time

from bench.quiet import QUIET_SHARE, Background
from bench.report import machine, ratio, rps, table, verdict
from bench.stats import paired
from bench.suite_bench import (
    GENERATORS,
    GOAL_HTTPX,
    GOAL_LISTENER,
    GOAL_STAGE,
    GOAL_STDEV,
    GOAL_WORKERS,
    MAX_RPS,
    USERS,
    Results,
)


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


def head(r: Results, command: str) -> list[str]:
    """Title, how to reproduce, the machine, the target, other processes' load, the goals."""
    s = r.settings
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
    return out


def requests_per_core(r: Results) -> list[str]:
    """Section 1: requests/s per core of every generator, and the ratios the goals are about."""
    s = r.settings
    t = r.throughput
    out = [
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
    return out


def listener_overhead(r: Results) -> list[str]:
    """Section 2: the suite's user with and without its request listener, side by side."""
    t = r.throughput
    out = ["", "## 2. Listener overhead (A/B)", ""]
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
    return out


def rate_accuracy(r: Results) -> list[str]:
    """Section 3: achieved/target per stage at fractions of the suite's max."""
    s = r.settings
    t = r.throughput
    out = ["", "## 3. Rate accuracy per stage", ""]
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
    return out


def distributed(r: Results) -> list[str]:
    """Section 4: 1 worker vs 2 workers."""
    s = r.settings
    out = ["", "## 4. Distributed: 1 worker vs 2 workers", ""]
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
    return out


def limiter(r: Results) -> list[str]:
    """Section 5: the demo limiter's requests/s per backend, and bench/limiter_rps.py's own output."""
    out = ["", "## 5. Demo limiter requests/s (bench/limiter_rps.py)", ""]
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
    return out


def render(r: Results, command: str) -> str:
    out = [
        *head(r, command),
        *requests_per_core(r),
        *listener_overhead(r),
        *rate_accuracy(r),
        *distributed(r),
        *limiter(r),
    ]
    if r.notes:
        out += ["", "## Notes", "", *(f"- {n}" for n in r.notes)]
    return "\n".join(out) + "\n"
