"""The conformance catalogue's pure parts: grades and exit codes, case selection, JUnit and JSON reports, the rate-limit
field generations, the metrics, and each case's traffic and grading on synthetic records (no process started)."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from rlsuite.conformance import cases, evidence, fields, grading, reports
from rlsuite.conformance.grading import (
    FAILED,
    INCONCLUSIVE,
    INFORMATIONAL,
    NON_STRICT,
    NOT_APPLICABLE,
    OK,
    Result,
)
from rlsuite.conformance.runner import Dispatcher, configure
from rlsuite.conformance.traffic import NO_KEY, Outcome, Phase, Record, burst, paced, volley
from rlsuite.models import FIXED_WINDOW, LEAKY_BUCKET, SLIDING_LOG, TOKEN_BUCKET, Spec
from rlsuite.options import OptionError
from rlsuite.policy import Policy
from rlsuite.replay import ADMITTED, GLOBAL, LIMITED, PER_NODE, UNKNOWN

NODES = ("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3")


def result(grade: str, case: str = "RLC-1.1") -> Result:
    return Result(case, "t", "r", grade)


# -- grades, exit codes, selection --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grades", "code"),
    [
        ([OK, NON_STRICT, INFORMATIONAL, NOT_APPLICABLE], 0),
        ([OK, FAILED], 3),
        ([OK, INCONCLUSIVE], 4),
        ([INCONCLUSIVE, FAILED], 3),  # a proven failure wins over a case that could not run
        ([], 0),
    ],
)
def test_exit_code(grades, code):
    assert grading.exit_code([result(g) for g in grades]) == code


def test_worst_grade_of_parts():
    assert grading.worst(OK, NON_STRICT, INFORMATIONAL) == NON_STRICT
    assert grading.worst(OK, FAILED, INCONCLUSIVE) == FAILED
    assert grading.worst(NOT_APPLICABLE, OK) == OK


@pytest.mark.parametrize(
    ("spec", "chosen"),
    [
        ("", cases.IDS),
        ("all", cases.IDS),
        ("RLC-1,RLC-3.2", ["RLC-1.1", "RLC-3.2"]),
        ("rlc-2", ["RLC-2.1", "RLC-2.2", "RLC-2.3"]),
        ("-RLC-8", [i for i in cases.IDS if not i.startswith("RLC-8.")]),
        ("RLC-8,-RLC-8.2", ["RLC-8.1", "RLC-8.3", "RLC-8.4"]),
        (" RLC-10 , RLC-1 ", ["RLC-1.1", "RLC-10.1"]),  # catalogue order, whatever the order given
    ],
)
def test_case_selection(spec, chosen):
    assert grading.select(spec, cases.IDS) == chosen


def test_rlc_1_does_not_select_rlc_10():
    assert "RLC-10.1" not in grading.select("RLC-1", cases.IDS)


@pytest.mark.parametrize(
    ("spec", "words"),
    [("RLC-42", "'RLC-42', which is not a case"), ("-RLC-99", "not a case"), ("RLC-1,-RLC-1", "leaves no case")],
)
def test_case_selection_errors_name_the_option_and_the_fix(spec, words):
    with pytest.raises(OptionError) as e:
        grading.select(spec, cases.IDS)
    assert str(e.value).startswith("--cases ") and words in str(e.value)
    assert "e.g." in str(e.value) or "select at least one" in str(e.value)


def test_ids_are_unique_and_numbered():
    assert len(set(cases.IDS)) == len(cases.IDS) >= 19
    for case_id in cases.IDS:
        group, number = case_id.removeprefix("RLC-").split(".")
        assert group.isdigit() and number.isdigit()
    for check in cases.CHECKS:
        assert check.title and check.requirement.endswith((".", ")"))


# -- options -----------------------------------------------------------------------------------------------------


def opts(**over) -> SimpleNamespace:
    base = {
        "node_hosts": "http://127.0.0.1:8081,http://127.0.0.1:8082",
        "request_path": "/",
        "rejection_statuses": "429",
        "api_keys": "",
        "api_key_count": 0,
        "api_key_header": "X-Api-Key",
        "request_timeout": 2.0,
        "limit": 100,
        "window": 1.0,
        "limit_algorithm": "token-bucket",
        "limit_burst": 0,
        "window_alignment": "any",
        "limit_counts_rejected": False,
        "limit_delay": False,
        "limit_scope": "global",
        "clock_skew": 0.01,
        "strict_headers": False,
        "verdict_json": "",
        "metrics_port": 0,
        "metrics_linger": 0,
        "cases": "",
        "junit_xml": "",
        "conformance_json": "",
    }
    return SimpleNamespace(**{**base, **over})


@pytest.mark.parametrize(
    ("over", "start"),
    [
        ({"limit": 0}, "--limit is 0"),
        ({"limit_algorithm": "auto"}, "--limit-algorithm is auto"),
        ({"cases": "RLC-77"}, "--cases names"),
        ({"junit_xml": "out/"}, "--junit-xml is a directory"),
        ({"window": 0}, "--window must be above 0"),
        ({"node_hosts": "ftp://x"}, "--node-hosts entry"),
    ],
)
def test_bad_options(over, start):
    with pytest.raises(OptionError) as e:
        configure(opts(**over))
    assert str(e.value).startswith(start), str(e.value)


def test_configure_selects_and_counts_keys():
    config = configure(opts(cases="RLC-9", api_key_count=3))
    assert config.ids == ["RLC-9.1", "RLC-9.2"]
    assert config.context.keys == 3 and config.context.n == 2


# -- reports --------------------------------------------------------------------------------------------------------


def sample_results() -> list[Result]:
    return [
        Result("RLC-1.1", "Steady", "req 1", OK, "0 limited", "0 limited"),
        Result("RLC-2.2", "Burst", "req 2", FAILED, "40", "60", "20 admissions beyond the model"),
        Result("RLC-6.1", "Edges", "req 6", INFORMATIONAL, "e", "o"),
        Result("RLC-9.1", "Keys", "req 9", NOT_APPLICABLE, reason="needs 2 or more API keys"),
        Result("RLC-5.1", "Volley", "req 5", INCONCLUSIVE, reason="the generator fell short"),
        Result("RLC-8.1", "Retry-After", "req 8", NON_STRICT, reason="3 rejections without Retry-After"),
    ]


def test_junit_one_testcase_per_case_with_failures_errors_and_skips():
    xml = reports.junit(sample_results(), "token bucket; global", list(NODES), 1_700_000_000, 12.5)
    root = ET.fromstring(xml.split("\n", 1)[1])
    assert root.tag == "testsuites"
    assert root.attrib["tests"] == "6" and root.attrib["failures"] == "1"
    assert root.attrib["errors"] == "1" and root.attrib["skipped"] == "1"
    suite = root.find("testsuite")
    cases_ = suite.findall("testcase")
    assert [c.attrib["name"].split()[0] for c in cases_] == [
        "RLC-1.1",
        "RLC-2.2",
        "RLC-6.1",
        "RLC-9.1",
        "RLC-5.1",
        "RLC-8.1",
    ]
    by_id = {c.attrib["name"].split()[0]: c for c in cases_}
    assert by_id["RLC-2.2"].find("failure").attrib["message"] == "20 admissions beyond the model"
    assert by_id["RLC-2.2"].attrib["classname"] == "rlsuite.conformance.RLC-2"
    assert by_id["RLC-5.1"].find("error") is not None
    assert by_id["RLC-9.1"].find("skipped").attrib["message"] == "needs 2 or more API keys"
    assert by_id["RLC-8.1"].find("failure") is None and "NON-STRICT" in by_id["RLC-8.1"].find("system-out").text
    props = {p.attrib["name"]: p.attrib["value"] for p in suite.find("properties")}
    assert props["declared"] == "token bucket; global"


def test_json_report():
    data = reports.to_json(sample_results(), "d", list(NODES), 1.0, 2.0)
    json.dumps(data)
    assert data["exit_code"] == 3
    assert data["grades"]["failed"] == 1 and data["grades"]["not_applicable"] == 1 and data["grades"]["ok"] == 1
    assert data["cases"][1]["id"] == "RLC-2.2" and data["cases"][1]["reason"]


def test_table_has_a_block_per_case_and_the_exit_code():
    text = reports.table(sample_results(), "d", list(NODES))
    assert "RLC-2.2   FAILED" in text and "why:      20 admissions beyond the model" in text
    assert text.splitlines()[-1].startswith("Result: 1 OK, 1 NON-STRICT, 1 INFORMATIONAL, 1 NOT APPLICABLE, 1 FAILED")
    assert text.endswith("exit code 3")


def test_metrics_one_gauge_per_case_and_grade():
    graded = {"RLC-1.1": OK, "RLC-2.2": FAILED}
    status = {"grades": graded, "requests": {("RLC-1", "admitted"): 5}, "running": True, "exit_code": 3}
    registry = CollectorRegistry()
    registry.register(reports.ConformanceCollector(lambda: ["RLC-1.1", "RLC-2.2", "RLC-3.1"], lambda: status))
    value = registry.get_sample_value
    assert value("rlsuite_conformance_case", {"case": "RLC-1.1", "grade": "ok"}) == 1
    assert value("rlsuite_conformance_case", {"case": "RLC-1.1", "grade": "failed"}) == 0
    assert value("rlsuite_conformance_case", {"case": "RLC-2.2", "grade": "failed"}) == 1
    assert value("rlsuite_conformance_case", {"case": "RLC-3.1", "grade": "pending"}) == 1
    assert value("rlsuite_conformance_requests_total", {"case": "RLC-1", "outcome": "admitted"}) == 5
    assert value("rlsuite_conformance_requests_total", {"case": "RLC-3", "outcome": "limited"}) == 0
    assert value("rlsuite_conformance_running") == 1 and value("rlsuite_conformance_exit_code") == 3


# -- rate-limit fields ------------------------------------------------------------------------------------------


def answer(**named: str) -> tuple:
    order = [
        "retry_after",
        "ratelimit",
        "policy",
        "rl_limit",
        "rl_remaining",
        "rl_reset",
        "x_limit",
        "x_remaining",
        "x_reset",
        "date",
    ]
    return tuple(named.get(name) for name in order)


def test_fields_latest_draft():
    r = fields.read(answer(ratelimit='"default";r=5;t=1', policy='"default";q=20;w=1'))
    assert r.generations == (fields.LATEST,) and (r.quota, r.window, r.remaining, r.reset) == (20, 1, 5, 1)
    assert not r.malformed and not r.above_quota


@pytest.mark.parametrize(
    ("named", "words"),
    [
        ({"policy": '"default";q=20;w=0.5'}, "not a positive Integer"),
        ({"policy": '"default";w=1'}, "no non-negative Integer q"),
        ({"ratelimit": '"default";t=1'}, "no non-negative Integer r"),
        ({"ratelimit": '"default";r=1;t=-2'}, "not a non-negative Integer"),
        ({"ratelimit": "what?"}, "neither a Structured Fields list"),
        ({"x_limit": "ten"}, "X-RateLimit"),
    ],
)
def test_fields_malformed(named, words):
    r = fields.read(answer(**named))
    assert r.malformed and words in r.malformed[0]


def test_fields_earlier_generations():
    d7 = fields.read(answer(ratelimit="limit=100, remaining=50, reset=5", policy="100;w=60"))
    assert d7.generations == (fields.DRAFT_07,) and (d7.quota, d7.remaining, d7.reset) == (100, 50, 5)
    d0 = fields.read(answer(rl_limit="100, 100;w=60", rl_remaining="7", rl_reset="3"))
    assert d0.generations == (fields.DRAFT_00,) and (d0.quota, d0.remaining, d0.reset) == (100, 7, 3)
    x = fields.read(answer(x_limit="10", x_remaining="11", x_reset="1700000000"))
    assert x.generations == (fields.X_RATELIMIT,) and x.reset is None  # a Unix time, not a delta
    assert x.above_quota
    both = fields.read(answer(ratelimit='"d";r=1', policy='"d";q=2', x_limit="2", x_remaining="1"))
    assert both.generations == (fields.LATEST, fields.X_RATELIMIT)
    assert fields.read(answer(ratelimit='"d";r=3', policy='"d";q=2')).above_quota


def test_retry_after_forms():
    assert fields.retry_after("3") == 3.0
    assert fields.retry_after(None) is None
    assert fields.retry_after("soon") is False
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    assert fields.retry_after("Wed, 21 Oct 2015 07:28:05 GMT", date) == 5.0


# -- traffic and the dispatcher -----------------------------------------------------------------------------------


def test_traffic_builders():
    shots = paced(0.0, 1.0, 10, 3, key=2)
    assert len(shots) == 10 and [s.node for s in shots[:4]] == [0, 1, 2, 0] and shots[-1].due == pytest.approx(0.9)
    assert {s.node for s in paced(0, 1, 10, 3, 0, node=1)} == {1}
    v = volley(0.5, 7, 3, NO_KEY)
    assert {s.due for s in v} == {0.5} and Phase("v", v).concurrency == 7
    b = burst(0.1, 4, 0.2, 2, 0)
    assert [s.due for s in b] == pytest.approx([0.1, 0.15, 0.2, 0.25])


def test_dispatcher_hands_out_due_jobs_and_drops_hopelessly_late_ones():
    now = [100.0]
    d = Dispatcher(clock=lambda: now[0])
    wire = {"urls": ["http://a"], "path": "/", "header": "X", "keys": [], "statuses": [429], "label": "RLC-1"}
    rows = [[0, 99.0, 0, -1, 0, 0, 0, 0], [0, 90.0, 0, -1, 0, 0, 0, 0], [0, 100.0, 0, -1, 1, 0, 0, 0]]
    state = d.load(1, rows, wire, max_delay=2.0)
    first = d.next_job()
    assert first.due == 99.0  # the one 10 s late was dropped
    assert state.dropped == 1 and d.next_job().tag == 1 and d.next_job() is None


# -- grading on synthetic records -------------------------------------------------------------------------------


def context(algorithm=TOKEN_BUCKET, limit=20, window=1.0, scope=GLOBAL, keys=0, **spec) -> cases.Context:
    policy = Policy(Spec(algorithm, limit, window, **spec), scope, 0.01)
    return cases.Context(policy, NODES, keys=keys)


def simulate(ctx: cases.Context, phase: Phase, t0: float, decide, latency: float = 0.001) -> Outcome:
    """Records as a limiter deciding ``decide(shot, t)`` at each shot's due time would produce."""
    out = Outcome(phase, t0)
    for shot in sorted(phase.shots, key=lambda s: s.due):
        t = t0 + shot.due
        ok = decide(shot, t)
        status = 200 if ok else 429
        fields_ = answer(
            ratelimit='"default";r=1;t=1', policy=f'"default";q={ctx.limit};w=1', retry_after=None if ok else "1"
        )
        out.records.append(
            Record(shot.tag, t, t, latency, status, ADMITTED if ok else LIMITED, shot.node, shot.key, fields_)
        )
    return out


