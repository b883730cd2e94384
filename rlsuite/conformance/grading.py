"""Grades, results and the exit code of a conformance run; which cases a run selects (``--cases``).

Grades follow Autobahn|Testsuite's:

- **OK**: the requirement holds.
- **NON-STRICT**: it holds within the algorithm's documented tolerance, or a SHOULD was not met: worth a look, never a
  failure (with ``--strict-headers`` a header SHOULD not met is FAILED instead).
- **INFORMATIONAL**: a measurement to read, not a requirement (the edge effect of a fixed window, latency).
- **NOT APPLICABLE**: the case cannot apply to this cluster or declaration (key isolation without API keys).
- **FAILED**: the cluster disagrees with the declared policy, proven (the replay found a decision no timing
  explains) or a MUST of the header draft was broken.
- **INCONCLUSIVE**: the case could not be run as designed (the generator fell short, a node answered nothing):
  not a property of the cluster, but the run proves nothing about it either.

Pure: no Locust, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlsuite.options import OptionError

OK = "OK"
NON_STRICT = "NON-STRICT"
INFORMATIONAL = "INFORMATIONAL"
NOT_APPLICABLE = "NOT APPLICABLE"
FAILED = "FAILED"
INCONCLUSIVE = "INCONCLUSIVE"
GRADES = (OK, NON_STRICT, INFORMATIONAL, NOT_APPLICABLE, FAILED, INCONCLUSIVE)
# how bad a grade is, to combine the grades of parts of one case (its phases, its volleys): the worst wins
SEVERITY = {NOT_APPLICABLE: 0, OK: 1, INFORMATIONAL: 2, NON_STRICT: 3, INCONCLUSIVE: 4, FAILED: 5}

EXIT_OK, EXIT_FAILED, EXIT_INCONCLUSIVE = 0, 3, 4


def worst(*grades: str) -> str:
    return max(grades, key=SEVERITY.__getitem__)


def slug(grade: str) -> str:
    """The grade as a metric label value or a JSON key: ``non_strict``, ``not_applicable``."""
    return grade.lower().replace("-", "_").replace(" ", "_")


@dataclass
class Result:
    """The graded outcome of one case."""

    case: str  # its ID, e.g. RLC-2.2
    title: str
    requirement: str
    grade: str
    expected: str = ""
    observed: str = ""
    reason: str = ""  # why this grade, one sentence (FAILED, NON-STRICT, INCONCLUSIVE, NOT APPLICABLE)
    details: dict[str, Any] = field(default_factory=dict)  # figures for the JSON report
    seconds: float = 0.0  # how long its traffic took, settling included
    timeline: list[dict[str, Any]] = field(default_factory=list)  # per phase: admitted/limited per bin (charts)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.case,
            "title": self.title,
            "requirement": self.requirement,
            "grade": self.grade,
            "expected": self.expected,
            "observed": self.observed,
            "reason": self.reason,
            "seconds": round(self.seconds, 3),
            "details": self.details,
            "timeline": self.timeline,
        }


def exit_code(results: list[Result]) -> int:
    """0 when nothing FAILED and every case ran as designed; 3 when a case FAILED (whatever else happened); 4 when
    a case could not be run as designed."""
    grades = {r.grade for r in results}
    if FAILED in grades:
        return EXIT_FAILED
    if INCONCLUSIVE in grades:
        return EXIT_INCONCLUSIVE
    return EXIT_OK


def counts(results: list[Result]) -> dict[str, int]:
    out = dict.fromkeys(GRADES, 0)
    for r in results:
        out[r.grade] += 1
    return out


def summary_line(results: list[Result]) -> str:
    n = counts(results)
    return ", ".join(f"{n[g]} {g}" for g in GRADES if n[g] or g in (OK, FAILED))


# -- selection --------------------------------------------------------------------------------------------------


def _matches(token: str, case_id: str) -> bool:
    """``RLC-3`` selects RLC-3 and RLC-3.1, RLC-3.2, ...; ``RLC-3.1`` only itself."""
    return case_id == token or case_id.startswith(token + ".")


def select(spec: str, ids: list[str]) -> list[str]:
    """The IDs that ``--cases`` selects, in catalogue order. ``spec`` is comma-separated IDs or ID prefixes;
    ``-ID`` excludes; only exclusions (or nothing, or ``all``) start from every case. Case-insensitive."""
    tokens = [t.strip().upper() for t in str(spec).split(",") if t.strip()]
    include = [t for t in tokens if not t.startswith("-") and t != "ALL"]
    exclude = [t[1:].strip() for t in tokens if t.startswith("-")]
    for token in [*include, *exclude]:
        if not token or not any(_matches(token, i) for i in ids):
            example = ", ".join(ids[:3])
            raise OptionError(
                "cases",
                f"names {token or '-'!r}, which is not a case of the catalogue",
                f"give case IDs or prefixes, e.g. --cases RLC-1,RLC-3.1 or --cases -RLC-8 (cases: {example}, ...)",
            )
    chosen = [i for i in ids if not include or any(_matches(t, i) for t in include)]
    chosen = [i for i in chosen if not any(_matches(t, i) for t in exclude)]
    if not chosen:
        raise OptionError("cases", f"{spec!r} leaves no case to run", "select at least one case")
    return chosen
