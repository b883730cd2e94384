"""The web UI view in a real headless Chromium: Locust's start form drives a run, the Rate limiter tab and
/rlsuite show it, and the --html report carries it. Real processes on 127.0.0.1; the browser may load nothing else.
"""

from __future__ import annotations

from locust.argument_parser import LocustArgumentParser

import json
import re
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rlsuite import suite, webui
from rlsuite.webui import render
from tests.support import (
    INSTALL_CHROMIUM,
    INSTALL_DEV,
    LOCUST,
    LOCUSTFILE,
    ROOT,
    Proc,
    demo_cluster,
    free_port,
    need_module,
    require,
    run_locust,
    running,
    scrape,
    wait_until,
)

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "artifacts"
# No GPU, no sandbox (root in CI), and none of Chromium's own background traffic: the only requests are the test's.
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
POLL = 0.2  # seconds between checks of a page or the API while waiting
LOCAL = re.compile(r"^(https?://127\.0\.0\.1[:/]|file:|data:|about:|blob:)")

# The run typed into the form: 4 s steady at 60/s, a 2 s burst at 4 x 60/s, 2 s steady again.
# 3 s bursts at 3x the limit: enough to tell the limit from twice it, so the verdict can pass
STEADY, MULTIPLIER, EVERY, DURATION, RUN_TIME = 60, 6, 4, 3, 8
EXPECTED_REQUESTS = STEADY * (RUN_TIME - DURATION) + STEADY * MULTIPLIER * DURATION


@dataclass
class Browser:
    context: Any  # a Playwright BrowserContext
    offsite: list[str] = field(default_factory=list)  # requests that tried to leave 127.0.0.1 (blocked)

    def new_page(self) -> Any:
        return self.context.new_page()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    """A headless Chromium with a fresh profile; requests to anything but 127.0.0.1 or local files are blocked and
    recorded."""
    require("chromium", CHROMIUM.exists(), f"no {CHROMIUM}: {INSTALL_CHROMIUM}")
    sync_api = need_module("playwright.sync_api", INSTALL_DEV)
    with sync_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            args=BROWSER_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        browser = Browser(context)

        def block(route: Any) -> None:
            browser.offsite.append(route.request.url)
            route.abort()

        context.route(lambda url: not LOCAL.match(url), block)
        try:
            yield browser
        finally:
            context.close()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def reachable(url: str) -> bool:
    try:
        get_json(url)
    except OSError:
        return False
    return True


def tab_rows(page: Any) -> list[dict[str, str]]:
    """The Rate limiter tab's table as dicts by column title."""
    table = page.locator("table").first
    titles = [t.strip() for t in table.locator("thead th").all_inner_texts()]
    return [
        dict(zip(titles, (c.strip() for c in row.locator("td").all_inner_texts()), strict=True))
        for row in table.locator("tbody tr").all()
    ]


def status_value(rows: list[dict[str, str]], item: str) -> str | None:
    return next((r["Value"] for r in rows if r["Item"] == item), None)


def count_rows(rows: list[dict[str, str]]) -> dict[tuple[str, str], dict[str, str]]:
    """The tab's pivot: the rows with a mode, by (mode, outcome)."""
    return {(r["Mode"], r["Outcome"]): r for r in rows if r["Mode"]}


@dataclass
class WebLocust:
    base: str  # the web UI's URL
    node_hosts: str  # --node-hosts, as the demo cluster gives them


@pytest.fixture
def web_locust() -> Iterator[WebLocust]:
    """The demo cluster (enforcing a fixed window of 120/s) and locust with its web UI, not started."""
    with demo_cluster("--algorithm", "fixed-window", "--limit", "120", "--window", "1") as cluster:
        port = free_port()
        proc = Proc(
            [
                *LOCUST,
                "-f",
                str(LOCUSTFILE),
                "--web-host",
                "127.0.0.1",
                "--web-port",
                str(port),
                "--node-hosts",
                cluster.node_hosts,
                "--metrics-port",
                "0",
                "--loglevel",
                "INFO",
            ]
        )
        with running(proc):
            proc.wait_for(r"Starting web interface", timeout=30)  # fails at once, with the output, if locust exits
            base = f"http://127.0.0.1:{port}"
            # Locust logs "Starting web interface" before it listens: wait for an answer instead
            wait_until(lambda: reachable(base + "/rlsuite/snapshot"), timeout=30, what="the web UI answers", step=POLL)
            yield WebLocust(base, cluster.node_hosts)
        assert "Traceback" not in proc.output, proc.output