def exact(ctx: cases.Context, spec: Spec | None = None, per_node: bool = False):
    from rlsuite import reference

    limiters = {}

    def decide(shot, t):
        where = (shot.node if per_node else 0, shot.key)
        if where not in limiters:
            limiters[where] = reference.build(spec or ctx.spec)
        return limiters[where].hit(t)

    return decide


def run_case(ctx: cases.Context, case: cases.Case, decide_for) -> list[Result]:
    outcomes, t0, history = [], 1_000_000.0, []
    for phase in case.plan(ctx):
        outcome = simulate(ctx, phase, t0, decide_for)
        outcomes.append(outcome)
        history += outcome.records
        t0 = math.ceil(t0 + phase.length + ctx.settle + 1)
    return case.grade(ctx, outcomes, history)


def case_of(check_id: str) -> cases.Case:
    return next(c for c in cases.CATALOGUE if check_id in c.ids)


@pytest.mark.parametrize(
    "check_id", ["RLC-1.1", "RLC-2.1", "RLC-2.2", "RLC-2.3", "RLC-3.1", "RLC-4.1", "RLC-5.1", "RLC-7.1"]
)
def test_an_exact_limiter_passes(check_id):
    ctx = context()
    results = {r.case: r for r in run_case(ctx, case_of(check_id), exact(ctx))}
    assert results[check_id].grade == OK, results[check_id]


