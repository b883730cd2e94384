"""Wiring the suite into a Locust environment: options, per-role listeners, console and export.

``register(events)`` is all a locustfile calls at import (the options of ``rlsuite.config``); everything else happens
in ``init``, per role (``_init_worker``, ``_init_aggregator`` and then ``_init_master`` or the standalone request
listener):

- every process that sends requests (standalone or worker) counts them in a ``Tally``;
- a worker adopts the plans the master sends and ships its tally deltas in ``report_to_master``;
- the master (or standalone process) validates the options before any user starts, owns the ``Conductor``, merges
  deltas into ``Totals``, is the only one serving /metrics, and every second while a run goes brings the counts and
  the verdict up to date and lets the ``Console`` print its status line; at the end of a run ``rlsuite.report``
  makes the summary, the verdict JSON and the exit code.
"""

from __future__ import annotations

from locust import argument_parser as locust_argument_parser
from locust.runners import STATE_INIT, STATE_RUNNING, STATE_SPAWNING, MasterRunner, WorkerRunner

import atexit
import functools
import logging
import math
import signal
import sys
import time
from typing import Any

import gevent

from rlsuite import exporter, heap, policy, report, schedule, targets, webui
from rlsuite import verdict as verdict_module
from rlsuite.conductor import REPORT_SECONDS, Conductor, default_users, tune_locust_timers
from rlsuite.config import add_arguments, check_options
from rlsuite.console import Console
from rlsuite.csvfiles import CsvFiles, stop_locust_csv_writer_before_close
from rlsuite.metrics import TotalsCollector, build_registry
from rlsuite.options import OptionError, fail_fast
from rlsuite.pacing import Pacer
from rlsuite.plan import MESSAGE, PROGRESS_KEY, READY, RETURN
from rlsuite.recorder import Recorder
from rlsuite.routes import DEFAULT
from rlsuite.status import Status
from rlsuite.tally import DELTA_KEY, Totals
from rlsuite.verdict import Verdict
from rlsuite.worker import WorkerLink

logger = logging.getLogger(__name__)

# How far behind a master's counts are while a run goes on: workers report every REPORT_SECONDS, plus a second for
# the report to arrive. (A process that sends its own requests records each when it completes: a second behind.)
REPORT_LAG_SECONDS = REPORT_SECONDS + 1.0
OWN_LAG_SECONDS = 1.0
# Users per second at least; Locust warns above 100 per worker. Pacing does not depend on it: slots are sent on time
# by whichever users exist.
DEFAULT_SPAWN_RATE = 100.0


def register(events: Any) -> None:
    events.init_command_line_parser.add_listener(add_arguments)
    events.init.add_listener(_on_init)


