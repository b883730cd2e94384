"""What a conformance run reports: the console table, JUnit XML (for CI), JSON, and the Prometheus gauges.

JUnit: one ``testcase`` per case, ``classname`` = its case group (``rlsuite.conformance.RLC-2``), name = ID and
title. FAILED is a ``failure``, INCONCLUSIVE an ``error`` (the case could not run as designed), NOT APPLICABLE is
``skipped``; OK, NON-STRICT and INFORMATIONAL pass, their grade and figures in ``system-out``. GitHub Actions
(test-reporter actions), GitLab (``artifacts:reports:junit``) and Jenkins (``junit``) all read this subset.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from rlsuite.conformance.grading import (
    FAILED,
    GRADES,
    INCONCLUSIVE,
    NOT_APPLICABLE,
    Result,
    counts,
    exit_code,
    slug,
    summary_line,
)

SUITE = "rlsuite rate-limiter conformance"
PENDING = "pending"  # a case not graded yet (a metric label value only)
WIDTH = 116


def table(results: list[Result], declared: str, nodes: list[str]) -> str:
    """The console report: a block per case (ID, grade, title; requirement, expected, observed, reason)."""
    lines = [
        f"Conformance: {len(results)} cases against {len(nodes)} node(s), declared {declared}",
        f"{'ID':<10}{'Grade':<16}Title",
    ]
    for r in results:
        lines.append(f"{r.case:<10}{r.grade:<16}{r.title}")
        for label, text in (
            ("requires", r.requirement),
            ("expected", r.expected),
            ("observed", r.observed),
            ("why", r.reason),
        ):
            if text:
                lines.extend(
                    textwrap.wrap(
                        text,
                        WIDTH,
                        initial_indent=f"{'':<10}{label + ':':<10}",
                        subsequent_indent=" " * 20,
                        break_on_hyphens=False,
                    )
                )
    code = exit_code(results)
    lines.append(f"Result: {summary_line(results)}; exit code {code}")
    return "\n".join(lines)


def _group(case_id: str) -> str:
    return case_id.split(".")[0]


def junit(results: list[Result], declared: str, nodes: list[str], started: float, seconds: float) -> str:
    n = counts(results)
    root = ET.Element(
        "testsuites",
        name=SUITE,
        tests=str(len(results)),
        failures=str(n[FAILED]),
        errors=str(n[INCONCLUSIVE]),
        skipped=str(n[NOT_APPLICABLE]),
        time=f"{seconds:.3f}",
    )
    suite = ET.SubElement(
        root,
        "testsuite",
        name=SUITE,
        tests=str(len(results)),
        failures=str(n[FAILED]),
        errors=str(n[INCONCLUSIVE]),
        skipped=str(n[NOT_APPLICABLE]),
        time=f"{seconds:.3f}",
        timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        hostname="localhost",
    )
    properties = ET.SubElement(suite, "properties")
    ET.SubElement(properties, "property", name="declared", value=declared)
    ET.SubElement(properties, "property", name="nodes", value=",".join(nodes))
    for r in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"rlsuite.conformance.{_group(r.case)}",
            name=f"{r.case} {r.title}",
            time=f"{r.seconds:.3f}",
        )
        text = f"{r.grade}\nrequires: {r.requirement}\nexpected: {r.expected}\nobserved: {r.observed}" + (
            f"\nwhy: {r.reason}" if r.reason else ""
        )
        if r.grade == FAILED:
            ET.SubElement(case, "failure", message=r.reason or r.observed, type=r.grade).text = text
        elif r.grade == INCONCLUSIVE:
            ET.SubElement(case, "error", message=r.reason or "could not be run as designed", type=r.grade).text = text
        elif r.grade == NOT_APPLICABLE:
            ET.SubElement(case, "skipped", message=r.reason or "not applicable")
        ET.SubElement(case, "system-out").text = text
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def to_json(results: list[Result], declared: str, nodes: list[str], started: float, seconds: float) -> dict[str, Any]:
    return {
        "suite": SUITE,
        "declared": declared,
        "nodes": nodes,
        "started": started,
        "seconds": round(seconds, 3),
        "exit_code": exit_code(results),
        "grades": {slug(g): v for g, v in counts(results).items()},
        "cases": [r.to_json() for r in results],
    }


def write(path: str, text: str) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def write_json(path: str, data: dict[str, Any]) -> None:
    write(path, json.dumps(data, indent=2) + "\n")


class ConformanceCollector(Collector):
    """``rlsuite_conformance_case{case,grade}``: 1 for each case's grade (``pending`` until graded), 0 for the other
    grades; ``rlsuite_conformance_requests_total{case,outcome}``; ``rlsuite_conformance_running``. Label values come
    from the catalogue and the grades: bounded, and every series exists from the first scrape."""

    def __init__(self, ids: Callable[[], list[str]], status: Callable[[], dict[str, Any]]) -> None:
        self._ids = ids
        self._status = status

    def collect(self) -> Iterator[Metric]:
        status = self._status()
        graded: dict[str, str] = status["grades"]
        case = GaugeMetricFamily(
            "rlsuite_conformance_case",
            "1 for the grade of each conformance case (pending until it has run), 0 for its other grades.",
            labels=["case", "grade"],
        )
        for case_id in self._ids():
            current = slug(graded.get(case_id, PENDING))
            for grade in (*GRADES, PENDING):
                case.add_metric([case_id, slug(grade)], 1.0 if slug(grade) == current else 0.0)
        yield case
        requests = CounterMetricFamily(
            "rlsuite_conformance_requests",
            "Requests sent by each conformance case, by outcome (admitted, limited, error).",
            labels=["case", "outcome"],
        )
        sent: dict[tuple[str, str], int] = status["requests"]
        for case_id in sorted({c.split(".")[0] for c in self._ids()}, key=lambda c: int(c.split("-")[1])):
            for outcome in ("admitted", "limited", "error"):
                requests.add_metric([case_id, outcome], sent.get((case_id, outcome), 0))
        yield requests
        yield GaugeMetricFamily(
            "rlsuite_conformance_running", "1 while the catalogue runs.", value=1.0 if status["running"] else 0.0
        )
        yield GaugeMetricFamily(
            "rlsuite_conformance_exit_code",
            "The exit code the run has so far (0 nothing failed, 3 a case FAILED, 4 a case could not run as designed).",
            value=float(status["exit_code"]),
        )
