"""The conformance results as HTML: a section for Locust's ``--html`` report and a live page in the web UI
(``/conformance``), each case a row with its grade and a small chart of what its traffic got (admitted and limited
per tenth of a window, the declared rate as a dashed line, its phases side by side). Self-contained: inline CSS and
SVG, viewable offline.
"""

from __future__ import annotations

import html
from typing import Any

from rlsuite.conformance.grading import FAILED, INCONCLUSIVE, INFORMATIONAL, NON_STRICT, NOT_APPLICABLE, OK, Result
from rlsuite.conformance.traffic import Outcome
from rlsuite.replay import ADMITTED, LIMITED

START, END = "<!-- rlsuite-conformance -->", "<!-- /rlsuite-conformance -->"
BINS_PER_WINDOW = 10
MAX_BINS = 120  # per phase: a chart stays small whatever the window
COLOURS = {
    OK: "#2e7d32",
    NON_STRICT: "#b26a00",
    INFORMATIONAL: "#1565c0",
    NOT_APPLICABLE: "#757575",
    FAILED: "#c62828",
    INCONCLUSIVE: "#6a1b9a",
}
CSS = """
.rlc{font-family:system-ui,sans-serif;font-size:13px;color:#222;margin:16px 0}
.rlc table{border-collapse:collapse;width:100%}
.rlc td,.rlc th{border-bottom:1px solid #ddd;padding:6px;vertical-align:top;text-align:left}
.rlc td:first-child{white-space:nowrap}
.rlc .g{color:#fff;border-radius:3px;padding:1px 6px;white-space:nowrap;font-weight:600}
.rlc .req{color:#555}.rlc .why{color:#8a1c1c}.rlc svg{display:block}
"""


def timeline(outcomes: list[Outcome], window: float) -> list[dict[str, Any]]:
    """Per phase: admitted and limited requests per bin (a tenth of a window, at most MAX_BINS), by start time."""
    out = []
    for o in outcomes:
        length = max(o.phase.length, max((r.start - o.t0 for r in o.records), default=0.0)) + window / BINS_PER_WINDOW
        size = max(window / BINS_PER_WINDOW, length / MAX_BINS)
        n = max(1, int(length / size) + 1)
        admitted, limited = [0] * n, [0] * n
        for r in o.records:
            i = min(n - 1, max(0, int((r.start - o.t0) / size)))
            if r.code == ADMITTED:
                admitted[i] += 1
            elif r.code == LIMITED:
                limited[i] += 1
        out.append({"phase": o.phase.name, "bin": round(size, 6), "admitted": admitted, "limited": limited})
    return out


def chart(phases: list[dict[str, Any]], rate: float, width: int = 260, height: int = 64) -> str:
    """Stacked bars (admitted below, limited above) per bin, phases side by side; the declared rate dashed."""
    if not phases:
        return ""
    bins = sum(len(p["admitted"]) for p in phases) + 2 * (len(phases) - 1)
    top = max(max(a + b for a, b in zip(p["admitted"], p["limited"], strict=True)) for p in phases) or 1
    top = max(top, max(rate * p["bin"] for p in phases))
    w = width / max(1, bins)
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="admitted and limited over time">']
    x = 0.0
    for k, p in enumerate(phases):
        if k:
            x += 2 * w
        limit_y = height - rate * p["bin"] / top * (height - 2)
        start = x
        for a, b in zip(p["admitted"], p["limited"], strict=True):
            ha, hb = a / top * (height - 2), b / top * (height - 2)
            if ha:
                parts.append(
                    f'<rect x="{x:.1f}" y="{height - ha:.1f}" width="{w:.1f}" height="{ha:.1f}" fill="#43a047"/>'
                )
            if hb:
                parts.append(
                    f'<rect x="{x:.1f}" y="{height - ha - hb:.1f}" width="{w:.1f}" height="{hb:.1f}" fill="#e57373"/>'
                )
            x += w
        parts.append(
            f'<line x1="{start:.1f}" x2="{x:.1f}" y1="{limit_y:.1f}" y2="{limit_y:.1f}" stroke="#333" '
            'stroke-dasharray="3,2" stroke-width="1"/>'
        )
    parts.append("</svg>")
    return "".join(parts)


def section(results: list[Result], declared: str, state: str, rate: float) -> str:
    """The results so far; ``state``: "running RLC-5", or the summary line once done."""
    e = html.escape
    rows = []
    for r in results:
        colour = COLOURS.get(r.grade, "#555")
        text = [f'<div class="req">{e(r.requirement)}</div>'] if r.requirement else []
        if r.expected:
            text.append(f"<div><b>expected</b> {e(r.expected)}</div>")
        if r.observed:
            text.append(f"<div><b>observed</b> {e(r.observed)}</div>")
        if r.reason:
            text.append(f'<div class="why"><b>why</b> {e(r.reason)}</div>')
        rows.append(
            f"<tr><td>{e(r.case)}</td><td><span class='g' style='background:{colour}'>{e(r.grade)}</span></td>"
            f"<td><b>{e(r.title)}</b>{''.join(text)}</td><td>{chart(r.timeline, rate)}</td></tr>"
        )
    return (
        f"{START}<section class='rlc'><style>{CSS}</style><h2>Rate-limiter conformance</h2>"
        f"<p>Declared: {e(declared)}. {e(state)}. Charts: admitted (green) and limited (red) per tenth of a window, "
        "the declared rate dashed.</p>"
        "<table><tr><th>ID</th><th>Grade</th><th>Case</th><th>Traffic</th></tr>"
        + "".join(rows)
        + f"</table></section>{END}"
    )


def page(body: str, refresh: bool) -> str:
    meta = '<meta http-equiv="refresh" content="2">' if refresh else ""
    head = f"<meta charset='utf-8'>{meta}<title>Rate-limiter conformance</title>"
    return f"<!doctype html><html><head>{head}</head><body>{body}</body></html>"


def inject(report: str, fragment: str) -> str | None:
    """Locust's report with the section before ``</body>`` (replacing an earlier one); None without a body end."""
    start, end = report.find(START), report.find(END)
    if start != -1 and end > start:
        return report[:start] + fragment + report[end + len(END) :]
    at = report.rfind("</body>")
    return None if at == -1 else report[:at] + fragment + report[at:]