class Suite:
    """Per-environment state; reach it as ``environment.rlsuite``."""

    def __init__(self, environment: Any) -> None:
        self.environment = environment
        self.recorder = Recorder()  # the requests this process sends (standalone or worker)
        self.pacer = Pacer(on_adopt=self.recorder.adopt, on_drop=self.recorder.dropped)
        self.totals = Totals()
        self.status = Status()
        self.console = Console()  # status lines and the summary (master or standalone)
        self.conductor: Conductor | None = None
        self.exporter: exporter.Exporter | None = None
        self.csv: CsvFiles | None = None  # with --csv: the suite's own CSV files beside Locust's
        self._ticker: gevent.Greenlet | None = None
        self._summarised_run = 0

    @property
    def runner(self) -> Any:
        return self.environment.runner

    @property
    def is_worker(self) -> bool:
        return isinstance(self.runner, WorkerRunner)

    @property
    def is_master(self) -> bool:
        return isinstance(self.runner, MasterRunner)

    # -- master / standalone side ------------------------------------------------------------------------------

    def sync(self) -> None:
        """Bring the totals up to date: a standalone process drains its own tally (a master gets worker deltas)."""
        if not self.is_master and not self.is_worker:
            self.totals.absorb(self.recorder.drain())

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
        self._start_ticker()
        return True

    def _start_ticker(self) -> None:
        self._stop_ticker()
        self.console.start(float(self.environment.parsed_options.stats_interval), self.counts_lag)
        self._ticker = gevent.spawn(self._every_second)

    def _stop_ticker(self) -> None:
        if self._ticker is not None:
            self._ticker.kill(block=False)
            self._ticker = None

    def _every_second(self) -> None:
        """While a run goes: bring the counts and the verdict's replay up to date every second (so memory holds
        seconds of requests, not the run's), and let the console print its status line when one is due."""
        console = self.console
        while True:
            gevent.sleep(console.step)
            plan = self.conductor.plan
            if plan is None:
                continue
            self.sync()
            self._keep(self.judge())  # replays what is settled; keeps the verdict gauges in /metrics current
            self.write_csv()
            console.tick(plan, self.totals.run)

    def summarise(self) -> None:
        """Print the summary of the current run, once."""
        plan = self.conductor.plan if self.conductor else None
        if plan is None or self._summarised_run == plan.run_id:
            return
        self._summarised_run = plan.run_id
        self.sync()
        verdict = self._keep(self.judge(final=True))
        self.write_csv(final=True)
        self.console.show(
            report.summary(
                self.totals.run,
                self.conductor,
                self.runner.stats.total.num_requests,
                self.exporter.url if self.exporter else None,
                verdict,
                str(self.environment.parsed_options.verdict_json),
            )
        )

    def settled_elapsed(self) -> float:
        """Seconds of the run whose counts are all in: while it runs, up to ``counts_lag`` ago; after it, all."""
        elapsed = self.conductor.elapsed()
        if not self.status.running:
            return elapsed
        return max(0.0, math.floor(elapsed - self.counts_lag))

    def write_csv(self, final: bool = False) -> None:
        plan = self.conductor.plan if self.conductor else None
        if self.csv is not None and plan is not None:
            nodes = [n.name for n in plan.targets.nodes]
            elapsed = self.conductor.elapsed()
            policies = [p.name for p in self.conductor.policies]
            self.csv.write(
                self.totals.run, plan.schedule, plan.t0, elapsed, self.settled_elapsed(), nodes, final, policies
            )

    def replay_horizon(self) -> float:
        """Seconds after its start by which every request is recorded here: it ended or timed out, and (on a
        master) its worker reported it."""
        timeout = self.conductor.plan.targets.timeout if self.conductor and self.conductor.plan else 0.0
        return timeout + 1.0 + (REPORT_LAG_SECONDS if self.is_master else 0.0)

    @property
    def counts_lag(self) -> float:
        """How many seconds behind the counts here are while a run goes on: a master hears of requests only when
        workers report; the current second is never complete."""
        return REPORT_LAG_SECONDS if self.is_master else OWN_LAG_SECONDS

    def judge(self, final: bool = False) -> Verdict | None:
        """The verdict on the current run so far (None without a declared limit). ``final``: every request of the
        run is in (the summary), so the replay runs to the end."""
        conductor = self.conductor
        if conductor is None or not conductor.policies or conductor.plan is None:
            return None
        plan = conductor.plan
        run = self.totals.run
        if run.run_id != plan.run_id:
            return None
        return verdict_module.judge(
            run,
            conductor.policies,
            plan.schedule,
            plan.t0,
            self.settled_elapsed(),
            [n.name for n in plan.targets.nodes],
            plan.targets.api_keys,
            conductor.lost_workers(),
            None if final else time.time() - self.replay_horizon(),
        )

    def _keep(self, verdict: Verdict | None) -> Verdict | None:
        """Keep a verdict for /metrics and the exit code (none judged: the last one stays)."""
        if verdict is not None:
            self.status.verdict = verdict
        return verdict

    def on_test_stop(self, **_: Any) -> None:
        self._stop_ticker()  # (the pacer was already cleared when the stop began: test_stopping)
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
        self._stop_ticker()
        self.summarise()
        if getattr(environment.parsed_options, "html_file", None):
            # Locust wrote --html before firing `quitting`; add the rate-limiter view with the final counts
            webui.write_report(self, environment.parsed_options.html_file)
        code = report.exit_code(self.status.verdict)
        if code is not None:
            environment.process_exit_code = code
        if self.exporter is not None:
            report.last_scrape(self.exporter, float(environment.parsed_options.metrics_linger))


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
    # Stop handing out slots as soon as a stop begins: Locust lets stopped users finish their task.
    events.test_stopping.add_listener(lambda **_: suite.pacer.clear())
    if isinstance(runner, WorkerRunner):
        _init_worker(suite, runner)
        return
    _init_aggregator(suite, runner, web_ui)
    if isinstance(runner, MasterRunner):
        _init_master(suite, runner)
    else:
        events.request.add_listener(suite.recorder.on_request)  # standalone: it sends and counts its own requests
        heap.register(events)
    events.test_stop.add_listener(suite.on_test_stop)
    events.quitting.add_listener(suite.on_quitting)


