"""One self-contained HTML page from the report data and its figures (plotly.js inlined once).

Titles, captions and what a missing figure says come from the one figure registry,
:data:`search.report.plots.FIGURES`; the tables come from :mod:`search.report.collect`.
"""

from __future__ import annotations

import html

import pandas as pd
import plotly.graph_objects as go

from search.core.formatting import fmt
from search.record import PAIRED
from search.report.collect import TEXT_COLUMNS, ReportData, front_table
from search.report.notes import redo_of
from search.report.plots import FIGURES

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


def _e(x: object) -> str:
    return html.escape(str(x))


def page(data: ReportData, figs: dict[str, go.Figure | None]) -> str:
    """The report as one HTML string that works offline.

    Args:
        data: The collected study.
        figs: :func:`search.report.plots.figures` of ``data``: key -> figure or ``None``.
    """
    # Sections only some studies have are left out rather than shown empty.
    shown = [f for f in FIGURES if figs.get(f.key) is not None or not f.optional]
    parts = [
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(data.study_name)}"
        f" report</title><style>{STYLE}</style></head><body>"
    ]
    parts.append(f"<h1>{_e(data.study_name)}</h1>{_header(data)}")
    links = [f"<a href='#{f.key}'>{_e(f.words(data)[0])}</a>" for f in shown]
    parts.append(f"<nav>{''.join(links)}<a href='#failed'>Failed</a></nav>")
    parts.append("<h2>Pareto trials</h2>" + _picks(data) + _front_table(data))
    parts.append(_batch_fronts(data))
    parts.append(_quantization(data))
    plotly_js: bool | str = True
    for f in shown:
        title, caption = f.words(data)
        parts.append(f"<h2 id='{f.key}'>{_e(title)}</h2><p class='cap'>{_e(caption)}</p>")
        fig, note = figs.get(f.key), f.note(data)
        if fig is None:
            parts.append(f"<p class='note'>Not shown: {_e(note or f.missing)}.</p>")
            continue
        if note:
            parts.append(f"<p class='note'>Note: {_e(note)}.</p>")
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
    meas = b.measurement if b is not None else {}
    counts = df.state.value_counts().to_dict() if not df.empty else {}
    states = ", ".join(f"{n} {k.lower()}" for k, n in counts.items()) or "no trials yet"
    setting = ", ".join(f"{k} <code>{_e(v)}</code>" for k, v in s.items())
    lines = [f"<p class='meta'>{setting}<br>{len(df)} trials: {states}"]
    if meas:
        lines.append(
            f"<br>measured on {_e(meas.get('device', '?'))} with ONNX Runtime "
            f"{_e(meas.get('onnxruntime', '?'))} ({_e(', '.join(meas.get('providers', [])))})"
        )
    if b is not None:
        lines.append(
            f"<br>baseline: {_e(data.metric)} {fmt(b.accuracy, '.4f')}, p50 "
            f"{fmt(b.latency_paired_ms, '.3f')} ms, peak memory "
            f"{fmt(b.peak_memory_mb, '.1f')} MB, size {fmt(b.size_mb, '.2f')} MB"
        )
    if data.budgets:
        lines.append("<br>budgets: " + ", ".join(_budget(k, v) for k, v in data.budgets.items()))
    notes = "".join(f"<li>{_e(n[0].upper() + n[1:])}.</li>" for n in data.notes)
    return "".join(lines) + "</p>" + (f"<ul class='note'>{notes}</ul>" if notes else "")


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
        + f" ({_e(p.reason)})"
        + (f"<br><span class='cap'>{_e(p.detail)}.</span>" if p.detail else "")
        + "</li>"
        for p in data.picks
    )
    return f"<ul>{items}</ul>"


def _table(columns: list[str], rows: list[list[str]], *, dim_first: bool = False) -> str:
    """An HTML table of words; text columns left-aligned, the first row dimmed if asked."""
    align = ["<{0} class='l'>" if c in TEXT_COLUMNS else "<{0}>" for c in columns]

    def cells(tag: str, values: list[str]) -> str:
        pairs = zip(align, values, strict=True)
        return "".join(f"{a.format(tag)}{_e(v)}</{tag}>" for a, v in pairs)

    body = [
        ("<tr class='base'>" if dim_first and i == 0 else "<tr>") + cells("td", row) + "</tr>"
        for i, row in enumerate(rows)
    ]
    return f"<table><tr>{cells('th', columns)}</tr>{''.join(body)}</table>"


