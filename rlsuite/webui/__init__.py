"""The rate-limiter view in Locust's web UI and HTML report, through Locust's own extension points only.

- A "Rate limiter" tab: ``extended_tabs`` and ``extended_tables`` in the web UI's template args, its rows in the
  ``extended_stats`` of ``/stats/requests`` (added by an ``after_request`` hook, as Locust's
  examples/extend_web_ui.py does). Locust's extended tabs can show one plain-text table and nothing else: a list
  of columns (``key``, ``title``) read once per page load, and rows as dicts by key, so the per-node columns are
  those of the nodes when the page was loaded.
- So the chart is on ``/rlsuite``, a self-contained live page (inline CSS, JS and SVG; it loads only its own
  routes) refreshed from ``/rlsuite/fragment``; ``/rlsuite/snapshot`` is the same data as JSON. Both are linked
  under Download Data, and the tab names the page's address.
- The start form: Locust lists a custom option only when its parser's own ``add_argument`` marked it, which options
  declared in argument groups (all of the suite's) bypass, so this module fills the form's "Custom parameters"
  itself from the suite's option table (``rlsuite.config.OPTIONS``), in group order, each with its group and help,
  and checks a submitted form by the same rules before Locust applies it.
- The header and the start form show the node hosts where Locust shows its host (which the suite does not use:
  requests go to absolute node URLs), and a form whose Host names other nodes is refused.
- ``write_report()``: the same view added to Locust's ``--html`` report (and to the UI's Download Report).

The data all of them show is ``view.snapshot(suite)``; ``render`` formats it.

``mount`` runs on the master or standalone process only, when Locust has a web UI.
"""

from __future__ import annotations

from locust.util.timespan import parse_timespan

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from rlsuite.config import OPTIONS, check_options
from rlsuite.options import OptionError
from rlsuite.targets import parse_nodes
from rlsuite.webui import render, view

logger = logging.getLogger(__name__)

TAB_KEY = "rlsuite"
# Options that do nothing with the web UI (/metrics is on the web UI port; lingering is for headless runs): left out
# of the form so every field shown has an effect.
HEADLESS_ONLY = frozenset({"metrics_port", "metrics_linger"})
# Locust's endpoints whose responses get the suite's additions (blueprint "locust" in locust/web.py)
STATS_ENDPOINT = "locust.request_stats"
REPORT_ENDPOINT = "locust.stats_report"
SWARM_ENDPOINT = "locust.swarm"
# Each view polls on its own (the tab every 2 s, /rlsuite every 2 s, scripts at will, any number of browser tabs)
# and a snapshot judges the whole run so far on the gevent loop that also paces the requests: however many ask,
# one snapshot serves them all for this long.
SNAPSHOT_TTL = 1.0


def first_sentence(text: str) -> str:
    """The form shows help on one line, cut at its width: keep the first sentence (the full text is on /rlsuite)."""
    end = text.find(". ")
    return text if end == -1 else text[: end + 1]


