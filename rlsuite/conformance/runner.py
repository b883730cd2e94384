"""Running the catalogue in Locust: options, the dispatcher that sends each shot at its due time, the user, the
conductor that runs the cases back to back, the shape, and the wiring per role.

- The **conductor** (standalone process or master) runs the selected cases in catalogue order. Each phase starts
  on a multiple of the window (so fixed-window edges fall where the case expects them), after the limiter had
  ``Context.settle`` seconds without traffic from this run. When a phase's requests are all answered, the next
  one is planned; when a case's phases are done, it is graded and its rows printed.
- Every process that sends (standalone or worker) has a **dispatcher**: its users take the next shot when it is
  due, one after another, so shots due together (a volley) leave within milliseconds, and a shot no user could
  take within ``max_delay`` of its due time is dropped and counted (the case is then inconclusive), never sent
  late. Clients that honour Retry-After run as one job per client.
- **Distributed**: the master deals each phase's shots round-robin over its workers (client jobs too) in one
  message per worker, with the phase's start on its clock; each worker estimates its clock offset from the
  messages (the smallest delay seen, as the steady/burst suite does), sends its shots, and returns its records
  once they are all answered. A worker that does not return its records in time leaves the case inconclusive.
"""

from __future__ import annotations

from locust import FastHttpUser, LoadTestShape, constant, task
from locust.runners import STATE_INIT, MasterRunner, WorkerRunner

import logging
import math
import signal
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import gevent
from gevent.event import Event
from gevent.lock import Semaphore

from rlsuite import exporter, options, policy, targets
from rlsuite.classify import NEVER_SENT, error_kind, success_statuses
from rlsuite.conformance import cases, grading, html, reports
from rlsuite.conformance.fields import retry_after
from rlsuite.conformance.grading import INCONCLUSIVE, Result
from rlsuite.conformance.traffic import DATE, FIELDS, NO_KEY, RETRY_AFTER, Outcome, Phase, Record
from rlsuite.connections import shared_pool
from rlsuite.options import Option, OptionError, fail_fast
from rlsuite.replay import ADMITTED, LIMITED, UNKNOWN, UNSENT

logger = logging.getLogger(__name__)

MSG_PHASE = "rlsuite_conformance_phase"
MSG_RECORDS = "rlsuite_conformance_records"
LEAD_SECONDS = 0.3  # at least this long between planning a phase and its first shot
LEAD_DISTRIBUTED = 0.8  # ... when its shots travel to workers first
ANSWER_GRACE = 2.0  # seconds beyond the request timeout to wait for a phase's last records
CLOCK_SKEW_TOLERANCE = 0.05  # worker clocks closer to the master's than this are taken as the same clock
USERS_MARGIN = 10


GROUP = "Conformance catalogue"
OPTIONS = (
    *targets.OPTIONS,
    *policy.OPTIONS,
    *exporter.OPTIONS,
    Option(
        "cases",
        GROUP,
        type=str,
        default="",
        help="Cases to run: comma-separated IDs or prefixes (RLC-1,RLC-3.1); -ID excludes (-RLC-8). Default: all.",
    ),
    Option("junit-xml", GROUP, type=str, default="", help="Write the results as JUnit XML to this file (for CI)."),
    Option("conformance-json", GROUP, type=str, default="", help="Write the results as JSON to this file."),
)


def add_arguments(parser: Any) -> None:
    options.register(parser, OPTIONS)


@dataclass(frozen=True)
class Config:
    targets: targets.Targets
    context: cases.Context
    selected: list[cases.Selected]
    junit: str
    json: str

    @property
    def ids(self) -> list[str]:
        return [c.id for s in self.selected for c in s.checks]


