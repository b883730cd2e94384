"""Views of a run snapshot (``view.snapshot(suite)``): pure functions, data in, markup (or tab rows) out.

One renderer serves the live page (``/rlsuite``, refreshed by swapping in ``/rlsuite/fragment``) and the section
added to Locust's ``--html`` report, so both always show the same numbers. The chart is inline SVG drawn here, so
neither needs JavaScript to show it nor anything from the network.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path
from typing import Any

from rlsuite.classify import OUTCOMES
from rlsuite.schedule import BURST, MODES

HERE = Path(__file__).resolve().parent
OptionRows = list[tuple[str, Any, str, str]]  # flag, value, argparse group, help
COLORS = {"allowed": "#2e7d32", "limited": "#ef6c00", "error": "#c62828", "limit": "#6a1b9a", "target": "#757575"}
# limited is drawn wide and under admitted: in a burst both are often the same count, and both stay visible
WIDTHS = {"limited": 4, "error": 3, "allowed": 2}
RESULT_CLASS = {"pass": "pass", "fail": "fail", "inconclusive": "inconclusive"}


def asset(name: str) -> str:
    """A file shipped beside this module (CSS, JS), to be inlined: the pages load nothing else."""
    return (HERE / name).read_text(encoding="utf-8")


def _num(value: float, digits: int = 1) -> str:
    return f"{value:,.{digits}f}"


def _pct(value: float) -> str:
    return f"{value:.1%}"


def settled_seconds(snap: dict[str, Any]) -> int:
    """Whole seconds of the run whose counts are complete (the snapshot's ``settled``, as the verdict uses it):
    requests are counted by start second when they finish, and a master hears of them only when workers report."""
    return max(0, int(float(snap.get("settled") or 0.0) + 1e-9))


def mode_now(snap: dict[str, Any]) -> str:
    """The mode running now, or "finished (last: <mode>)": a run that ends on a stage boundary would otherwise show
    the stage that never ran."""
    if snap["running"]:
        return snap["mode"]
    elapsed = float(snap["elapsed"])
    last = [st["mode"] for st in snap["stages"] if st["start"] < elapsed]
    return f"finished (last: {last[-1]})" if last else "finished"


def mode_totals(snap: dict[str, Any]) -> list[dict[str, Any]]:
    """The mode x outcome x node table summed over nodes: one row per mode and outcome."""
    out = []
    for mode in MODES:
        for outcome in OUTCOMES:
            rows = [r for r in snap["table"] if r["mode"] == mode and r["outcome"] == outcome]
            out.append(
                {
                    "mode": mode,
                    "outcome": outcome,
                    "count": sum(r["count"] for r in rows),
                    "rate": sum(r["rate"] for r in rows),  # every node's rate has the same divisor (mode seconds)
                    "share": sum(r["share"] for r in rows),
                }
            )
    return out


def pivot(snap: dict[str, Any]) -> list[dict[str, Any]]:
    """The mode x outcome x node table as one row per mode and outcome, then one for all of them: the count per
    node (``by_node``, in the order of ``snap["nodes"]``), the count over all nodes, its rate (per second of that
    mode; over the whole run for the last row) and its share of all requests."""
    nodes = snap["nodes"]
    cells = {(c["mode"], c["outcome"], c["node"]): c["count"] for c in snap["table"]}
    rows = [
        {**r, "by_node": [cells.get((r["mode"], r["outcome"], node), 0) for node in nodes]} for r in mode_totals(snap)
    ]
    total = sum(r["count"] for r in rows)
    seconds = sum(snap.get("mode_seconds", {}).values())
    rows.append(
        {
            "mode": "all",
            "outcome": "all",
            "by_node": [sum(r["by_node"][i] for r in rows) for i in range(len(nodes))],
            "count": total,
            "rate": total / seconds if seconds > 0 else 0.0,
            "share": 1.0 if total else 0.0,
        }
    )
    return rows


def catching_up(snap: dict[str, Any]) -> str:
    """A caveat for live numbers on a master: workers report every second, so the last seconds are still arriving and
    the achieved rate and the verdict so far read low until they do."""
    if snap.get("running") and snap.get("distributed"):
        return f" (the last ~{snap['lag']:g}s still arriving from workers)"
    return ""


def node_key(node: str) -> str:
    """The tab's column key for a node's counts. Locust's frontend camel-cases the keys of both the rows and the
    table structure (``_x`` to ``X``), the same way, so any node name still matches its column; the prefix keeps a
    node named like another column (``http://mode``) apart."""
    return f"node:{node}"


def tab_structure(nodes: list[str]) -> list[dict[str, Any]]:
    """The "Rate limiter" tab's columns (Locust's ``extended_tables`` structure): status lines use Item and Value,
    the counts Mode, Outcome, a column per node (titled by its host:port) and the total over the nodes."""
    return [
        {"key": "item", "title": "Item"},
        {"key": "value", "title": "Value"},
        {"key": "mode", "title": "Mode"},
        {"key": "outcome", "title": "Outcome"},
        *({"key": node_key(node), "title": node} for node in nodes),
        {"key": "total", "title": "Total"},
        {"key": "rate", "title": "Req/s"},
        {"key": "share", "title": "Share"},
    ]


def tab_rows(snap: dict[str, Any], page_url: str) -> list[dict[str, Any]]:
    """Rows of the "Rate limiter" tab in Locust's UI, which can only show one table per tab: status lines first
    (item and value), then the counts as a pivot: a row per mode and outcome, then one for all, with a column per
    node (see ``tab_structure``) and the total over the nodes with its rate and share.

    Other keys are single lowercase words, which Locust's frontend leaves as they are."""
    if snap.get("run_id") is None:
        return [{"item": "Run", "value": "no run yet: start one from the form (New)"}]

    def status(item: str, value: str) -> dict[str, Any]:
        return {"item": item, "value": value}

    run_time = snap.get("run_time")
    length = f"{snap['elapsed']:.0f}s of {run_time:g}s" if run_time else f"{snap['elapsed']:.0f}s (until stopped)"
    rows = [
        status("Run", f"#{snap['run_id']} {'running' if snap['running'] else 'finished'}, {length}"),
        status("Mode now", mode_now(snap)),
        status("Target req/s", _num(snap["target_rps"])),
        status("Achieved req/s", f"{_num(snap['achieved_rps'])} (last 5 complete seconds){catching_up(snap)}"),
        status("Late / dropped sends", f"{snap['late']} / {snap['dropped']}"),
    ]
    verdict = snap.get("verdict")
    if verdict is None:
        rows.append(status("Verdict", "none: no limit declared (set Limit in the form)"))
    else:
        so_far = " so far" if snap["running"] else ""
        result = f"{verdict['result'].upper()}: {verdict['policy']}{catching_up(snap)}"
        rows.append(status(f"Verdict{so_far}", result))
        rows.extend(status("Reason", reason) for reason in verdict["reasons"])
    rows.append(status("Chart and details", f"{page_url} (also under Download Data)"))

    for r in pivot(snap):
        rows.append(
            {
                "mode": r["mode"],
                "outcome": r["outcome"],
                **{node_key(node): n for node, n in zip(snap["nodes"], r["by_node"], strict=True)},
                "total": r["count"],
                "rate": _num(r["rate"]),
                "share": _pct(r["share"]),
            }
        )
    return rows


# -- HTML --------------------------------------------------------------------------------------------------------


def _table(headers: list[str], rows: list[list[Any]], numeric_from: int, css: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="{"num" if i >= numeric_from else ""}">{escape(str(c))}</td>' for i, c in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    return f'<table class="{css}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def status_html(snap: dict[str, Any]) -> str:
    run_time = snap.get("run_time")
    state = "running" if snap["running"] else "finished"
    items = [
        ("Run", f"#{snap['run_id']} ({state})"),
        ("Elapsed", f"{snap['elapsed']:.1f}s" + (f" of {run_time:g}s" if run_time else " (until stopped)")),
        ("Mode now", mode_now(snap)),
        ("Target req/s", _num(snap["target_rps"])),
        ("Achieved req/s", _num(snap["achieved_rps"])),
        ("Late / dropped", f"{snap['late']} / {snap['dropped']}"),
        ("Declared limit", snap["policy"] or "none (--limit 0: no verdict)"),
        ("Nodes", ", ".join(snap["nodes"])),
    ]
    cells = "".join(
        f'<div class="kv"><span class="k">{escape(k)}</span><span class="v" data-item="{escape(k)}">{escape(v)}</span>'
        "</div>"
        for k, v in items
    )
    return f'<div class="status">{cells}</div>'


def summary_html(snap: dict[str, Any]) -> str:
    seconds = snap.get("mode_seconds", {})
    rows = [
        [r["mode"], r["outcome"], r["count"], _num(r["rate"]), _pct(r["share"])]
        for r in mode_totals(snap)
        if r["count"] or r["outcome"] != "error"
    ]
    spent = ", ".join(f"{mode} {seconds.get(mode, 0):.0f}s" for mode in MODES)
    return (
        f'<h3>Per mode (all nodes)</h3><p class="note">Seconds of load: {escape(spent)}; req/s = requests / '
        "seconds of that mode; share of all requests.</p>"
        + _table(["Mode", "Outcome", "Requests", "Req/s", "Share"], rows, 2, "per-mode")
    )


def nodes_html(snap: dict[str, Any]) -> str:
    """The same pivot as the tab: requests per mode and outcome, a column per node and the total."""
    rows = [[r["mode"], r["outcome"], *r["by_node"], r["count"]] for r in pivot(snap)]
    return "<h3>Per node</h3>" + _table(["Mode", "Outcome", *snap["nodes"], "Total"], rows, 2, "per-node")


def verdict_html(snap: dict[str, Any]) -> str:
    verdict = snap.get("verdict")
    if verdict is None:
        return '<h3>Verdict</h3><p class="note">No limit declared (--limit 0): no verdict.</p>'
    result = verdict["result"]
    so_far = " so far" if snap["running"] else ""
    parts = [
        f'<h3>Verdict{so_far}: <span class="badge {RESULT_CLASS.get(result, "")}" data-verdict="{escape(result)}">'
        f"{escape(result.upper())}</span></h3>",
        f"<p>Declared: {escape(verdict['policy'])}{escape(catching_up(snap))}</p>",
    ]
    rows = [
        [
            r["mode"],
            r["offered"],
            r["admitted"],
            r["limited"],
            r["errors"],
            r["over"],
            r["under"],
            r["result"].upper(),
        ]
        for r in verdict["rows"]
    ]
    parts.append(
        _table(
            ["Mode", "Offered", "Admitted", "Limited", "Errors", "Over", "Under", "Result"],
            rows,
            1,
            "verdict",
        )
    )
    if verdict["reasons"]:
        parts.append('<ul class="reasons">' + "".join(f"<li>{escape(r)}</li>" for r in verdict["reasons"]) + "</ul>")
    findings = ", ".join(f"{rule} x{n}" for rule, n in verdict.get("findings", {}).items()) or "none"
    details = [
        ("Detectable", verdict.get("detectable_text", "")),
        ("Timing", verdict.get("timing", "")),
        ("Header findings", findings),
        ("Advertised by the target", "; ".join(verdict.get("advertised", [])) or "nothing"),
        *(("Note", note) for note in verdict.get("notes", [])),
    ]
    parts.append(
        '<dl class="details">' + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in details) + "</dl>"
    )
    return "".join(parts)


def options_html(options: OptionRows | None) -> str:
    """The options of the run, by group, with their full help (the start form has room for one line of it)."""
    if not options:
        return ""
    body, group = [], None
    for flag, value, in_group, meaning in options:
        if in_group != group:
            group = in_group
            body.append(f'<tr class="group"><th colspan="3">{escape(group)}</th></tr>')
        shown = "" if value is None else str(value)
        body.append(
            f'<tr><td class="flag">--{escape(flag)}</td><td data-option="{escape(flag)}">{escape(shown)}</td>'
            f"<td>{escape(meaning)}</td></tr>"
        )
    return (
        '<h3>Options of this run</h3><table class="options"><thead><tr><th>Option</th><th>Value</th>'
        f"<th>Meaning</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


# -- chart -------------------------------------------------------------------------------------------------------


def _nice_step(span: float, ticks: int) -> float:
    """A 1/2/2.5/5 x 10^k step giving about ``ticks`` ticks over ``span``."""
    raw = max(span, 1e-9) / ticks
    base = 10 ** math.floor(math.log10(raw))
    return next(m * base for m in (1, 2, 2.5, 5, 10) if m * base >= raw)


def chart_svg(snap: dict[str, Any], width: int = 960, height: int = 320) -> str:
    """Admitted, limited (and failed) requests per second by start second, the declared limit as a line, the target
    as a dotted step line, burst stages shaded."""
    left, right, top, bottom = 60, 16, 34, 42
    plot_w, plot_h = width - left - right, height - top - bottom
    settled = settled_seconds(snap)
    run_time = snap.get("run_time")
    x_max = float(run_time) if run_time else max(10.0, math.ceil(float(snap["elapsed"]) / 10) * 10)
    # a second without a single request started has no entry, and is a real zero
    by_second = {s["t"]: s for s in snap["series"]}
    zero = {"allowed": 0, "limited": 0, "error": 0}
    series = [by_second.get(t, {"t": t, **zero}) for t in range(min(settled, math.ceil(x_max)))]
    stages = snap["stages"]
    limit = snap.get("limit_rps")
    has_errors = any(s["error"] for s in series)
    peak = max(
        [1.0]
        + [max(s["allowed"], s["limited"], s["error"]) for s in series]
        + [st["rps"] for st in stages]
        + ([limit] if limit else [])
    )
    y_step = _nice_step(peak * 1.08, 5)
    y_max = math.ceil(peak * 1.08 / y_step) * y_step

    def x(t: float) -> float:
        return left + plot_w * min(max(t, 0.0), x_max) / x_max

    def y(v: float) -> float:
        return top + plot_h * (1 - v / y_max)

    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="Requests per second over the run" data-points="{len(series)}">',
        "<title>Admitted and limited requests per second</title>",
    ]
    for st in stages:
        if st["mode"] == BURST and st["end"] > st["start"] and st["start"] < x_max:
            x0, x1 = x(st["start"]), x(st["end"])
            out.append(
                f'<rect class="burst" x="{x0:.1f}" y="{top}" width="{x1 - x0:.1f}" height="{plot_h}" '
                f'fill="#ff9800" fill-opacity="0.13"><title>burst stage {st["index"]}: {st["rps"]:g} req/s</title>'
                "</rect>"
            )
    # grid and axes
    v = 0.0
    while v <= y_max + 1e-9:
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e0e0e0"/>'
            f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end" class="tick">{v:g}</text>'
        )
        v += y_step
    x_step = max(1.0, _nice_step(x_max, 10))
    t = 0.0
    while t <= x_max + 1e-9:
        out.append(
            f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" stroke="#9e9e9e"/>'
            f'<text x="{x(t):.1f}" y="{top + plot_h + 17}" text-anchor="middle" class="tick">{t:g}</text>'
        )
        t += x_step
    out.append(
        f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#9e9e9e"/>'
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 6}" text-anchor="middle" class="axis">seconds since the '
        "run started (requests counted by start time)</text>"
        f'<text x="14" y="{top + plot_h / 2:.0f}" text-anchor="middle" class="axis" '
        f'transform="rotate(-90 14 {top + plot_h / 2:.0f})">requests/s</text>'
    )
    # target: a step line over the stages
    if stages:
        points = []
        for st in stages:
            points += [f"{x(st['start']):.1f},{y(st['rps']):.1f}", f"{x(st['end']):.1f},{y(st['rps']):.1f}"]
        out.append(
            f'<polyline class="target" points="{" ".join(points)}" fill="none" stroke="{COLORS["target"]}" '
            'stroke-width="1.5" stroke-dasharray="2 3"/>'
        )
    if limit:
        out.append(
            f'<line class="limit" x1="{left}" x2="{left + plot_w}" y1="{y(limit):.1f}" y2="{y(limit):.1f}" '
            f'stroke="{COLORS["limit"]}" stroke-width="2" stroke-dasharray="8 5" data-limit="{limit:g}"/>'
            f'<text x="{left + plot_w - 4}" y="{y(limit) - 5:.1f}" text-anchor="end" class="label" '
            f'fill="{COLORS["limit"]}">declared limit {limit:g}/s</text>'
        )
    # admitted last, on top: in a burst it often equals limited, and admitted is what the limit line judges
    shown = ["limited", *(["error"] if has_errors else []), "allowed"]
    for key in shown:
        # steps, one per second: each value is a count over that whole second
        pts = " ".join(f"{x(s['t']):.1f},{y(s[key]):.1f} {x(s['t'] + 1):.1f},{y(s[key]):.1f}" for s in series)
        out.append(
            f'<polyline class="series" data-series="{key}" points="{pts}" fill="none" stroke="{COLORS[key]}" '
            f'stroke-width="{WIDTHS[key]}"/>'
        )
        if len(series) <= 120:  # dots show single seconds and short runs; they would only clutter long ones
            out.extend(
                f'<circle cx="{x(s["t"] + 0.5):.1f}" cy="{y(s[key]):.1f}" r="2.5" fill="{COLORS[key]}">'
                f"<title>{s['t']}s: {s[key]} {key}</title></circle>"
                for s in series
            )
    # legend
    legend = [("admitted/s", COLORS["allowed"], ""), ("limited/s", COLORS["limited"], "")]
    if has_errors:
        legend.append(("errors/s", COLORS["error"], ""))
    legend.append(("target/s", COLORS["target"], "2 3"))
    if limit:
        legend.append(("declared limit", COLORS["limit"], "8 5"))
    lx = left
    for label, color, dash in legend:
        out.append(
            f'<line x1="{lx}" x2="{lx + 22}" y1="14" y2="14" stroke="{color}" stroke-width="2.5" '
            f'stroke-dasharray="{dash}"/><text x="{lx + 27}" y="18" class="legend">{label}</text>'
        )
        lx += 40 + 7 * len(label)
    out.append(
        f'<rect x="{lx}" y="6" width="22" height="14" fill="#ff9800" fill-opacity="0.25"/>'
        f'<text x="{lx + 27}" y="18" class="legend">burst stage</text>'
    )
    out.append("</svg>")
    return "".join(out)