@pytest.mark.parametrize("check_id", ["RLC-2.2", "RLC-3.1", "RLC-4.1", "RLC-4.2", "RLC-5.1"])
def test_nodes_that_each_enforce_the_limit_alone_fail(check_id):
    ctx = context()
    results = {r.case: r for r in run_case(ctx, case_of(check_id), exact(ctx, per_node=True))}
    assert results[check_id].grade == FAILED, results[check_id]
    if check_id.startswith("RLC-4"):
        assert results[check_id].details["scope_seen"].startswith("per node")


def test_goodput_collapse_fails_unless_declared():
    ctx = context()
    from dataclasses import replace

    collapsing = replace(ctx.spec, counts_rejected=True)
    r = run_case(ctx, case_of("RLC-3.1"), exact(ctx, collapsing))[0]
    assert r.grade == FAILED and "--limit-counts-rejected" in r.reason
    declared = context(counts_rejected=True)
    r = run_case(declared, case_of("RLC-3.1"), exact(declared))[0]
    assert r.grade == OK, r


def test_edges_fixed_window_informational_and_sliding_log_fails_on_a_fixed_window():
    fw = context(FIXED_WINDOW, alignment="epoch")
    r = run_case(fw, case_of("RLC-6.1"), exact(fw))[0]
    assert r.grade == INFORMATIONAL and r.details["alignment_seen"] == "epoch"
    assert r.details["edge_effect"] == pytest.approx(2.0)
    first = context(FIXED_WINDOW, alignment="first-request")
    r = run_case(first, case_of("RLC-6.1"), exact(first))[0]
    assert r.details["alignment_seen"] == "first request"
    sl = context(SLIDING_LOG)
    assert run_case(sl, case_of("RLC-6.1"), exact(sl))[0].grade == OK
    r = run_case(sl, case_of("RLC-6.1"), exact(sl, fw.spec))[0]
    assert r.grade == FAILED