def configure(opts: Any) -> Config:
    """The run the options describe; raises OptionError with a one-line message."""
    nodes = targets.from_options(opts)
    declared = policy.from_options(opts)
    exporter.check_options(opts)
    if str(getattr(opts, "policy_file", "") or ""):
        raise OptionError(
            "policy-file",
            "does not apply to the catalogue: its cases question one declared policy",
            "declare it with --limit and its options (test one route at a time with --request-path)",
        )
    if declared is None:
        raise OptionError(
            "limit",
            "is 0: every case is graded against a declared limit",
            "declare it, e.g. --limit 100 --window 1 --limit-algorithm token-bucket",
        )
    if declared.auto:
        raise OptionError(
            "limit-algorithm",
            "is auto: every case's expectation derives from one declared model",
            "declare the algorithm (locustfiles/ratelimit.py --limit-algorithm auto reports which one fits)",
        )
    for option in ("junit-xml", "conformance-json"):
        path = str(options.get(opts, option) or "")
        if path.endswith("/"):
            raise OptionError(option, f"is a directory ({path})", "give a file name, e.g. conformance.xml")
    ids = grading.select(str(opts.cases or ""), cases.IDS)
    context = cases.Context(
        declared,
        tuple(n.name for n in nodes.nodes),
        keys=len(nodes.api_keys),
        strict_headers=declared.strict_headers,
    )
    return Config(nodes, context, cases.selected(ids), str(opts.junit_xml or ""), str(opts.conformance_json or ""))


# -- sending (every process that sends) ----------------------------------------------------------------------------

SHOT, CLIENT = 0, 1


class Job:
    """One shot, or one client's loop, of one phase run."""

    __slots__ = ("due", "end", "fallback", "interval", "key", "kind", "node", "run", "tag")

    def __init__(self, run: int, row: list) -> None:
        self.run = run
        self.kind, self.due, self.node, self.key, self.tag, self.interval, self.end, self.fallback = row


class RunState:
    """What a process knows of one phase run: its jobs and what came of them."""

    def __init__(self, total: int, wire: dict, max_delay: float, offset: float) -> None:
        self.total = total
        self.wire = wire
        self.max_delay = max_delay
        self.offset = offset  # local clock minus the master's
        self.finished = 0
        self.records: list[Record] = []
        self.dropped = 0
        self.done = Event()
        self.url = [u + wire["path"] for u in wire["urls"]]
        self.headers = [{wire["header"]: k} for k in wire["keys"]]
        self.statuses = frozenset(wire["statuses"])
        if total == 0:
            self.done.set()

    def finish(self) -> None:
        self.finished += 1
        if self.finished >= self.total:
            self.done.set()


class Dispatcher:
    """Hands out this process's jobs, each when due, to whichever user asks next (one user waits at a time)."""

    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._queue: deque[Job] = deque()
        self._turn = Semaphore()
        self._changed = Event()
        self.runs: dict[int, RunState] = {}

    @property
    def changed(self) -> Event:
        return self._changed

    def _notify(self) -> None:
        self._changed.set()
        self._changed = Event()

    def load(self, run: int, rows: list[list], wire: dict, max_delay: float, offset: float = 0.0) -> RunState:
        """Queue a phase run's jobs (``rows``: kind, due, node, key, tag, interval, end, fallback; times on the
        master's clock, shifted here by ``offset``)."""
        state = self.runs[run] = RunState(len(rows), wire, max_delay, offset)
        jobs = []
        for row in rows:
            job = Job(run, list(row))
            job.due += offset
            job.end += offset
            jobs.append(job)
        self._queue = deque(sorted([*self._queue, *jobs], key=lambda j: j.due))
        self._notify()
        return state

    def clear(self) -> None:
        """Forget every queued job (the run stopped): their runs finish as they are."""
        for job in self._queue:
            state = self.runs.get(job.run)
            if state is not None:
                state.dropped += 1
                state.finish()
        self._queue.clear()
        self._notify()

    def next_job(self) -> Job | None:
        with self._turn:
            while True:
                if not self._queue:
                    return None
                job = self._queue[0]
                delay = job.due - self._clock()
                if delay > 0:
                    self._changed.wait(delay)
                    continue
                self._queue.popleft()
                state = self.runs.get(job.run)
                if state is None:
                    continue
                if job.kind == SHOT and -delay > state.max_delay:
                    state.dropped += 1  # every user was busy: sending it now would change the case's traffic
                    state.finish()
                    continue
                return job