def _front_table(data: ReportData) -> str:
    columns, rows = front_table(data)
    table = _table(columns, rows, dim_first=data.baseline is not None)
    if data.pareto.empty:
        table += "<p class='cap'>No completed trials yet.</p>"
    return table


def _batch_fronts(data: ReportData) -> str:
    """The front at each further batch size the profile lists (search.report.batches)."""
    out = []
    for batch, front in data.batch_fronts.items():
        rows = [
            [
                str(r.trial),
                fmt(r.accuracy, ".4f"),
                fmt(r.p50, ".3f"),
                fmt(r.speedup, ".2f", "x"),
                "busy" if r.busy else "",
            ]  # fmt: skip
            for r in front.itertuples()
        ]
        out.append(
            f"<h2 id='batch-{batch}'>Pareto trials at batch {batch}</h2><p class='cap'>Only the "
            "first batch size is an objective; this is the front the trials' measurements at "
            f"batch {batch} make (p50 as measured in each trial's window, not paired; speedup "
            f"over the baseline at batch {batch}).</p>"
            + _table(["trial", data.metric, "p50 ms", "speedup", "notes"], rows)
        )
    return "".join(out)


def _quantization(data: ReportData) -> str:
    """Float baseline, uniform int8 and the best mixed-precision trial, when int8 was measured."""
    q = data.quantization
    if q.empty or "uniform int8" not in set(q.model):
        return ""
    rows = [
        [
            str(r.model),
            fmt(r.accuracy, ".4f"),
            fmt(r[PAIRED], ".3f"),
            fmt(r.size_mb, ".2f"),
            fmt(r.integer_layers, ".0f"),
            fmt(r.trial, ".0f", missing=""),
        ]
        for _, r in q.iterrows()
    ]
    columns = ["model", data.metric, "p50 ms", "size MB", "int kernels", "trial"]
    title, caption = quantization_words(set(q.model), data.metric)
    return f"<h2 id='quantization'>{_e(title)}</h2><p class='cap'>{_e(caption)}</p>" + _table(
        columns, rows
    )


def quantization_words(models: set[str], metric: str) -> tuple[str, str]:
    """The quantization table's title and caption, naming only the rows it has."""
    what = {
        "float baseline": ("float", "the uncompressed model"),
        "uniform int8": ("uniform int8", "the same model with every group at int8"),
        "best mixed precision": (
            "mixed precision",
            f"the mixed-precision trial (groups at more than one precision) with the highest "
            f"{metric}",
        ),
    }
    shown = [words for model, words in what.items() if model in models]
    title = _and([t for t, _ in shown])
    caption = _and([c for _, c in shown]) + ", measured like every trial."
    if "best mixed precision" not in models:
        caption += " No trial ran its groups at more than one precision."
    return title[:1].upper() + title[1:], caption[:1].upper() + caption[1:]


def _and(words: list[str]) -> str:
    """``a, b and c``."""
    return ", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else "".join(words)


def _failed(data: ReportData) -> str:
    df = data.trials
    bad = df[df.state != "COMPLETE"] if not df.empty else df
    out = "<h2 id='failed'>Trials that did not complete</h2>"
    if bad.empty:
        return out + "<p class='cap'>None: every trial completed.</p>"
    redone = {n: int(r.trial) for _, r in df.iterrows() if (n := redo_of(r)) is not None}
    rows = "".join(
        f"<tr><td>{r.trial}</td><td class='l'>{_e(r.state.lower())}</td>"
        f"<td class='l'>{_e(_failed_reason(r, redone))}</td></tr>"
        for _, r in bad.iterrows()
    )
    return (
        out + "<table><tr><th>trial</th><th class='l'>state</th><th class='l'>reason</th>"
        f"</tr>{rows}</table>"
    )


def _failed_reason(r: pd.Series, redone: dict[int, int]) -> str:
    """The reason a trial did not complete, with the trial it redoes or that redid it."""
    words = [str(r.fail_reason or "-")]
    if redo_of(r) is not None:
        words.append(f"redo of trial {redo_of(r)}")
    if int(r.trial) in redone:
        words.append(f"redone as trial {redone[int(r.trial)]}")
    return "; ".join(words)


def _footer(data: ReportData) -> str:
    return (
        "<h2>Files and tools</h2><p class='cap'>All trials: <code>trials.csv</code>; the front: "
        "<code>pareto.csv</code>. Export a trial: <code>python -m search export --study "
        f"{_e(data.study_name)} --pick knee --out exported/</code>. Browse the study live: "
        f"<code>optuna-dashboard sqlite:///results/{_e(data.study_name)}/study.db</code>.</p>"
    )