# -- pages -------------------------------------------------------------------------------------------------------


def fragment(snap: dict[str, Any], options: OptionRows | None = None) -> str:
    """Everything about the run, as the body of the live page and of the report section."""
    if snap.get("run_id") is None:
        return '<p class="note" data-running="false">No run yet: start one from Locust\'s start form.</p>'
    running = "true" if snap["running"] else "false"
    return (
        f'<div data-running="{running}" data-run="{snap["run_id"]}">'
        + status_html(snap)
        + '<h3>Requests per second</h3><div class="chart-box">'
        + chart_svg(snap)
        + "</div>"
        + verdict_html(snap)
        + summary_html(snap)
        + nodes_html(snap)
        + options_html(options)
        + "</div>"
    )


def page(snap: dict[str, Any], options: OptionRows | None, links: dict[str, str]) -> str:
    """The self-contained live page: inline CSS and JS, which swaps in a fresh fragment every few seconds."""
    nav = " · ".join(f'<a href="{escape(href)}">{escape(label)}</a>' for label, href in links.items())
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Rate limiter - Locust</title><style>{asset('rlsuite.css')}</style></head>"
        f'<body class="rlsuite"><header><h2>Rate limiter</h2><nav>{nav}</nav></header>'
        f'<main id="rlsuite-live" data-fragment="rlsuite/fragment">{fragment(snap, options)}</main>'
        f"<script>{asset('live.js')}</script></body></html>"
    )


REPORT_START = "<!-- rlsuite-report:start -->"
REPORT_END = "<!-- rlsuite-report:end -->"


def report_section(snap: dict[str, Any], options: OptionRows | None) -> str:
    """The section added to Locust's HTML report: static (no script), styled by its own scoped CSS."""
    return (
        f'{REPORT_START}<section id="rlsuite-report" class="rlsuite"><style>{asset("rlsuite.css")}</style>'
        "<header><h2>Rate limiter</h2></header>" + fragment(snap, options) + f"</section>{REPORT_END}"
    )


def inject(report: str, section: str) -> str | None:
    """Locust's report with ``section`` before ``</body>`` (replacing an earlier one); None if it has no body end."""
    start, end = report.find(REPORT_START), report.find(REPORT_END)
    if start != -1 and end > start:
        return report[:start] + section + report[end + len(REPORT_END) :]
    at = report.rfind("</body>")
    if at == -1:
        return None
    return report[:at] + section + report[at:]
