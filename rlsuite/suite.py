"""Wiring the suite into a Locust environment: options, per-role listeners, console and export.

``register(events)`` is all a locustfile calls at import; everything else happens in ``init``, per role:

- every process that sends requests (standalone or worker) counts them in a ``Tally``;
- a worker adopts the plans the master sends and ships its tally deltas in ``report_to_master``;
- the master (or standalone process) validates the options before any user starts, owns the ``Conductor``, merges
  deltas into ``Totals``, prints the status line and summary, and is the only one serving /metrics.
"""

from __future__ import annotations

from locust import argument_parser as locust_argument_parser
from locust.exception import RPCError
from locust.runners import STATE_INIT, STATE_RUNNING, STATE_SPAWNING, MasterRunner, WorkerRunner

import atexit
import functools
import json
import logging
import math
import signal
import sys
import time
from pathlib import Path
from typing import Any

import gevent

from rlsuite import console, exporter, pacing, policy, schedule, targets, webui
from rlsuite.classify import ERROR, LIMITED, REFUSED, error_kind, outcome_of
from rlsuite.conductor import Conductor, default_users, tune_locust_timers
from rlsuite.csvfiles import CsvFiles
from rlsuite.headers import HeaderChecker
from rlsuite.metrics import Status, TotalsCollector, build_registry
from rlsuite.options import OptionError
from rlsuite.pacing import Pacer
from rlsuite.plan import MESSAGE, PROGRESS_KEY, READY, RETURN, Plan, progress_to_message
from rlsuite.replay import ADMITTED, BURST_FLAG, UNKNOWN, UNSENT
from rlsuite.replay import LIMITED as LIMITED_CODE
from rlsuite.schedule import BURST
from rlsuite.tally import DELTA_KEY, Tally, Totals
from rlsuite.users import CONTEXT_KEY
from rlsuite.verdict import PASS, Verdict, evaluate

logger = logging.getLogger(__name__)

# Clocks closer than this are treated as the same clock: a correction would only add the message latency.
CLOCK_SKEW_TOLERANCE = 0.05
# How far behind a master's counts are while a run goes on: workers report every 3 s (Locust's
# WORKER_REPORT_INTERVAL), plus a second for the report to arrive.
REPORT_LAG_SECONDS = 4.0
# Users per second at least; Locust warns above 100 per worker. Pacing does not depend on it: slots are sent on time
# by whichever users exist.
DEFAULT_SPAWN_RATE = 100.0


def register(events: Any) -> None:
    events.init_command_line_parser.add_listener(add_arguments)
    events.init.add_listener(_on_init)


def add_arguments(parser: Any) -> None:
    targets.add_arguments(parser)
    schedule.add_arguments(parser)
    pacing.add_arguments(parser)
    policy.add_arguments(parser)
    exporter.add_arguments(parser)
    console.add_arguments(parser)


def check_options(opts: Any) -> None:
    """Every option check; raises OptionError with a one-line message."""
    targets.from_options(opts)
    schedule.from_options(opts)
    pacing.check_options(opts)
    policy.from_options(opts)
    exporter.check_options(opts)
    console.check_options(opts)


def fail_fast(error: OptionError) -> None:
    """Bad input: one line naming the option and the fix, exit code 2, nothing started."""
    sys.stderr.write(f"error: {error}\n")
    sys.stderr.flush()
    raise SystemExit(2)


