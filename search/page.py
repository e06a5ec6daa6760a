"""One self-contained HTML page from the report data and its figures (plotly.js inlined once)."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from search.report import ReportData, precision_summary

CAPTIONS = {
    "pareto": "Each point is one trial's exported ONNX file, measured in ONNX Runtime. Bold blue "
    "points are the Pareto front (no other trial is both more accurate and faster); faded points "
    "are dominated, over budget or failed. Hover a point for its whole configuration.",
    "memory": "Peak memory of inference, measured in a fresh process. The colours still mark the "
    "accuracy/latency front.",
    "size": "Size of the measured ONNX file on disk.",
    "parallel": "Drag along an axis to filter trials.",
    "importance": "How much of each objective's variance each searched parameter explains.",
    "hypervolume": "Area the front dominates; it rises when a trial improves the front.",
    "savings": "Parameters and multiply-accumulates of the PyTorch model after each step.",
    "kernels": "How many nodes of the measured file ran as integer kernels.",
    "sensitivity": "How much each layer's accuracy suffers when it alone is compressed.",
}
TITLES = {
    "pareto": "Pareto front: accuracy against latency",
    "memory": "Accuracy against peak memory",
    "size": "Accuracy against size",
    "parallel": "Parameters against objectives",
    "importance": "Parameter importances",
    "hypervolume": "Hypervolume over trials",
    "savings": "Where the savings came from",
    "kernels": "Integer kernels",
    "sensitivity": "Layer sensitivity",
}
MISSING = {
    "importance": "not enough completed trials with varying parameters",
    "kernels": "no trial recorded kernel counts (no trial was quantized)",
    "sensitivity": "the study recorded no per-layer sensitivity",
}

OPTIONAL = {"sensitivity"}

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;
max-width:1280px;color:#222;padding:0 16px}
h1{margin-bottom:4px}h2{margin-top:36px;border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555}.cap{color:#555;max-width:900px}.note{color:#8a6d3b}
table{border-collapse:collapse;margin:8px 0;font-size:14px}
th,td{border-bottom:1px solid #e5e5e5;padding:4px 10px;text-align:right}
th{background:#f5f5f5}td.l,th.l{text-align:left}tr.base td{color:#666;font-style:italic}
nav a{margin-right:14px}code{background:#f3f3f3;padding:1px 4px;border-radius:3px}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _f(x: Any, spec: str, suffix: str = "") -> str:
    return f"{x:{spec}}{suffix}" if x is not None and pd.notna(x) else "-"


def page(data: ReportData, figs: dict[str, go.Figure | None]) -> str:
    """The report as one HTML string that works offline."""
    # Sections only some studies have are left out rather than shown empty.
    figs = {k: f for k, f in figs.items() if f is not None or k not in OPTIONAL}
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(data.study_name)}"
        f" report</title><style>{STYLE}</style></head><body>"
    ]
    parts.append(f"<h1>{_e(data.study_name)}</h1>{_header(data)}")
    links = [f"<a href='#{k}'>{TITLES[k]}</a>" for k in figs] + ["<a href='#failed'>Failed</a>"]
    parts.append(f"<nav>{''.join(links)}</nav>")
    parts.append("<h2>Pareto trials</h2>" + _picks(data) + _front_table(data))
    plotly_js: bool | str = True
    for key, fig in figs.items():
        parts.append(f"<h2 id='{key}'>{TITLES[key]}</h2><p class='cap'>{CAPTIONS[key]}</p>")
        if key == "importance" and fig is not None and data.importance_note:
            parts.append(f"<p class='note'>Note: {_e(data.importance_note)}.</p>")
        if fig is None:
            why = data.importance_note if key == "importance" and data.importance_note else None
            parts.append(
                f"<p class='note'>Not shown: {_e(why or MISSING.get(key, 'no data'))}.</p>"
            )
            continue
        parts.append(
            fig.to_html(
                full_html=False,
                include_plotlyjs=plotly_js,
                config={"displaylogo": False, "responsive": True},
            )
        )
        plotly_js = False  # plotly.js is embedded once, in the first figure
    parts.append(_failed(data) + _footer(data) + "</body></html>")
    return "\n".join(parts)


def _header(data: ReportData) -> str:
    s, b, df = data.settings, data.baseline, data.trials
    meas = b.get("measurement", {})
    counts = df.state.value_counts().to_dict() if not df.empty else {}
    states = ", ".join(f"{n} {k.lower()}" for k, n in counts.items()) or "no trials yet"
    setting = ", ".join(f"{k} <code>{_e(v)}</code>" for k, v in s.items())
    lines = [f"<p class='meta'>{setting}<br>{len(df)} trials: {states}"]
    if meas:
        lines.append(
            f"<br>measured on {_e(meas.get('device', '?'))} with ONNX Runtime "
            f"{_e(meas.get('onnxruntime', '?'))} ({_e(', '.join(meas.get('providers', [])))})"
        )
    if b:
        lines.append(
            f"<br>baseline: accuracy {_f(b.get('accuracy'), '.4f')}, p50 "
            f"{_f(b.get('latency_p50_ms'), '.3f')} ms, peak memory "
            f"{_f(b.get('peak_memory_mb'), '.1f')} MB, size {_f(b.get('size_mb'), '.2f')} MB"
        )
    if data.budgets:
        lines.append("<br>budgets: " + ", ".join(_budget(k, v) for k, v in data.budgets.items()))
    return "".join(lines) + "</p>"


def _budget(key: str, value: float) -> str:
    what, unit = key.removesuffix("_ms").removesuffix("_mb").split("_", 1)[0], key[-2:]
    return f"{what} {value:g} {'ms' if unit == 'ms' else 'MB'}"


def _picks(data: ReportData) -> str:
    if not data.picks:
        return (
            "<p class='cap'>No pick rules given; try <code>--pick knee --pick "
            "fastest-within:1% --pick accurate-within:5ms</code>.</p>"
        )
    items = "".join(
        f"<li><code>{_e(p.rule)}</code>: "
        + (f"<b>trial {p.trial}</b>" if p.trial is not None else "<b>no trial</b>")
        + f" ({_e(p.reason)})</li>"
        for p in data.picks
    )
    return f"<ul>{items}</ul>"


def _front_table(data: ReportData) -> str:
    head = (
        "<tr><th>trial</th><th>accuracy</th><th>vs baseline</th><th>p50 ms</th>"
        "<th>speedup</th><th>peak MB</th><th>size MB</th><th class='l'>precision</th>"
        "<th class='l'>picked by</th></tr>"
    )
    rows = []
    b = data.baseline
    if b:
        rows.append(
            f"<tr class='base'><td>baseline</td><td>{_f(b.get('accuracy'), '.4f')}</td><td></td>"
            f"<td>{_f(b.get('latency_p50_ms'), '.3f')}</td><td>1.00x</td>"
            f"<td>{_f(b.get('peak_memory_mb'), '.1f')}</td><td>{_f(b.get('size_mb'), '.2f')}"
            f"</td><td class='l'>{_e(precision_summary(b))}</td><td></td></tr>"
        )
    for _, r in data.pareto.iterrows():
        rows.append(
            f"<tr><td>{r.trial}</td><td>{_f(r.accuracy, '.4f')}</td>"
            f"<td>{_f(r.accuracy_change, '+.2%')}</td><td>{_f(r.latency_p50_ms, '.3f')}</td>"
            f"<td>{_f(r.speedup, '.2f', 'x')}</td><td>{_f(r.peak_memory_mb, '.1f')}</td>"
            f"<td>{_f(r.size_mb, '.2f')}</td><td class='l'>{_e(r.precision)}</td>"
            f"<td class='l'>{_e(', '.join(data.picked_by(int(r.trial))))}</td></tr>"
        )
    if data.pareto.empty:
        rows.append("<tr><td class='l' colspan='9'>no completed trials yet</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _failed(data: ReportData) -> str:
    df = data.trials
    bad = df[df.state != "COMPLETE"] if not df.empty else df
    out = "<h2 id='failed'>Trials that did not complete</h2>"
    if bad.empty:
        return out + "<p class='cap'>None: every trial completed.</p>"
    rows = "".join(
        f"<tr><td>{r.trial}</td><td class='l'>{_e(r.state.lower())}</td>"
        f"<td class='l'>{_e(r.fail_reason or '-')}</td></tr>"
        for _, r in bad.iterrows()
    )
    return (
        out + "<table><tr><th>trial</th><th class='l'>state</th><th class='l'>reason</th>"
        f"</tr>{rows}</table>"
    )


def _footer(data: ReportData) -> str:
    return (
        "<h2>Files and tools</h2><p class='cap'>All trials: <code>trials.csv</code>; the front: "
        "<code>pareto.csv</code>. Export a trial: <code>python -m search export --study "
        f"{_e(data.study_name)} --pick knee --out exported/</code>. Browse the study live: "
        f"<code>optuna-dashboard sqlite:///results/{_e(data.study_name)}/study.db</code>.</p>"
    )