def test_volley_race_fails_with_lost_updates():
    ctx = context()
    admitted_all = lambda shot, t: True  # noqa: E731 - every request of a volley read the same state
    r = run_case(ctx, case_of("RLC-5.1"), admitted_all)[0]
    assert r.grade == FAILED and "lost each other's updates" in r.reason


def test_headers_without_retry_after_are_non_strict_or_failed_when_strict():
    ctx = context()
    phase = cases.plan_headers(ctx)[0]
    out = simulate(ctx, phase, 1_000_000.0, exact(ctx))
    for rec in out.records:
        rec.fields = (None, *rec.fields[1:])
    results = {r.case: r.grade for r in cases.grade_headers(ctx, [out], out.records)}
    assert results == {"RLC-8.1": NON_STRICT, "RLC-8.2": OK, "RLC-8.3": OK, "RLC-8.4": OK}
    strict = cases.Context(ctx.policy, NODES, strict_headers=True)
    assert cases.grade_headers(strict, [out], out.records)[0].grade == FAILED


def test_keys_not_applicable_without_keys_and_isolation_with_them():
    assert case_of("RLC-9.1").applies(context()) is not None
    ctx = context(keys=4)
    results = {r.case: r for r in run_case(ctx, case_of("RLC-9.1"), exact(ctx))}
    assert results["RLC-9.1"].grade == OK and results["RLC-9.2"].grade == OK
    assert results["RLC-9.2"].details["jain"] == pytest.approx(1.0, abs=0.01)
    shared = exact(ctx)
    one_partition = lambda shot, t: shared(SimpleNamespace(node=0, key=0), t)  # noqa: E731 - keys ignored
    results = {r.case: r for r in run_case(ctx, case_of("RLC-9.1"), one_partition)}
    assert results["RLC-9.1"].grade == FAILED