class Suite:
    """Per-environment state; reach it as ``environment.rlsuite``."""

    def __init__(self, environment: Any) -> None:
        self.environment = environment
        self.pacer = Pacer(on_adopt=self._on_plan_adopted, on_drop=self._on_dropped)
        self.headers = HeaderChecker(window_based=False)
        self.tally = Tally()
        self.totals = Totals()
        self.status = Status()
        self.conductor: Conductor | None = None
        self.exporter: exporter.Exporter | None = None
        self.csv: CsvFiles | None = None  # with --csv: the suite's own CSV files beside Locust's
        self._printer: gevent.Greenlet | None = None
        self._summarised_run = 0
        self._run_id = -1  # of the last plan adopted
        self._recorded = 0  # requests drained into reports since the process started (with pacer.taken: in flight)
        self._reports_sent = 0
        self._clock_offset: tuple[tuple[str, int], float] = (("", -1), 0.0)  # (epoch, run id), smallest offset seen

    @property
    def runner(self) -> Any:
        return self.environment.runner

    @property
    def is_worker(self) -> bool:
        return isinstance(self.runner, WorkerRunner)

    @property
    def is_master(self) -> bool:
        return isinstance(self.runner, MasterRunner)

    # -- counting (standalone and workers) ---------------------------------------------------------------------

    def on_request(
        self, context: dict, exception: Any, response_time: float, start_time: float, response: Any, **_: Any
    ) -> None:
        slot = context.get(CONTEXT_KEY)
        if slot is None:
            return  # not one of ours
        seconds = response_time / 1000.0
        status = response.status_code or 0
        outcome = outcome_of(status, exception is not None)
        if outcome == ERROR:
            kind = error_kind(status, getattr(response, "error", None) or exception)
            code = UNSENT if kind == REFUSED else UNKNOWN  # a refused connection never reached the limiter
        else:
            kind = None
            code = LIMITED_CODE if outcome == LIMITED else ADMITTED
            self.headers.check(
                response.headers,
                outcome == LIMITED,
                slot.node.name,
                slot.key,
                start_time,
                start_time + seconds,
                self.tally.found,
            )
        if slot.mode == BURST:
            code |= BURST_FLAG
        self.tally.record(
            slot.mode,
            outcome,
            slot.node.name,
            seconds,
            start_time,
            kind,
            slot.key,
            start_time - slot.due,
            code,
            slot.node_index,
        )

    def _on_dropped(self, mode: str, slots: range) -> None:
        self.tally.dropped(mode, len(slots))

    def _on_plan_adopted(self, plan: Plan) -> None:
        self._run_id = plan.run_id
        if plan.window_rule != self.headers.window_based:
            self.headers = HeaderChecker(plan.window_rule)

    def current_run_id(self) -> int:
        """The run the counts in the tally belong to: the last plan's, even after test_stop cleared it (a worker's
        final report is drained after that)."""
        return self._run_id

    def drain(self) -> dict:
        self.tally.advertised |= self.headers.advertised
        return self.tally.drain(self.current_run_id())

    def sync(self) -> None:
        """Bring the totals up to date: a standalone process drains its own tally (a master gets worker deltas)."""
        if not self.is_master and not self.is_worker:
            self.totals.absorb(self.drain())

    # -- worker side -------------------------------------------------------------------------------------------

    def on_plan_message(self, environment: Any, msg: Any, **_: Any) -> None:
        data = msg.data
        # local minus master clock, plus this message's latency: the smallest over the run's lead and first second
        # is the estimate, fixed after that (plans come five times a second: a delayed message must not move t0, nor
        # a step of the master's clock later in the run)
        now = time.time()
        offset = now - data["sent_at"]
        run = (data["epoch"], data["run_id"])
        seen_run, seen = self._clock_offset
        if run == seen_run:
            offset = min(offset, seen) if now < data["t0"] + seen + 1.0 else seen
        self._clock_offset = (run, offset)
        current = self.pacer.plan
        plan = Plan.from_message(data, offset if abs(offset) > CLOCK_SKEW_TOLERANCE else 0.0, current)
        if plan is None:
            return  # grants of a run whose plan has not reached this worker yet: the master resends it every second
        share = current.grants[-1][2:] if current and current.grants else None
        if self.pacer.apply(plan) and plan.grants and plan.grants[-1][2:] != share:
            start, _, index, count = plan.grants[-1]
            logger.debug("adopted plan v%s: share %s/%s from slot %s", plan.version, index, count, start)

    def in_flight(self) -> int:
        """Slots handed to users whose request is not recorded in a drained report yet."""
        return self.pacer.taken - self._recorded - sum(self.tally.requests.values())

    def on_report_to_master(self, data: dict, **_: Any) -> None:
        in_flight = self.in_flight()  # before the drain: the requests recorded since the last one are in it
        data[DELTA_KEY] = delta = self.drain()
        self._recorded += sum(row[-1] for row in delta["requests"])
        epoch, run_id = self.pacer.run
        self._reports_sent += 1
        data[PROGRESS_KEY] = {
            "epoch": epoch,
            "run_id": run_id,
            "seq": self._reports_sent,
            "progress": progress_to_message(self.pacer.progress()),
            "inflight": in_flight,
        }

    def on_worker_quitting(self, **_: Any) -> None:
        """This worker quits while its run goes on (SIGTERM, Ctrl-C): hand its unsent slots back to the master at
        once, let the requests in flight finish, and send a final report (Locust sends none when a worker quits by
        itself), all before Locust's own "quit" message."""
        going = self.pacer.plan is not None
        epoch, run_id, done = self.pacer.close(final=True)  # no plan is adopted any more, even one on its way
        try:
            # Also without a plan: the master may have granted this worker slots of a run whose first plan is still
            # on its way; it then grants them all again (the master ignores this when no run is going).
            self.runner.send_message(RETURN, {"epoch": epoch, "run_id": run_id, "progress": progress_to_message(done)})
            if not going:
                return  # the master stopped the run: the worker's final report went out with its stop
            timeout = float(getattr(self.environment.parsed_options, "request_timeout", 2.0)) + 0.5
            deadline = time.monotonic() + timeout
            while self.in_flight() > 0 and time.monotonic() < deadline:
                gevent.sleep(0.02)
            self.runner._send_stats()  # what Locust itself does on a "quit" from the master: report_to_master + send
        except RPCError as e:  # the master is gone: nothing to hand back to
            logger.info("rlsuite: could not hand this worker's slots back to the master: %s", e)

    # -- master / standalone side ------------------------------------------------------------------------------

    def on_worker_report(self, data: dict, client_id: str = "", **_: Any) -> None:
        delta = data.get(DELTA_KEY)
        if delta:
            self.totals.absorb(delta)
        progress = data.get(PROGRESS_KEY)
        if progress and self.conductor is not None:
            self.conductor.reported(client_id, progress)

    def begin_run(self) -> bool:
        """Called by the shape on the first tick of a run. False (and an error logged) for a bad option."""
        try:
            plan = self.conductor.begin(self.environment.parsed_options)
        except OptionError as e:
            logger.error("error: %s", e)
            return False
        start = time.strftime("%H:%M:%S", time.localtime(plan.t0))
        length = "until stopped" if plan.end is None else f"for {plan.schedule.run_time:g}s"
        logger.info(
            "rlsuite: run %s sends load from %s %s to %s",
            plan.run_id,
            start,
            length,
            ", ".join(n.name for n in plan.targets.nodes),
        )
        self._start_printer()
        return True

    def _start_printer(self) -> None:
        self._stop_printer()
        interval = float(self.environment.parsed_options.stats_interval)
        self._printer = gevent.spawn(self._every_second, interval)

    def _stop_printer(self) -> None:
        if self._printer is not None:
            self._printer.kill(block=False)
            self._printer = None

    def _every_second(self, interval: float) -> None:
        """While a run goes: bring the counts and the verdict's replay up to date every second (so memory holds
        seconds of requests, not the run's), and print the status line every ``interval`` seconds (0 = never)."""
        # A master only learns of requests when workers report (every 3 s), so its window lags further behind.
        lag = REPORT_LAG_SECONDS if self.is_master else 1.0
        step = min(1.0, interval) if interval > 0 else 1.0
        next_line = time.monotonic() + interval
        while True:
            gevent.sleep(step)
            plan = self.conductor.plan
            if plan is None:
                continue
            self.sync()
            self.judge()  # replays what is settled; keeps the verdict gauges in /metrics current
            self.write_csv()
            if interval <= 0 or time.monotonic() < next_line - 1e-3:
                continue
            next_line += interval
            now = time.time()
            hi = int(now - lag)
            lo = max(hi - interval, plan.t0)
            if hi <= lo:
                continue
            started = self.totals.run.started_between(lo, hi)
            target = (plan.schedule.offered(hi - plan.t0) - plan.schedule.offered(lo - plan.t0)) / (hi - lo)
            mode = plan.schedule.stage_at(now - plan.t0).mode
            print(
                console.status_line(
                    mode, now - plan.t0, target, sum(started) / (hi - lo), self.totals.run, (lo - plan.t0, hi - plan.t0)
                ),
                flush=True,
            )

    def summarise(self) -> None:
        """Print the summary of the current run, once."""
        plan = self.conductor.plan if self.conductor else None
        if plan is None or self._summarised_run == plan.run_id:
            return
        self._summarised_run = plan.run_id
        self.sync()
        stats = self.runner.stats.total
        text = console.summary(
            self.totals.run,
            plan.schedule,
            plan.t0,
            self.conductor.elapsed(),
            [n.name for n in plan.targets.nodes],
            stats.num_requests,
        )
        where = f"\nPrometheus metrics: {self.exporter.url}" if self.exporter and self.exporter.url else ""
        for d in self.conductor.departures:
            if not d.lost:
                handed = f": handed back {d.returned} unsent slot(s), sent by the others" if d.returned else ""
                where += f"\nWorker {d.worker} left (quit) {d.at:g}s into the run{handed}"
            elif d.back:
                where += f"\nWorker {d.worker} went missing {d.at:g}s into the run and came back (its counts are in)"
            else:
                bound, at = self.conductor.unaccounted(d.worker)
                since = "from the start of the run" if at is None else f"after its last report, {at:g}s into the run"
                heard = "" if d.heard is None else f" (last heard {d.heard:g}s)"
                where += (
                    f"\nWorker {d.worker} was LOST (no heartbeat) {d.at:g}s into the run{heard}: at most {bound} of "
                    f"its requests are unaccounted for (the slots it held {since}, and those then in flight)"
                )
        verdict = self.judge(final=True)
        self.write_csv(final=True)
        if verdict is not None:
            where += "\n\n" + verdict.render()
            path = str(self.environment.parsed_options.verdict_json)
            if path:
                write_json(path, verdict.to_json())
                where += f"\nVerdict JSON: {path}"
        elif self.conductor.policy is None:
            where += "\nNo limit declared (--limit): no verdict."
        print(f"\n{text}{where}\n", flush=True)

    def settled_elapsed(self) -> float:
        """Seconds of the run whose counts are all in: while it runs, a master hears of requests only when workers
        report (every 3 s), and the current second is never complete; after it, everything."""
        elapsed = self.conductor.elapsed()
        if not self.status.running:
            return elapsed
        return max(0.0, math.floor(elapsed - (REPORT_LAG_SECONDS if self.is_master else 1.0)))

    def write_csv(self, final: bool = False) -> None:
        plan = self.conductor.plan if self.conductor else None
        if self.csv is not None and plan is not None:
            nodes = [n.name for n in plan.targets.nodes]
            elapsed = self.conductor.elapsed()
            self.csv.write(self.totals.run, plan.schedule, plan.t0, elapsed, self.settled_elapsed(), nodes, final)

    def replay_horizon(self) -> float:
        """Seconds after its start by which every request is recorded here: it ended or timed out, and (on a
        master) its worker reported it."""
        timeout = self.conductor.plan.targets.timeout if self.conductor and self.conductor.plan else 0.0
        return timeout + 1.0 + (REPORT_LAG_SECONDS if self.is_master else 0.0)

    def judge(self, final: bool = False) -> Verdict | None:
        """The verdict on the current run so far (None without a declared limit); also shown in /metrics.
        ``final``: every request of the run is in (the summary), so the replay runs to the end."""
        conductor = self.conductor
        if conductor is None or conductor.policy is None or conductor.plan is None:
            return None
        plan = conductor.plan
        run = self.totals.run
        if run.replay is None or run.run_id != plan.run_id:
            return None
        if final:
            run.replay.finish()
        else:
            run.replay.advance(time.time() - self.replay_horizon())
        verdict = evaluate(
            conductor.policy,
            run,
            run.replay,
            plan.schedule,
            plan.t0,
            self.settled_elapsed(),
            [n.name for n in plan.targets.nodes],
            plan.targets.partitions,
            conductor.lost_workers(),
        )
        self.status.verdict = verdict
        return verdict

    def on_test_stop(self, **_: Any) -> None:
        self._stop_printer()  # (the pacer was already cleared when the stop began: test_stopping)
        if self.conductor is not None:
            self.conductor.end()
        if self.environment.parsed_options.headless:
            return  # the summary waits for the final worker reports, which arrive at quit
        # Web UI: a master hears the workers' last deltas within one report interval.
        gevent.spawn_later(3.5 if self.is_master else 0.0, self.summarise)

    def on_quitting(self, environment: Any, **_: Any) -> None:
        runner = self.runner
        if runner.state in (STATE_RUNNING, STATE_SPAWNING):
            # SIGTERM/SIGINT: Locust fires `quitting` before it stops the runner; stop first, so the workers'
            # final reports are merged before the summary and the last scrape.
            runner.quit()
        self._stop_printer()
        self.summarise()
        if getattr(environment.parsed_options, "html_file", None):
            # Locust wrote --html before firing `quitting`; add the rate-limiter view with the final counts
            webui.write_report(self, environment.parsed_options.html_file)
        verdict = self.status.verdict
        if verdict is not None and verdict.result != PASS:
            # 3: the cluster did not honour its limit; 4: the run could not tell. Locust's own 1 (failures) and
            # 2 (bad input) stay as they are when the verdict passed.
            environment.process_exit_code = verdict.exit_code
        if self.exporter is not None:
            linger = float(environment.parsed_options.metrics_linger)
            if linger > 0 and self.exporter.url:
                logger.info("rlsuite: waiting up to %gs for a last scrape of %s", linger, self.exporter.url)
                scraped = self.exporter.linger(linger)
                logger.info("rlsuite: %s", "final counts scraped" if scraped else "no scrape came; exiting")
            self.exporter.stop()