def _init_worker(suite: Suite, runner: Any) -> None:
    """A worker sends and counts the slots the master grants it. It knows only the CLI defaults until a run starts:
    it takes everything from the master's plan."""
    events = suite.environment.events
    tune_locust_timers(runner)  # heartbeats every 0.25 s, reports every 1 s (see rlsuite.conductor)
    _cache_locust_default_args()
    link = WorkerLink(suite.environment, suite.pacer, suite.recorder)
    runner.register_message(MESSAGE, link.on_plan_message)
    # A worker connects to the master before `init` runs, so a plan sent in between finds no handler and is
    # dropped; asking once the handler is in place gets it at once (the master also resends every tick).
    runner.send_message(READY)
    events.request.add_listener(suite.recorder.on_request)
    heap.register(events)
    events.report_to_master.add_listener(link.on_report_to_master)
    events.quitting.add_listener(link.on_worker_quitting)


def _init_aggregator(suite: Suite, runner: Any, web_ui: Any) -> None:
    """The master or standalone process: checks the options before any user starts, owns the run (conductor) and
    the totals, and is the only one serving /metrics."""
    environment = suite.environment
    opts = environment.parsed_options
    try:
        check_options(opts)
    except OptionError as e:
        fail_fast(e)
    _default_locust_options(environment, opts)
    # every declared policy's series exist in /metrics from the first scrape
    suite.totals.policy_names = [p.name for p in policy.declared(opts)] or [DEFAULT]

    suite.conductor = Conductor(runner, suite.totals, suite.status, suite.pacer.apply)
    suite.exporter = exporter.Exporter(build_registry(TotalsCollector(suite.totals, suite.status, suite.sync)))
    if getattr(opts, "csv_prefix", None):
        suite.csv = CsvFiles(opts.csv_prefix)
        stop_locust_csv_writer_before_close()
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


def _init_master(suite: Suite, runner: Any) -> None:
    """The master leases slots to its workers and merges their counts."""
    events = suite.environment.events
    opts = suite.environment.parsed_options
    tune_locust_timers(runner)  # heartbeats every 0.25 s, a worker missing after 1.75-2 s (rlsuite.conductor)
    events.worker_report.add_listener(suite.on_worker_report)
    events.heartbeat_sent.add_listener(lambda client_id, **_: suite.conductor.heard(client_id))
    runner.register_message(READY, lambda environment, msg, **_: suite.conductor.resend(msg.node_id))
    runner.register_message(RETURN, lambda environment, msg, **_: suite.conductor.hand_back(msg.node_id, msg.data))
    if getattr(opts, "headless", False):
        atexit.register(_explain_missing_workers, runner, opts)