def test_jain_index():
    assert cases.jain([1, 1, 1]) == pytest.approx(1.0)
    assert cases.jain([1, 0, 0, 0]) == pytest.approx(0.25)


def test_unhealthy_when_the_generator_drops_shots_or_a_node_is_silent():
    ctx = context()
    phase = cases.plan_steady(ctx)[0]
    out = simulate(ctx, phase, 1000.0, exact(ctx))
    assert evidence.unhealthy([out], list(NODES)) is None
    out.dropped = 10
    assert "fell short" in evidence.unhealthy([out], list(NODES))
    out.dropped = 0
    for r in out.records:
        if r.node == 1:
            r.code, r.status = UNKNOWN, 0
    assert "answered nothing" in evidence.unhealthy([out], list(NODES))


def test_settle_covers_the_declared_model_and_rejection_counting():
    assert context().settle >= 2.0
    assert context(LEAKY_BUCKET, burst=5).settle == pytest.approx(2 * 6 / 20 + 0.1 + 0.02)
    assert context(scope=PER_NODE).spread == pytest.approx(0.04)


def test_every_case_plan_is_bounded():
    for keys in (0, 4):
        ctx = context(keys=keys)
        for case in cases.CATALOGUE:
            if case.applies(ctx):
                continue
            for phase in case.plan(ctx):
                assert phase.size <= 60 * ctx.limit and phase.length <= 5 * ctx.window