def check(page: Any, selector: str) -> None:
    """Tick a checkbox of the form. Locust's form (React) may re-render while the browser is starved of CPU (other
    tests beside this one), and a click that lands in that moment is lost: Playwright then says the click did not
    change the state. Try again a few times; the box must end up ticked."""
    from playwright.sync_api import Error as PlaywrightError

    box = page.locator(selector)
    for _ in range(5):
        if box.is_checked():
            return
        try:
            box.check(timeout=5000)
        except PlaywrightError:
            continue
    assert box.is_checked(), f"{selector} could not be ticked"


@pytest.mark.integration
def test_the_start_form_drives_the_run_and_the_tab_matches_metrics(browser, web_locust):
    base = web_locust.base
    page = browser.new_page()
    page.goto(base + "/")
    # where Locust shows its host (the locustfile's placeholder, unused), the form shows the nodes the run targets
    assert page.input_value("input[name=host]") == web_locust.node_hosts
    page.get_by_text("Advanced options").click()
    page.fill("input[name=runTime]", str(RUN_TIME))
    page.get_by_text("Custom parameters").click()
    # the suite's options are in the form, grouped and explained
    label = page.locator("label", has=page.locator("input[name=strictHeaders]"))
    assert "Declared limit and verdict" in label.inner_text()
    page.fill("input[name=steadyRps]", str(STEADY))  # a float option
    page.fill("input[name=burstMultiplier]", str(MULTIPLIER))
    page.fill("input[name=burstEvery]", str(EVERY))  # int options
    page.fill("input[name=burstDuration]", str(EVERY))  # invalid: as long as the burst period
    page.fill("input[name=limit]", "120")
    page.select_option("select[name=limitAlgorithm]", "fixed-window")  # a choices dropdown
    check(page, "input[name=strictHeaders]")  # a bool
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "webui-form.png"), full_page=True)

    # a value the suite refuses is refused in the form, with the suite's message, and nothing starts
    page.get_by_role("button", name="Start").click()
    page.get_by_text(f"--burst-duration ({EVERY}s) must be shorter than --burst-every ({EVERY}s)").wait_for()
    assert get_json(base + "/rlsuite/snapshot")["run_id"] is None

    # a Host other than the nodes is refused: the run would not send to it, yet the header would show it
    page.fill("input[name=burstDuration]", str(DURATION))
    page.fill("input[name=host]", "http://127.0.0.1:9")
    page.get_by_role("button", name="Start").click()
    page.get_by_text("Host (http://127.0.0.1:9) is not where the run sends requests").wait_for()
    assert get_json(base + "/rlsuite/snapshot")["run_id"] is None

    page.fill("input[name=host]", web_locust.node_hosts)
    page.get_by_role("button", name="Start").click()
    page.get_by_role("tab", name="Rate limiter").click()
    assert web_locust.node_hosts in page.locator("header").inner_text()  # Locust's header, "Host"

    # live: the tab fills, and shows the rate typed into the form while steady
    wait_until(
        lambda: (
            status_value(tab_rows(page), "Mode now") == "steady"
            and status_value(tab_rows(page), "Target req/s") == f"{STEADY:.1f}"
        ),
        timeout=20,
        what="the tab shows the steady target typed into the form",
        step=POLL,
    )
    assert count_rows(tab_rows(page))[("all", "all")]["Total"] not in ("", "0")

    # every edited value reached the run, with its type
    snap = wait_until(
        lambda: (s := get_json(base + "/rlsuite/snapshot"))["run_id"] and not s["running"] and s,
        timeout=30,
        what="the run ends",
        step=POLL,
    )
    options = snap["options"]
    assert options["steady-rps"] == STEADY and isinstance(options["steady-rps"], float)
    assert options["burst-every"] == EVERY and isinstance(options["burst-every"], int)
    assert options["burst-duration"] == DURATION and options["burst-multiplier"] == MULTIPLIER
    assert options["strict-headers"] is True and options["limit"] == 120 and options["run-time"] == RUN_TIME
    assert snap["policy"] == "fixed window, 120 per 1s, windows aligned: any; global"
    bursts = [s for s in snap["stages"] if s["mode"] == "burst"]
    assert bursts == [
        {"index": 1, "mode": "burst", "start": EVERY, "end": EVERY + DURATION, "rps": float(STEADY * MULTIPLIER)}
    ]
    wait_until(
        lambda: get_json(base + "/stats/requests")["state"] == "stopped", timeout=15, what="Locust stops", step=POLL
    )

    # after the run: the tab (fresh page load) equals /metrics, node by node and summed over nodes
    page.goto(base + "/?tab=rlsuite")
    rows = wait_until(
        lambda: (r := tab_rows(page)) and status_value(r, "Run") and "finished" in status_value(r, "Run") and r,
        timeout=15,
        what="the tab shows the finished run",
        step=POLL,
    )
    # a pivot: a row per mode and outcome (then all), a column per node, titled by its host:port, and the total
    nodes = snap["nodes"]
    assert nodes == [url.removeprefix("http://") for url in web_locust.node_hosts.split(",")]
    titles = [t.strip() for t in page.locator("table").first.locator("thead th").all_inner_texts()]
    assert titles == ["Item", "Value", "Mode", "Outcome", *nodes, "Total", "Req/s", "Share"]
    counts = count_rows(rows)
    modes, outcomes = ("steady", "burst"), ("allowed", "limited", "error")
    assert list(counts) == [(m, o) for m in modes for o in outcomes] + [("all", "all")]
    assert all(r["Item"] == r["Value"] == "" for r in counts.values())  # no label repeated on every row
    metrics = scrape(base + "/metrics", "rlsuite_requests_total")
    assert {s.labels["node"] for s in metrics} == set(nodes)
    for (mode, outcome), r in counts.items():
        for node in [*nodes, "Total"]:
            expected = sum(
                s.value
                for s in metrics
                if mode in ("all", s.labels["mode"])
                and outcome in ("all", s.labels["outcome"])
                and node in ("Total", s.labels["node"])
            )
            assert int(r[node]) == expected, (mode, outcome, node, r)
    assert int(counts[("all", "all")]["Total"]) == sum(s.value for s in metrics) == EXPECTED_REQUESTS
    assert counts[("all", "all")]["Share"] == "100.0%"
    assert int(counts[("burst", "limited")]["Total"]) > 0  # the bursts (360/s against 120/s) were limited
    assert status_value(rows, "Verdict") == "PASS: fixed window, 120 per 1s, windows aligned: any; global"
    assert status_value(rows, "Late / dropped sends") == f"{snap['late']} / {snap['dropped']}"
    assert web_locust.node_hosts in page.locator("header").inner_text()  # also on a fresh page load
    page.screenshot(path=str(ARTIFACTS / "webui.png"), full_page=True)

    # the live page: chart with both series, the limit line and the burst shaded, all drawn locally
    page.goto(base + "/rlsuite")
    chart = page.locator("svg.chart")
    assert chart.bounding_box()["width"] > 500
    assert int(chart.get_attribute("data-points")) == RUN_TIME
    assert page.locator("polyline[data-series=allowed]").count() == 1
    assert page.locator("polyline[data-series=limited]").count() == 1
    assert page.locator("line.limit").get_attribute("data-limit") == "120"
    assert page.locator("rect.burst").count() == 1
    assert page.locator("[data-verdict]").get_attribute("data-verdict") == "pass"
    page.screenshot(path=str(ARTIFACTS / "webui-page.png"), full_page=True)
    assert browser.offsite == []
    page.close()