def read_record(state: RunState, job: Job, due: float, start: float, response: Any) -> Record:
    """The record of one answered (or failed) request, times on the master's clock."""
    duration = time.time() - start
    status = response.status_code or 0
    if status == 200:
        code = ADMITTED
    elif status in state.statuses:
        code = LIMITED
    elif status:
        code = UNKNOWN
    else:
        code = UNSENT if error_kind(0, getattr(response, "error", None)) in NEVER_SENT else UNKNOWN
    values: tuple[str | None, ...] = ()
    if status:
        get = response.headers.get if response.headers is not None else (lambda _: None)
        values = tuple(get(name) for name in FIELDS)
    o = state.offset
    return Record(job.tag, due - o, start - o, duration, status, code, job.node, job.key, values)


class ConformanceUser(FastHttpUser):
    """Takes the next due job from its process's dispatcher and sends it; nothing is retried."""

    host = targets.DEMO_NODE_HOSTS.split(",")[0]  # a placeholder: requests use absolute node URLs
    wait_time = constant(0)
    max_retries = 0

    def __init__(self, environment: Any) -> None:
        catalogue: Catalogue = environment.rlsuite_conformance
        opts = environment.parsed_options
        self.client_pool = shared_pool(environment, float(opts.request_timeout))
        super().__init__(environment)
        self.client.client.valid_response_codes = success_statuses(targets.parse_statuses(opts.rejection_statuses))
        self._dispatcher = catalogue.dispatcher
        self._catalogue = catalogue

    @task
    def work(self) -> None:
        changed = self._dispatcher.changed
        job = self._dispatcher.next_job()
        if job is None:
            changed.wait(1.0)
            return
        state = self._dispatcher.runs.get(job.run)
        if state is None:  # its phase was given up meanwhile (the run stopped)
            return
        try:
            if job.kind == SHOT:
                state.records.append(self._send(state, job, job.due))
            else:
                self._client_loop(state, job)
        finally:
            state.finish()

    def _send(self, state: RunState, job: Job, due: float) -> Record:
        start = time.time()
        headers = state.headers[job.key] if job.key != NO_KEY else None
        response = self.client.request("GET", state.url[job.node], name=state.wire["label"], headers=headers)
        record = read_record(state, job, due, start, response)
        self._catalogue.count(state.wire["label"], record.code)
        return record

    def _client_loop(self, state: RunState, job: Job) -> None:
        """A client that sends every ``interval`` and, after a rejection, waits what Retry-After says (``fallback``
        when it says nothing). It waits for each answer before the next request, as API clients do: a slow answer
        delays its next request (not counted as late), and it never sends in a hurry to catch up."""
        due = job.due
        while due < job.end:
            wait = due - time.time()
            if wait > 0:
                gevent.sleep(wait)
            record = self._send(state, job, due)
            state.records.append(record)
            done = record.end + state.offset  # local clock
            due = max(due + job.interval, done)
            if record.code == LIMITED:
                said = retry_after(record.field(RETRY_AFTER), record.field(DATE))
                due = max(due, done + (said if isinstance(said, float) else job.fallback))


# -- the conductor (standalone or master) --------------------------------------------------------------------------


@dataclass
class Progress:
    results: list[Result] = field(default_factory=list)
    grades: dict[str, str] = field(default_factory=dict)
    running: bool = False
    finished: bool = False
    started: float = 0.0
    seconds: float = 0.0
    current: str = ""


OUTCOME_LABEL = {ADMITTED: "admitted", LIMITED: "limited", UNKNOWN: "error", UNSENT: "error"}