# -- HTML ---------------------------------------------------------------------------------------------------------


def test_html_section_with_a_chart_per_case_injected_into_locusts_report():
    from rlsuite.conformance import html

    ctx = context()
    outcome = simulate(ctx, cases.plan_capacity(ctx)[0], 1000.0, exact(ctx))
    line = html.timeline([outcome], ctx.window)
    assert sum(line[0]["admitted"]) == 21 and sum(line[0]["limited"]) == 11 and line[0]["bin"] == pytest.approx(0.1)
    results = sample_results()
    results[0].timeline = line
    section = html.section(results, "token <bucket>", "1 OK", ctx.rate)
    assert section.count("<tr>") == len(results) + 1 and section.count("<svg") == 1
    assert "token &lt;bucket&gt;" in section and "20 admissions beyond the model" in section
    report = "<html><body><h1>Locust</h1></body></html>"
    once = html.inject(report, section)
    assert once.index(section) < once.index("</body>")
    assert html.inject(once, section.replace("1 OK", "2 OK")).count(html.START) == 1  # replaced, not added
    assert html.inject("no body", section) is None


@pytest.mark.parametrize(
    "check_id",
    ["RLC-1.1", "RLC-2.1", "RLC-2.2", "RLC-2.3", "RLC-3.1", "RLC-4.1", "RLC-4.2", "RLC-5.1", "RLC-6.1", "RLC-7.1"],
)
def test_a_declared_per_node_limit_is_offered_per_node(check_id):
    """Declared per node, every partition (node) gets the multiple of its limit the case means: exact per-node
    limiters pass, and the capacity and the volleys are judged node by node."""
    ctx = context(scope=PER_NODE)
    assert ctx.offered == 3 * ctx.rate
    results = {r.case: r for r in run_case(ctx, case_of(check_id), exact(ctx, per_node=True))}
    assert results[check_id].grade in (OK, INFORMATIONAL), results[check_id]


def test_one_limit_shared_by_nodes_declared_per_node_fails_the_scope():
    ctx = context(scope=PER_NODE)
    r = run_case(ctx, case_of("RLC-4.1"), exact(ctx))[0]
    assert r.grade == FAILED and r.details["scope_seen"] == "global (shared by the nodes)", r