def write_json(path: str, data: dict) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, indent=2) + "\n")


def _explain_missing_workers(runner: Any, opts: Any) -> None:
    """Locust gives up waiting for workers with a bare log line: say which option and what to do."""
    if runner.state == STATE_INIT and runner.worker_count < opts.expect_workers:
        sys.stderr.write(
            f"error: only {runner.worker_count} of --expect-workers {opts.expect_workers} workers connected within "
            f"--expect-workers-max-wait {opts.expect_workers_max_wait:g}s; start them with `locust -f "
            "locustfiles/ratelimit.py --worker --master-host <this host>`, or lower --expect-workers\n"
        )


def _default_locust_options(environment: Any, opts: Any) -> None:
    """Defaults for Locust's own options that suit paced load, where the user has not set them."""
    nodes = targets.from_options(opts)
    if opts.num_users is None:
        # -u is the number of users = requests in flight at most; Locust's headless default of 1 would serialise
        # every request (see default_users for what the default covers).
        opts.num_users = default_users(schedule.from_options(opts).peak_rps, len(nodes.nodes), nodes.timeout)
    if not getattr(opts, "stop_timeout", 0):
        # Locust kills users mid-request when it stops them (ramp-down, and when it rebalances users as a worker
        # joins); those requests reach the limiter but never the counts. Let a stopped user finish its request.
        opts.stop_timeout = environment.stop_timeout = nodes.timeout + 1.0
    if opts.spawn_rate is None:
        # Locust's headless default of 1/s would take minutes to ramp; this takes about a second
        opts.spawn_rate = float(max(DEFAULT_SPAWN_RATE, opts.num_users))