class Catalogue:
    """Per-environment state; reach it as ``environment.rlsuite_conformance``."""

    def __init__(self, environment: Any) -> None:
        self.environment = environment
        self.dispatcher = Dispatcher()
        self.config: Config | None = None
        self.progress = Progress()
        self.exporter: exporter.Exporter | None = None
        self._greenlet: gevent.Greenlet | None = None
        self._run = 0
        self._stopping = False
        self._replies: dict[int, dict[str, dict]] = {}
        self._replied = Event()
        self._offset: float | None = None  # worker: local minus master clock (smallest seen)
        self.users = USERS_MARGIN
        # (case group, outcome) -> requests, over every run of this process: a Prometheus counter never decreases
        self.requests: dict[tuple[str, str], int] = {}

    @property
    def runner(self) -> Any:
        return self.environment.runner

    @property
    def distributed(self) -> bool:
        return isinstance(self.runner, MasterRunner)

    def count(self, label: str, code: int) -> None:
        key = (label, OUTCOME_LABEL[code])
        self.requests[key] = self.requests.get(key, 0) + 1

    def status(self) -> dict[str, Any]:
        p = self.progress
        return {
            "grades": p.grades,
            "requests": self.requests,
            "running": p.running,
            "exit_code": grading.exit_code(p.results),
        }

    def ids(self) -> list[str]:
        return self.config.ids if self.config else []

    # -- the run -----------------------------------------------------------------------------------------------

    def begin(self) -> bool:
        """Called by the shape on the first tick. False (and the error logged) for a bad option."""
        try:
            self.config = configure(self.environment.parsed_options)
        except OptionError as e:
            logger.error("error: %s", e)
            self.progress.finished = True
            return False
        self.progress = Progress(running=True, started=time.time())
        self.users = self._users_needed()
        self._stopping = False
        planned = self._planned_seconds()
        logger.info(
            "rlsuite conformance: %d cases, %d users, about %.0fs, declared %s",
            len(self.config.ids),
            self.users,
            planned,
            self.config.context.described(),
        )
        self._greenlet = gevent.spawn(self._conduct)
        return True

    def _users_needed(self) -> int:
        ctx = self.config.context
        most = 1
        for sel in self.config.selected:
            if sel.case.applies(ctx):
                continue
            for phase in sel.case.plan(ctx):
                # requests in flight at the peak rate: 50 ms of latency, plus the declared limiter's own queue
                most = max(most, phase.concurrency, math.ceil(_peak_rate(phase) * (0.05 + ctx.latency)))
        return most + USERS_MARGIN

    def _planned_seconds(self) -> float:
        ctx = self.config.context
        total = 0.0
        for sel in self.config.selected:
            if sel.case.applies(ctx):
                continue
            for phase in sel.case.plan(ctx):
                total += ctx.settle + ctx.window / 2 + phase.length + 0.3
        return total

    def stop(self) -> None:
        """Stop now (SIGTERM, the web UI's stop): shots not sent yet are dropped, the phase under way ends with the
        answers of those in flight, and the cases not run to their end are INCONCLUSIVE."""
        if self.progress.running and not self._stopping:
            self._stopping = True
            self.dispatcher.clear()

    def _wait_for_users(self) -> None:
        deadline = time.monotonic() + 30
        while self.runner.user_count < self.users and time.monotonic() < deadline and not self._stopping:
            gevent.sleep(0.1)

    def _conduct(self) -> None:
        config = self.config
        ctx = config.context
        progress = self.progress
        history: list[Record] = []
        self._wait_for_users()
        ready = time.time() + ctx.settle  # the limiter may have seen other traffic just before
        try:
            for sel in config.selected:
                label = f"RLC-{sel.case.number}"
                if self._stopping:
                    self._publish([_not_run(c, "not run: the run was stopped") for c in sel.checks])
                    continue
                reason = sel.case.applies(ctx)
                if reason:
                    self._publish([cases.not_applicable(c, reason) for c in sel.checks])
                    continue
                progress.current = label
                started = time.time()
                outcomes: list[Outcome] = []
                for phase in sel.case.plan(ctx):
                    if self._stopping:
                        break
                    outcome = self._run_phase(phase, ready, label)
                    outcomes.append(outcome)
                    history.extend(outcome.records)
                    ready = max([r.end for r in outcome.records], default=time.time()) + ctx.settle
                if self._stopping:
                    self._publish([_not_run(c, "not run to its end: the run was stopped") for c in sel.checks])
                    continue
                try:
                    graded = sel.case.grade(ctx, outcomes, history)
                except Exception:
                    logger.exception("rlsuite conformance: grading %s failed", label)
                    graded = [
                        _not_run(c, f"grading failed: {traceback.format_exc(limit=1).strip()}") for c in sel.checks
                    ]
                wanted = {c.id for c in sel.checks}
                mine = [r for r in graded if r.case in wanted]
                chart = html.timeline(outcomes, ctx.window)
                for r in mine:
                    r.seconds = time.time() - started
                    r.timeline = chart
                self._publish(mine)
        finally:
            progress.running = False
            progress.seconds = time.time() - progress.started
            progress.finished = True
            self._report()

    def _publish(self, results: list[Result]) -> None:
        for r in results:
            self.progress.results.append(r)
            self.progress.grades[r.case] = r.grade
            logger.info("rlsuite conformance: %s %s %s", r.case, r.grade, r.title)

    def _report(self) -> None:
        config, p = self.config, self.progress
        declared, nodes = config.context.described(), list(config.context.nodes)
        print("\n" + reports.table(p.results, declared, nodes) + "\n", flush=True)
        if config.junit:
            reports.write(config.junit, reports.junit(p.results, declared, nodes, p.started, p.seconds))
            print(f"JUnit XML: {config.junit}", flush=True)
        if config.json:
            reports.write_json(config.json, reports.to_json(p.results, declared, nodes, p.started, p.seconds))
            print(f"Conformance JSON: {config.json}", flush=True)
        if self.exporter is not None and self.exporter.url:
            print(f"Prometheus metrics: {self.exporter.url}", flush=True)

    def _t0(self, ready: float) -> float:
        w = self.config.context.window
        lead = LEAD_DISTRIBUTED if self.distributed else LEAD_SECONDS
        return math.ceil(max(ready, time.time() + lead) / w) * w

    def _wire(self, label: str) -> dict:
        t = self.config.targets
        return {
            "urls": [n.url for n in t.nodes],
            "path": t.path,
            "header": t.api_key_header,
            "keys": list(t.api_keys),
            "statuses": sorted(t.rejection_statuses),
            "label": label,
        }

    def _run_phase(self, phase: Phase, ready: float, label: str) -> Outcome:
        self._run += 1
        run = self._run
        t0 = self._t0(ready)
        rows = _rows(phase, t0)
        w = self.config.context.window
        max_delay = max(0.05, min(1.0, 0.5 * w))
        timeout = self.config.targets.timeout
        deadline = t0 + phase.length + timeout + ANSWER_GRACE
        outcome = Outcome(phase, t0)
        if not self.distributed:
            state = self.dispatcher.load(run, rows, self._wire(label), max_delay)
            state.done.wait(max(0.0, deadline - time.time()))
            outcome.records = list(state.records)
            outcome.dropped = state.dropped
            outcome.missing = state.total - state.finished
            del self.dispatcher.runs[run]
            return outcome
        workers = _workers(self.runner)
        if not workers:
            outcome.lost, outcome.missing = ["(none connected)"], len(rows)
            return outcome
        shares: dict[str, list[list]] = {w_: [] for w_ in workers}
        for i, row in enumerate(rows):
            shares[workers[i % len(workers)]].append(row)
        self._replies[run] = {}
        self._replied = Event()
        for worker, mine in shares.items():
            self.runner.send_message(
                MSG_PHASE,
                {
                    "run": run,
                    "rows": mine,
                    "wire": self._wire(label),
                    "max_delay": max_delay,
                    "sent_at": time.time(),
                    "deadline": deadline,
                },
                client_id=worker,
            )
        while len(self._replies[run]) < len(workers) and time.time() < deadline + 2.0:
            self._replied.wait(max(0.05, deadline + 2.0 - time.time()))
            self._replied = Event() if len(self._replies[run]) < len(workers) else self._replied
        replies = self._replies.pop(run)
        for worker in workers:
            reply = replies.get(worker)
            if reply is None:
                outcome.lost.append(worker)
                outcome.missing += len(shares[worker])
                continue
            outcome.records.extend(Record.from_wire(row) for row in reply["records"])
            outcome.dropped += reply["dropped"]
            outcome.missing += reply["missing"]
        for r in outcome.records:
            self.count(label, r.code)
        return outcome

    # -- distributed messages ------------------------------------------------------------------------------------

    def on_records(self, environment: Any, msg: Any, **_: Any) -> None:
        """Master: a worker's records of one phase run."""
        replies = self._replies.get(msg.data["run"])
        if replies is not None:
            replies[msg.node_id] = msg.data
            self._replied.set()

    def on_phase(self, environment: Any, msg: Any, **_: Any) -> None:
        """Worker: its share of a phase run; send it, then return the records."""
        data = msg.data
        seen = time.time() - data["sent_at"]  # the clock offset plus this message's delay
        self._offset = seen if self._offset is None else min(self._offset, seen)
        offset = self._offset if abs(self._offset) > CLOCK_SKEW_TOLERANCE else 0.0
        state = self.dispatcher.load(data["run"], data["rows"], data["wire"], data["max_delay"], offset)
        gevent.spawn(self._return_records, data["run"], state, data["deadline"] + offset)

    def _return_records(self, run: int, state: RunState, deadline: float) -> None:
        state.done.wait(max(0.0, deadline - time.time()))
        self.runner.send_message(
            MSG_RECORDS,
            {
                "run": run,
                "records": [r.to_wire() for r in state.records],
                "dropped": state.dropped,
                "missing": state.total - state.finished,
            },
        )
        self.dispatcher.runs.pop(run, None)

    # -- the end -------------------------------------------------------------------------------------------------

    def section(self) -> str:
        config, p = self.config, self.progress
        if config is None:
            return ""
        summary = f"{grading.summary_line(p.results)}; exit code {grading.exit_code(p.results)}"
        state = f"running {p.current}" if p.running else summary
        return html.section(p.results, config.context.described(), state, config.context.rate)

    def write_html(self, path: str) -> None:
        """Add the conformance section to the report Locust wrote at ``path`` (``--html``), if it wrote one."""
        from pathlib import Path

        target = Path(path)
        if not target.is_file() or not self.progress.started or target.stat().st_mtime < self.progress.started:
            return
        report = html.inject(target.read_text(encoding="utf-8"), self.section())
        if report is not None:
            target.write_text(report, encoding="utf-8")
            logger.info("rlsuite conformance: HTML report with the conformance section: %s", target)

    def mount(self, web_ui: Any) -> None:
        """``/conformance``: the results so far (refreshing while the catalogue runs); ``/conformance/json``."""
        from flask import Response, jsonify

        @web_ui.app.route("/conformance")
        @web_ui.auth_required_if_enabled
        def conformance_page() -> Response:
            return Response(html.page(self.section(), self.progress.running), mimetype="text/html")

        @web_ui.app.route("/conformance/json")
        @web_ui.auth_required_if_enabled
        def conformance_json() -> Response:
            config, p = self.config, self.progress
            if config is None:
                return jsonify({})
            nodes = list(config.context.nodes)
            return jsonify(reports.to_json(p.results, config.context.described(), nodes, p.started, p.seconds))

        args = web_ui.template_args
        args["extended_csv_files"] = [
            *args.get("extended_csv_files", []),
            {"href": "./conformance", "title": "Rate-limiter conformance: the cases, their grades and charts"},
            {"href": "./conformance/json", "title": "Rate-limiter conformance (JSON)"},
        ]

    def on_quitting(self, environment: Any, **_: Any) -> None:
        if self._greenlet is not None and not self._greenlet.dead:
            self.stop()
            self._greenlet.join(timeout=self.config.targets.timeout + 5 if self.config else 5)
        if getattr(environment.parsed_options, "html_file", None):
            self.write_html(environment.parsed_options.html_file)
        if self.config is not None and self.progress.started:
            environment.process_exit_code = grading.exit_code(self.progress.results)
        if self.exporter is not None:
            linger = float(environment.parsed_options.metrics_linger)
            if linger > 0 and self.exporter.url and self.progress.started:
                logger.info("rlsuite conformance: waiting up to %gs for a last scrape of %s", linger, self.exporter.url)
                self.exporter.linger(linger)
            self.exporter.stop()