@pytest.mark.integration
def test_the_html_report_carries_the_summary_verdict_and_chart_inline(browser, tmp_path):
    report = tmp_path / "report.html"
    ARTIFACTS.mkdir(exist_ok=True)
    with demo_cluster("--limit", "120", "--window", "1") as cluster:
        run = run_locust(
            cluster.node_hosts,
            tmp_path,
            "-t",
            "6s",
            "--steady-rps",
            "60",
            "--burst-multiplier",
            "6",
            "--burst-every",
            "3",
            "--burst-duration",
            "2",
            "--limit",
            "120",
            "--window",
            "1",
            "--html",
            str(report),
        )
    assert f"rate-limiter summary, verdict and chart: {report}" in run.proc.output, (
        "no rate-limiter section added: Suite.on_quitting must call webui.write_report(self, html_file)"
    )
    html = report.read_text()
    assert html.count('<section id="rlsuite-report"') == 1, "no rate-limiter section (see rlsuite.webui.write_report)"
    section = html[html.index('<section id="rlsuite-report"') :]
    assert "Per mode (all nodes)" in section and "Per node" in section
    assert 'data-verdict="pass"' in section and "token bucket, 120 per 1s, capacity 120; global" in section
    assert '<svg class="chart"' in section and 'data-series="allowed"' in section
    # nothing to fetch: no script, style or font from the network, in Locust's part or ours
    assert not re.search(r"<(script|link|img)\b[^>]*\b(src|href)\s*=\s*[\"']?(https?:)?//", html, re.I)
    assert not re.search(r"(@import\s+|url\()\s*[\"']?(https?:)?//", html, re.I)

    page = browser.new_page()
    page.goto(report.as_uri())
    page.locator("#rlsuite-report svg.chart").scroll_into_view_if_needed()
    assert page.locator("#rlsuite-report svg.chart").bounding_box()["height"] > 100
    assert page.get_by_text("Request Statistics").count() > 0  # Locust's own report still renders
    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
    assert browser.offsite == []
    page.close()