def form_fields(opts: Any, locust_extra: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The start form's "Custom parameters", in Locust's ``extra_options`` shape.

    Each field shows the value of the current (or last) run, as Locust's own fields do, and a label of the form
    "Steady Rps (Steady and burst traffic · Target requests/s ...)": Locust derives the name from the key and shows
    the help text in brackets, all in one flat list, so the group travels in the help text and the order keeps
    groups together."""
    fields: dict[str, dict[str, Any]] = {}
    for o in OPTIONS:
        if o.dest in HEADLESS_ONLY:
            continue
        fields[o.dest] = {
            "default_value": getattr(opts, o.dest),
            "is_secret": False,
            "is_required": False,
            "help_text": f"{o.group} · {first_sentence(o.help)}" if o.group else first_sentence(o.help),
            "is_multiple": False,
            "choices": list(o.choices) if o.choices else None,
        }
    known = {o.dest for o in OPTIONS}
    # options of other plugins that Locust found itself keep their place, after the suite's
    fields.update({k: v for k, v in locust_extra.items() if k not in known})
    return fields


def run_options(opts: Any) -> list[tuple[str, Any, str, str]]:
    """Flag, value, group and help of every option that shaped the current or last run (the suite's, and Locust's
    run time and users), as the live page and report list them."""
    rows = [(o.flag, getattr(opts, o.dest, None), o.group, o.help) for o in OPTIONS if o.dest not in HEADLESS_ONLY]
    rows.append(("run-time", getattr(opts, "run_time", None), "Locust", "Seconds of load; none = until stopped."))
    rows.append(("users", getattr(opts, "num_users", None), "Locust", "Requests in flight at most."))
    return rows


def cast_like_locust(current: Any, raw: str) -> Any:
    """What Locust's /swarm does with a submitted value: keep the type of the current value (web.py ``swarm``)."""
    if isinstance(current, bool):
        return raw == "true"
    if current is None:
        return raw
    return type(current)(raw)


def check_form(opts: Any, form: Any) -> str | None:
    """The message for a start form Locust would accept but the suite would refuse at the start of the run, else
    None: Locust would apply it, start the shape, and the run would end at once with the reason only in the log."""
    trial = argparse.Namespace(**vars(opts))
    for o in OPTIONS:
        if o.dest not in form:
            continue
        raw = form[o.dest]
        current = getattr(opts, o.dest)
        try:
            setattr(trial, o.dest, cast_like_locust(current, raw))
        except ValueError:
            kind = "a whole number" if isinstance(current, int) else "a number"
            label = " ".join(word.capitalize() for word in o.dest.split("_"))  # as the form labels the field
            return f"{label} (--{o.flag}) must be {kind}, got {raw!r}"
    if form.get("run_time"):
        try:
            trial.run_time = parse_timespan(form["run_time"])
        except ValueError:
            return None  # Locust answers this one itself
    try:
        check_options(trial)
    except OptionError as e:
        return str(e)
    return check_host(trial.node_hosts, form.get("host"))


def node_hosts(raw: str) -> str:
    """The node URLs as the header and the start form's Host field show them (Locust's form warns about spaces)."""
    return ",".join(node.url for node in parse_nodes(raw))


def check_host(nodes: str, host: str | None) -> str | None:
    """A message if the start form's Host names other nodes than Node Hosts, else None. Locust would apply it to
    its own host, which the suite does not use (each request goes to a node's absolute URL), and then show it in
    its header as if the run targeted it. Empty is fine: Locust then keeps its own host (unused) and its header the
    node hosts the page showed."""
    if not host or not host.strip():
        return None
    try:
        same = node_hosts(host) == node_hosts(nodes)
    except OptionError:
        same = False
    if same:
        return None
    return (
        f"Host ({host.strip()}) is not where the run sends requests: it goes to Node Hosts (--node-hosts, under Custom "
        f"parameters), now {node_hosts(nodes)}; set the nodes there and give Host the same list or leave it empty"
    )


def mount(suite: Any, web_ui: Any) -> None:
    """Add the suite's routes, tab, form fields and report section to Locust's web UI."""
    from flask import Blueprint, Response, jsonify, request
    from flask_login import current_user

    environment = suite.environment
    opts = environment.parsed_options
    prefix = (getattr(opts, "web_base_path", None) or "").rstrip("/")
    blueprint = Blueprint("rlsuite", __name__, url_prefix=prefix or None)

    # Jinja's tojson sorts keys by default, and the page's template args go through it: the form would list the
    # options alphabetically instead of by group. Key order means nothing else to Locust's frontend.
    web_ui.app.jinja_env.policies["json.dumps_kwargs"] = {"sort_keys": False}

    args = web_ui.template_args
    args["extended_tabs"] = [*args.get("extended_tabs", []), {"title": "Rate limiter", "key": TAB_KEY}]
    args["extended_csv_files"] = [
        *args.get("extended_csv_files", []),
        {"href": "./rlsuite", "title": "Rate limiter: live chart, verdict and per-node counts"},
        {"href": "./rlsuite/snapshot", "title": "Rate limiter snapshot (JSON)"},
    ]

    locust_update = web_ui.update_template_args

    def update_template_args() -> None:
        # Locust rebuilds its args on every page load (index route); replace ours each time after that, from the
        # options of the current (or last) run, which a submitted form has changed
        locust_update()
        opts = environment.parsed_options
        page = web_ui.template_args
        page["extra_options"] = form_fields(opts, page.get("extra_options") or {})
        # Locust shows its host (here the locustfile's placeholder) in the header and the form; it has no switch to
        # hide either, so they show where the run sends requests instead
        page["host"] = node_hosts(opts.node_hosts)
        page["missing_host_warning"] = page["override_host_warning"] = False
        # a column per node: the structure is read once per page load
        nodes = [node.name for node in parse_nodes(opts.node_hosts)]
        page["extended_tables"] = [
            *(t for t in page.get("extended_tables", []) if t.get("key") != TAB_KEY),
            {"key": TAB_KEY, "structure": render.tab_structure(nodes)},
        ]

    web_ui.update_template_args = update_template_args
    update_template_args()

    cache: dict[str, Any] = {"at": -SNAPSHOT_TTL, "snap": None}

    def current() -> dict[str, Any]:
        now = time.monotonic()
        if now - cache["at"] >= SNAPSHOT_TTL:
            cache["snap"], cache["at"] = view.snapshot(suite), now
        return cache["snap"]

    def snapshot() -> dict[str, Any]:
        # the run's options beside the snapshot: what the form (or command line) really handed to the run
        options = run_options(environment.parsed_options)
        return {**current(), "options": {flag: value for flag, value, *_ in options}}

    @blueprint.route("/rlsuite")
    @web_ui.auth_required_if_enabled
    def live_page() -> Response:
        links = {"Locust": f"{prefix}/", "Snapshot JSON": f"{prefix}/rlsuite/snapshot", "Metrics": "/metrics"}
        page = render.page(current(), run_options(environment.parsed_options), links)
        return Response(page, mimetype="text/html")

    @blueprint.route("/rlsuite/fragment")
    @web_ui.auth_required_if_enabled
    def live_fragment() -> Response:
        html = render.fragment(current(), run_options(environment.parsed_options))
        response = Response(html, mimetype="text/html")
        response.headers["Cache-Control"] = "no-store"
        return response

    @blueprint.route("/rlsuite/snapshot")
    @web_ui.auth_required_if_enabled
    def snapshot_json() -> Response:
        return jsonify(snapshot())

    web_ui.app.register_blueprint(blueprint)

    @web_ui.app.before_request
    def refuse_bad_form() -> Response | None:
        # Before Locust's view applies the form to parsed_options, so a refused form changes nothing.
        if request.endpoint != SWARM_ENDPOINT or request.method != "POST":
            return None
        if web_ui.web_login and not current_user.is_authenticated:
            return None  # hooks run before the view's login check: let that one answer
        message = check_form(environment.parsed_options, request.form)
        if message is None:
            return None
        logger.error("rlsuite: start form refused: %s", message)
        return jsonify({"success": False, "message": message, "host": environment.host})

    @web_ui.app.after_request
    def add_suite_data(response: Response) -> Response:
        if request.endpoint == STATS_ENDPOINT and response.status_code == 200:
            # Locust memoizes this response for 2 s; the rows are recomputed on every request anyway
            data = response.get_json(silent=True)
            if isinstance(data, dict):
                page_url = f"{request.host_url.rstrip('/')}{prefix}/rlsuite"
                data["extended_stats"] = [{"key": TAB_KEY, "data": render.tab_rows(current(), page_url)}]
                response.set_data(json.dumps(data))
        elif request.endpoint == REPORT_ENDPOINT and response.status_code == 200:
            section = render.report_section(view.snapshot(suite), run_options(environment.parsed_options))
            report = render.inject(response.get_data(as_text=True), section)
            if report is not None:
                response.set_data(report)
        return response


def write_report(suite: Any, path: str | os.PathLike[str]) -> str | None:
    """Add the rate-limiter section to the HTML report Locust wrote at ``path`` (``--html``); the path, or None.

    Locust writes the report when the run ends, before the ``quitting`` event, so this runs at quitting, after the
    summary (the final counts and verdict). A report Locust did not write this time (SIGTERM skips it) is left alone:
    it belongs to an earlier run."""
    target = Path(path)
    plan = suite.conductor.plan if suite.conductor else None
    if plan is None or not target.is_file() or target.stat().st_mtime < plan.t0:
        logger.info("rlsuite: no HTML report of this run at %s; nothing added", target)
        return None
    snap = view.snapshot(suite)
    options = run_options(suite.environment.parsed_options)
    report = render.inject(target.read_text(encoding="utf-8"), render.report_section(snap, options))
    if report is None:
        logger.warning("rlsuite: %s has no </body>; rate-limiter section not added", target)
        return None
    target.write_text(report, encoding="utf-8")
    logger.info("rlsuite: HTML report with the rate-limiter summary, verdict and chart: %s", target)
    return str(target)