def _stop_on_sigterm(runner: Any) -> None:
    logger.info("Got SIGTERM signal: stopping the run")
    if runner.shape_greenlet is not None:
        runner.shape_greenlet.kill(block=False)  # main.py then quits the runner once, as after a finished shape run
    else:
        gevent.spawn(runner.quit)


def _cache_locust_default_args() -> None:
    """A Locust worker rebuilds Locust's whole argument parser once per option for every spawn message (runners.py:
    ``k not in argument_parser.default_args_dict()`` inside a comprehension): 0.1-0.4 s with the worker's loop
    blocked, so every slot due meanwhile goes out late, at the start and whenever the master re-dispatches users (a
    worker joined, quit or was lost). The defaults never change within a process: build them once."""
    if not hasattr(locust_argument_parser.default_args_dict, "cache_info"):
        locust_argument_parser.default_args_dict = functools.lru_cache(maxsize=1)(
            locust_argument_parser.default_args_dict
        )


def _on_init(environment: Any, runner: Any, web_ui: Any = None, **_: Any) -> None:
    suite = Suite(environment)
    environment.rlsuite = suite
    events = environment.events
    opts = environment.parsed_options
    # Stop handing out slots as soon as a stop begins: Locust lets stopped users finish their task.
    events.test_stopping.add_listener(lambda **_: suite.pacer.clear())
    if isinstance(runner, WorkerRunner):
        # Workers know only the CLI defaults until a run starts: they take everything from the master's plan.
        tune_locust_timers(runner)  # heartbeats every 0.25 s, reports every 1 s (see rlsuite.conductor)
        _cache_locust_default_args()
        runner.register_message(MESSAGE, suite.on_plan_message)
        # A worker connects to the master before `init` runs, so a plan sent in between finds no handler and is
        # dropped; asking once the handler is in place gets it at once (the master also resends every tick).
        runner.send_message(READY)
        events.request.add_listener(suite.on_request)
        events.report_to_master.add_listener(suite.on_report_to_master)
        events.quitting.add_listener(suite.on_worker_quitting)
        return

    try:
        check_options(opts)
    except OptionError as e:
        fail_fast(e)
    _default_locust_options(environment, opts)

    suite.conductor = Conductor(runner, suite.totals, suite.status, suite.pacer.apply)
    suite.exporter = exporter.Exporter(build_registry(TotalsCollector(suite.totals, suite.status, suite.sync)))
    if getattr(opts, "csv_prefix", None):
        suite.csv = CsvFiles(opts.csv_prefix)
    if web_ui is not None:
        suite.exporter.mount(web_ui)
        webui.mount(suite, web_ui)
    elif getattr(opts, "headless", False) or getattr(opts, "autostart", False):
        host = "" if opts.web_host in ("*", None) else opts.web_host
        try:
            url = suite.exporter.serve(host, int(opts.metrics_port))
        except OptionError as e:
            fail_fast(e)
        logger.info("rlsuite: Prometheus metrics at %s", url)

    if getattr(opts, "headless", False):
        # Locust installs its SIGTERM handler only after a headless shape run has finished (main.py joins the
        # shape greenlet first), so until then SIGTERM would kill the process with nothing printed or exported.
        # Stopping the runner ends the shape run; Locust then shuts down as usual (quitting: summary, export).
        gevent.signal_handler(signal.SIGTERM, lambda: _stop_on_sigterm(runner))

    if isinstance(runner, MasterRunner):
        tune_locust_timers(runner)  # heartbeats every 0.25 s, a worker missing after 1.75-2 s (rlsuite.conductor)
        events.worker_report.add_listener(suite.on_worker_report)
        events.heartbeat_sent.add_listener(lambda client_id, **_: suite.conductor.heard(client_id))
        runner.register_message(READY, lambda environment, msg, **_: suite.conductor.resend(msg.node_id))
        runner.register_message(RETURN, lambda environment, msg, **_: suite.conductor.hand_back(msg.node_id, msg.data))
        if getattr(opts, "headless", False):
            atexit.register(_explain_missing_workers, runner, opts)
    else:
        events.request.add_listener(suite.on_request)
    events.test_stop.add_listener(suite.on_test_stop)
    events.quitting.add_listener(suite.on_quitting)