def _rows(phase: Phase, t0: float) -> list[list]:
    rows: list[list] = [[SHOT, t0 + s.due, s.node, s.key, s.tag, 0.0, 0.0, 0.0] for s in phase.shots]
    for c in phase.clients:
        for j in range(c.count):
            first = t0 + c.start + j * c.interval / c.count
            rows.append([CLIENT, first, j % c.nodes, c.key, c.tag, c.interval, t0 + c.end, c.fallback])
    return rows


def _peak_rate(phase: Phase) -> float:
    dues = sorted(s.due for s in phase.shots)
    if len(dues) < 2:
        return 0.0
    span = dues[-1] - dues[0]
    return len(dues) / span if span > 0 else float(len(dues))


def _workers(runner: Any) -> list[str]:
    clients = runner.clients
    return sorted(c.id for c in (*clients.ready, *clients.spawning, *clients.running))


def _not_run(check: cases.Check, reason: str) -> Result:
    return Result(check.id, check.title, check.requirement, INCONCLUSIVE, reason=reason)


class ConformanceShape(LoadTestShape):
    """Keeps the users the catalogue needs while it runs; ends the run when the last case is graded."""

    def tick(self) -> tuple[int, float] | None:
        catalogue: Catalogue = self.runner.environment.rlsuite_conformance
        if self.runner.state == STATE_INIT and not catalogue.begin():
            return None
        if catalogue.progress.finished:
            return None
        return catalogue.users, float(catalogue.users)