# -- the pieces, without processes ---------------------------------------------------------------------------------


def parsed_defaults(**overrides: Any) -> Any:
    """parsed_options as Locust builds them from the suite's declarations (defaults), plus Locust's run time."""
    parser = LocustArgumentParser()
    suite.add_arguments(parser)
    opts = parser.parse_args([])
    opts.run_time = None
    for key, value in overrides.items():
        setattr(opts, key, value)
    return opts


def fake_snapshot(running: bool = False, errors: int = 0) -> dict[str, Any]:
    """A finished 4 s run over two nodes, burst in second 2, in the shape of view.snapshot(suite)."""
    nodes = ["127.0.0.1:1", "127.0.0.1:2"]
    counts = {("steady", "allowed"): 90, ("burst", "allowed"): 60, ("burst", "limited"): 30, ("burst", "error"): errors}
    seconds = {"steady": 3.0, "burst": 1.0}
    total = sum(counts.values())
    table = [
        {"mode": m, "outcome": o, "node": n, "count": c, "rate": c / seconds[m], "share": c / total}
        for m in ("steady", "burst")
        for o in ("allowed", "limited", "error")
        for n in nodes
        for c in [counts.get((m, o), 0) // 2]
    ]
    series = [{"t": t, "allowed": 60 if t == 2 else 30, "limited": 30 if t == 2 else 0, "error": 0} for t in (0, 2, 3)]
    return {
        "running": running,
        "run_id": 3,
        "mode": "steady",
        "target_rps": 0.0,
        "achieved_rps": 45.0,
        "elapsed": 4.0,
        "settled": 4.0,
        "distributed": False,
        "lag": 1.0,
        "t0": 1000.0,
        "run_time": 4.0,
        "nodes": nodes,
        "mode_seconds": seconds,
        "table": table,
        "series": series,  # second 1 had no request at all
        "stages": [
            {"index": 0, "mode": "steady", "start": 0.0, "end": 2.0, "rps": 30.0},
            {"index": 1, "mode": "burst", "start": 2.0, "end": 3.0, "rps": 90.0},
            {"index": 2, "mode": "steady", "start": 3.0, "end": 4.0, "rps": 30.0},
        ],
        "limit_rps": 60.0,
        "policy": "token bucket, 60 per 1s, capacity 60; global",
        "late": 0,
        "dropped": 0,
        "verdict": None,
        "metrics_url": None,
    }


def test_the_form_lists_the_suite_options_in_group_order_with_their_group_and_current_value():
    fields = webui.form_fields(parsed_defaults(steady_rps=250.0), {"other_plugin": {"default_value": "x"}})
    names = list(fields)
    assert names.index("node_hosts") < names.index("steady_rps") < names.index("limit") < names.index("stats_interval")
    assert names[-1] == "other_plugin"  # other options Locust found stay, after the suite's
    assert "metrics_port" not in fields and "metrics_linger" not in fields  # no effect with the web UI
    assert fields["steady_rps"]["default_value"] == 250.0
    assert (
        fields["steady_rps"]["help_text"]
        == "Steady and burst traffic · Target requests/s across all nodes and workers."
    )
    assert fields["limit_algorithm"]["choices"] == [
        "token-bucket",
        "leaky-bucket",
        "fixed-window",
        "sliding-log",
        "sliding-window-counter",
        "auto",
    ]
    assert fields["strict_headers"]["default_value"] is False  # a checkbox


def test_a_form_the_suite_would_refuse_is_refused_with_its_message():
    opts = parsed_defaults()
    assert webui.check_form(opts, {"steady_rps": "60", "burst_every": "4", "burst_duration": "2"}) is None
    assert webui.check_form(opts, {"burst_every": "4", "burst_duration": "4"}) == (
        "--burst-duration (4s) must be shorter than --burst-every (4s); shorten the burst or space bursts further apart"
    )
    # Locust casts to the type of the current value: an int option refuses "2.5" (Locust itself would answer 500)
    assert (
        webui.check_form(opts, {"burst_every": "2.5"})
        == "Burst Every (--burst-every) must be a whole number, got '2.5'"
    )
    assert webui.check_form(opts, {"steady_rps": "fast"}) == "Steady Rps (--steady-rps) must be a number, got 'fast'"
    assert webui.check_form(opts, {"limit": "10", "limit_algorithm": "leaky"}).startswith(
        "--limit-algorithm is 'leaky'"
    )
    assert webui.cast_like_locust(False, "true") is True and webui.cast_like_locust(1.0, "3") == 3.0
    assert vars(opts) == vars(parsed_defaults())  # checking never changes the options


def test_the_host_field_shows_the_nodes_and_a_host_naming_other_nodes_is_refused():
    opts = parsed_defaults(node_hosts="http://127.0.0.1:1, https://127.0.0.1:2/")
    shown = "http://127.0.0.1:1,https://127.0.0.1:2"
    assert webui.node_hosts(opts.node_hosts) == shown  # what the header and the form's Host show
    assert webui.check_form(opts, {"host": shown}) is None  # the form as shown
    assert webui.check_form(opts, {"host": ""}) is None  # Locust keeps its host, which nothing uses
    assert webui.check_form(opts, {"node_hosts": "http://127.0.0.1:3", "host": "http://127.0.0.1:3/"}) is None
    message = webui.check_form(opts, {"host": "http://127.0.0.1:9"})
    assert message.startswith("Host (http://127.0.0.1:9) is not where the run sends requests") and shown in message
    assert webui.check_form(opts, {"node_hosts": "http://127.0.0.1:3", "host": shown}).endswith(
        "now http://127.0.0.1:3; set the nodes there and give Host the same list or leave it empty"
    )
    assert webui.check_form(opts, {"host": "not a url"}) is not None


def test_the_tab_rows_show_status_then_a_pivot_with_a_column_per_node_and_the_total():
    snap = fake_snapshot(errors=4)
    rows = render.tab_rows(snap, "http://h/rlsuite")
    status = {r["item"]: r["value"] for r in rows if "item" in r}
    assert status["Mode now"] == "finished (last: steady)"  # not the stage after the end
    assert status["Verdict"].startswith("none")
    structure = render.tab_structure(snap["nodes"])
    keys = [c["key"] for c in structure]
    assert [c["title"] for c in structure] == [
        "Item",
        "Value",
        "Mode",
        "Outcome",
        "127.0.0.1:1",
        "127.0.0.1:2",
        "Total",
        "Req/s",
        "Share",
    ]
    counts = {(r["mode"], r["outcome"]): r for r in rows if "mode" in r}
    assert list(counts) == [(m, o) for m in ("steady", "burst") for o in ("allowed", "limited", "error")] + [
        ("all", "all")
    ]
    assert all(set(r) <= set(keys) for r in rows)  # every cell has its column
    node1, node2 = (render.node_key(n) for n in snap["nodes"])
    assert [(r[node1], r[node2], r["total"]) for r in counts.values()] == [
        (45, 45, 90),
        (0, 0, 0),
        (0, 0, 0),
        (30, 30, 60),
        (15, 15, 30),
        (2, 2, 4),
        (92, 92, 184),
    ]
    # req/s per second of that mode (3 s steady, 1 s burst; all: over the 4 s), share of all requests
    assert counts[("steady", "allowed")]["rate"] == "30.0" and counts[("burst", "allowed")]["rate"] == "60.0"
    assert counts[("all", "all")]["rate"] == "46.0" and counts[("all", "all")]["share"] == "100.0%"
    assert render.node_key("127.0.0.1:1") != "mode"  # a node never takes another column's key


def test_the_chart_has_a_step_per_settled_second_the_limit_and_the_bursts():
    svg = render.chart_svg(fake_snapshot())
    assert 'data-points="4"' in svg  # seconds 0-3, the empty second 1 as a zero
    assert svg.count('class="burst"') == 1 and 'data-limit="60"' in svg
    assert 'data-series="allowed"' in svg and 'data-series="limited"' in svg and 'data-series="error"' not in svg
    live = render.chart_svg({**fake_snapshot(running=True), "elapsed": 3.5, "settled": 2.0})
    assert 'data-points="2"' in live  # while running, the seconds not settled still grow: not drawn yet


def test_the_report_section_goes_before_the_body_end_once():
    section = render.report_section(fake_snapshot(), webui.run_options(parsed_defaults()))
    report = '<html><body><div id="root"></div><script>window.templateArgs = {}</script></body></html>'
    once = render.inject(report, section)
    assert once.index('<div id="root">') < once.index(section) < once.index("</body>")
    assert render.inject(once, section) == once  # written again (a second quit): replaced, not added
    assert render.inject("<html>no body end", section) is None
    assert "<script" not in section  # the report's section is static
    # per node: the same pivot as the tab
    assert "<th>127.0.0.1:1</th><th>127.0.0.1:2</th><th>Total</th>" in section