# -- wiring ----------------------------------------------------------------------------------------------------


def register(events: Any) -> None:
    events.init_command_line_parser.add_listener(add_arguments)
    events.init.add_listener(_on_init)


def _on_init(environment: Any, runner: Any, web_ui: Any = None, **_: Any) -> None:
    catalogue = Catalogue(environment)
    environment.rlsuite_conformance = catalogue
    opts = environment.parsed_options
    if isinstance(runner, WorkerRunner):
        runner.register_message(MSG_PHASE, catalogue.on_phase)
        return
    try:
        catalogue.config = configure(opts)
    except OptionError as e:
        fail_fast(e)
    registry = reports_registry(catalogue)
    catalogue.exporter = exporter.Exporter(registry)
    if web_ui is not None:
        catalogue.exporter.mount(web_ui)
        catalogue.mount(web_ui)
    elif getattr(opts, "headless", False) or getattr(opts, "autostart", False):
        host = "" if opts.web_host in ("*", None) else opts.web_host
        try:
            url = catalogue.exporter.serve(host, int(opts.metrics_port))
        except OptionError as e:
            fail_fast(e)
        logger.info("rlsuite conformance: Prometheus metrics at %s", url)
    if isinstance(runner, MasterRunner):
        runner.register_message(MSG_RECORDS, catalogue.on_records)
    if getattr(opts, "headless", False):
        # Locust installs its SIGTERM handler only after a headless shape run has finished: stop after the phase
        # under way, report what was graded, then quit as usual.
        gevent.signal_handler(signal.SIGTERM, catalogue.stop)
    environment.events.test_stopping.add_listener(lambda **_: catalogue.stop())
    environment.events.quitting.add_listener(catalogue.on_quitting)


def reports_registry(catalogue: Catalogue) -> Any:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=True)
    registry.register(reports.ConformanceCollector(catalogue.ids, catalogue.status))
    return registry
