"""Plotly figures of a :class:`search.report.ReportData`; they only draw, they compute nothing.

Each function takes the collected data and returns a figure (or ``None`` when there is nothing
to draw); :func:`figures` returns them all in page order.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from search.report import ReportData

FRONT = "#1f77b4"
DOMINATED = "#7f7f7f"
OVER_BUDGET = "#ff7f0e"
FAILED = "#d62728"
PICK = "#2ca02c"
# The figures worth a PNG copy: the ones a user pastes into a slide or a pull request.
MAIN = ("pareto", "memory", "size", "hypervolume")


def figures(data: ReportData) -> dict[str, go.Figure | None]:
    """All figures of the report, in page order; ``None`` where a figure has no data."""
    return {
        "pareto": objective_figure(data, x="latency_p50_ms", x_title="latency p50 (ms)"),
        "memory": objective_figure(data, x="peak_memory_mb", x_title="peak inference memory (MB)"),
        "size": objective_figure(data, x="size_mb", x_title="model file size (MB)"),
        "parallel": parallel_figure(data),
        "importance": importance_figure(data),
        "hypervolume": hypervolume_figure(data),
        "savings": savings_figure(data),
        "kernels": kernels_figure(data),
        "sensitivity": sensitivity_figure(data),
    }


def _hover(r: pd.Series, metric: str) -> str:
    lines = [f"<b>trial {r.trial}</b> ({r.state.lower()})"]
    if pd.notna(r.accuracy):
        change = f" ({r.accuracy_change:+.2%})" if pd.notna(r.accuracy_change) else ""
        lines.append(f"{metric} {r.accuracy:.4f}{change}")
    if pd.notna(r.latency_p50_ms):
        speed = f" ({r.speedup:.2f}x)" if pd.notna(r.speedup) else ""
        lines.append(f"p50 {r.latency_p50_ms:.3f} ms{speed}, p90 {r.latency_p90_ms:.3f} ms")
    if pd.notna(r.peak_memory_mb):
        lines.append(f"memory {r.peak_memory_mb:.1f} MB, size {r.size_mb:.3f} MB")
    lines.append(f"precision: {r.precision}")
    if r.fail_reason:
        lines.append(f"reason: {r.fail_reason[:90]}")
    lines.append("<i>configuration</i>")
    for key, value in json.loads(r.config).items():
        shown = f"{value:.4g}" if isinstance(value, float) else json.dumps(value)
        lines.append(f"  {key}: {shown[:80]}")
    return "<br>".join(lines)


def _groups(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame, dict[str, Any]]]:
    done = df.state == "COMPLETE"
    feasible = df.feasible.astype(bool)
    front = df.pareto.astype(bool)
    return [
        (
            "dominated",
            df[done & feasible & ~front],
            {"marker": {"color": DOMINATED, "size": 8}, "opacity": 0.4},
        ),
        (
            "over budget",
            df[done & ~feasible],
            {"marker": {"color": OVER_BUDGET, "size": 8, "symbol": "diamond"}, "opacity": 0.4},
        ),
        (
            "failed / stopped",
            df[~done],
            {"marker": {"color": FAILED, "size": 9, "symbol": "x"}, "opacity": 0.4},
        ),
        (
            "Pareto front",
            df[front].sort_values("latency_p50_ms"),
            {"marker": {"color": FRONT, "size": 11, "line": {"width": 1, "color": "white"}}},
        ),
    ]


def objective_figure(data: ReportData, *, x: str, x_title: str) -> go.Figure | None:
    """Accuracy against ``x``: the accuracy/latency Pareto trials in bold, the rest faded,
    the baseline as a star, budgets and accuracy floors as dashed lines, picks labelled."""
    df = data.trials
    metric = data.settings.get("metric", "accuracy")
    if df.empty or df[x].isna().all():
        return None
    fig = go.Figure()
    for name, part, style in _groups(df.dropna(subset=["accuracy", x])):
        if part.empty:
            continue
        lines = name == "Pareto front" and x == "latency_p50_ms"
        fig.add_scatter(
            x=part[x],
            y=part.accuracy,
            name=f"{name} ({len(part)})",
            mode="markers+lines" if lines else "markers",
            line={"color": FRONT, "shape": "hv"} if lines else None,
            text=[_hover(r, metric) for _, r in part.iterrows()],
            hovertemplate="%{text}<extra></extra>",
            **style,
        )
    base = data.baseline
    if base.get(x) is not None and base.get("accuracy") is not None:
        fig.add_scatter(
            x=[base[x]],
            y=[base["accuracy"]],
            mode="markers",
            name="baseline (uncompressed)",
            marker={"symbol": "star", "size": 16, "color": "black"},
            hovertemplate=f"baseline<br>{metric} %{{y:.4f}}<br>{x_title} %{{x:.3f}}"
            "<extra></extra>",
        )
    budget = {"latency_p50_ms": "latency_budget_ms", "peak_memory_mb": "memory_budget_mb"}.get(x)
    if budget in data.budgets:
        fig.add_vline(
            x=data.budgets[budget],
            line_dash="dash",
            line_color=OVER_BUDGET,
            annotation_text=f"{budget.split('_')[0]} budget {data.budgets[budget]:g} "
            f"{'ms' if budget.endswith('ms') else 'MB'}",
            annotation_position="top left",
        )
    # One label a picked trial, naming every rule that chose it, so labels do not overlap.
    for trial in dict.fromkeys(p.trial for p in data.picks if p.trial is not None):
        row = df[df.trial == trial].iloc[0]
        fig.add_annotation(
            x=row[x],
            y=row.accuracy,
            text=f"trial {trial}: {', '.join(data.picked_by(trial))}",
            showarrow=True,
            arrowcolor=PICK,
            font={"color": PICK},
            ax=40,
            ay=-30,
            bgcolor="rgba(255,255,255,0.8)",
        )
    if x == "latency_p50_ms":
        _accuracy_floors(fig, data)
    missing = int((df.accuracy.isna() | df[x].isna()).sum())
    note = (
        f"<br><sup>{missing} trial(s) without measurements are listed below</sup>"
        if missing
        else ""
    )
    fig.update_layout(
        title=f"{metric} vs {x_title}{note}",
        xaxis_title=x_title,
        yaxis_title=f"{metric} (ONNX Runtime, test split)",
        template="plotly_white",
        legend={"orientation": "h", "y": -0.2},
        height=520,
    )
    return fig


def _accuracy_floors(fig: go.Figure, data: ReportData) -> None:
    base = data.baseline.get("accuracy")
    if base is None:
        return
    for p in data.picks:
        if p.rule.lower().startswith("fastest-within"):
            from search.picking import parse_rule

            floor = base - (parse_rule(p.rule).bound or 0.0)
            fig.add_hline(
                y=floor,
                line_dash="dot",
                line_color=PICK,
                annotation_text=f"{p.rule} floor",
                annotation_position="bottom right",
            )


def parallel_figure(data: ReportData) -> go.Figure | None:
    """Parallel coordinates: each searched parameter, then the two objectives."""
    df = data.trials
    if df.empty:
        return None
    done = df[(df.state == "COMPLETE") & df.accuracy.notna()]
    params = [c for c in df.columns if c.startswith("param_")]
    if done.empty or not params:
        return None
    dims = []
    for col in params:
        values = done[col]
        if pd.api.types.is_numeric_dtype(values):
            dims.append({"label": col.removeprefix("param_"), "values": values})
        else:
            cats = sorted(values.astype(str).unique())
            codes = values.astype(str).map({c: i for i, c in enumerate(cats)})
            dims.append(
                {
                    "label": col.removeprefix("param_"),
                    "values": codes,
                    "tickvals": list(range(len(cats))),
                    "ticktext": cats,
                }
            )
    metric = data.settings.get("metric", "accuracy")
    dims.append({"label": metric, "values": done.accuracy})
    dims.append({"label": "p50 ms", "values": done.latency_p50_ms})
    fig = go.Figure(
        go.Parcoords(
            dimensions=dims,
            line={"color": done.pareto.astype(int), "colorscale": [[0, "#c7c7c7"], [1, FRONT]]},
        )
    )
    fig.update_layout(
        title="parameters against objectives (blue: Pareto front, grey: other completed trials)",
        template="plotly_white",
        height=460,
    )
    return fig


def importance_figure(data: ReportData) -> go.Figure | None:
    """Optuna's parameter importances (fANOVA), one bar group per objective."""
    if not data.importances:
        return None
    fig = go.Figure()
    for objective, imp in data.importances.items():
        names = sorted(imp, key=imp.get)
        fig.add_bar(y=names, x=[imp[n] for n in names], name=objective, orientation="h")
    fig.update_layout(
        title="parameter importances (Optuna fANOVA, share of each objective's variance)",
        xaxis_title="importance",
        barmode="group",
        template="plotly_white",
        height=420,
    )
    return fig


def hypervolume_figure(data: ReportData) -> go.Figure | None:
    """Hypervolume of the front after each completed, within-budget trial."""
    hv = data.hypervolume
    if hv.empty:
        return None
    fig = go.Figure(
        go.Scatter(
            x=hv.trial,
            y=hv.hypervolume,
            mode="lines+markers",
            line={"shape": "hv", "color": FRONT},
        )
    )
    if hv.trial.max() - hv.trial.min() <= 20:
        fig.update_xaxes(dtick=1)  # trial numbers are integers; no 0.5 ticks on short studies
    acc_ref, lat_ref = data.hv_reference
    fig.update_layout(
        title=f"hypervolume over trials (reference: accuracy {acc_ref:g}, "
        f"latency {lat_ref:.3f} ms)",
        xaxis_title="trial",
        yaxis_title="hypervolume (accuracy x ms)",
        template="plotly_white",
        height=420,
    )
    return fig


def savings_figure(data: ReportData) -> go.Figure | None:
    """Parameters and MACs after each compression step, for the Pareto trials."""
    front = data.pareto
    steps = [c.removeprefix("params_") for c in data.trials.columns if c.startswith("params_")]
    if front.empty or not steps:
        return None
    fig = make_subplots(rows=1, cols=2, subplot_titles=("parameters", "MACs"))
    labels = [f"trial {t}" for t in front.trial]
    for i, step in enumerate(steps):
        color = f"hsl({(210 + 70 * i) % 360},60%,{45 + 8 * i}%)"
        for col, kind in ((1, "params"), (2, "macs")):
            name = "uncompressed" if step == "base" else f"after {step}"
            fig.add_bar(
                x=labels,
                y=front[f"{kind}_{step}"],
                name=name,
                legendgroup=step,
                showlegend=col == 1,
                marker_color=color,
                row=1,
                col=col,
            )
    fig.update_layout(
        title="where the savings came from: size after each step (Pareto trials)",
        barmode="group",
        template="plotly_white",
        height=420,
    )
    return fig


def kernels_figure(data: ReportData) -> go.Figure | None:
    """Nodes that ran as integer kernels against float ones, when trials recorded them."""
    front = data.pareto
    if front.empty or front.integer_layers.isna().all():
        return None
    labels = [f"trial {t}" for t in front.trial]
    fig = go.Figure()
    fig.add_bar(x=labels, y=front.integer_layers, name="integer kernels", marker_color=FRONT)
    fig.add_bar(
        x=labels,
        y=front.float_layers_after_dequantize,
        name="float kernels after DequantizeLinear",
        marker_color=DOMINATED,
    )
    if "fp16_layers" in front and front.fp16_layers.fillna(0).any():
        fig.add_bar(x=labels, y=front.fp16_layers, name="fp16 kernels", marker_color=PICK)
    fig.update_layout(
        title="layers that ran as integer, fp16 or dequantized float kernels (Pareto trials)",
        barmode="stack",
        template="plotly_white",
        height=400,
    )
    return fig


def sensitivity_figure(data: ReportData) -> go.Figure | None:
    """The study's ``sensitivity`` attribute, when it is numbers by layer (or by layer and
    setting): one bar a layer, one group a setting."""
    sens = data.sensitivity
    if not isinstance(sens, dict) or not sens:
        return None
    series: dict[str, dict[str, float]] = {}
    for layer, value in sens.items():
        items = value.items() if isinstance(value, dict) else [("value", value)]
        for setting, v in items:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                series.setdefault(str(setting), {})[str(layer)] = float(v)
    if not series:
        return None
    fig = go.Figure()
    for setting, values in series.items():
        fig.add_bar(x=list(values), y=list(values.values()), name=setting)
    fig.update_layout(
        title="layer sensitivity (as measured by the study)",
        barmode="group",
        template="plotly_white",
        height=420,
        showlegend=len(series) > 1,
    )
    return fig


def write_pngs(figs: dict[str, go.Figure | None], out_dir: Path) -> tuple[list[Path], str | None]:
    """PNG copies of the main figures via kaleido; returns the files and, if any, why not."""
    main = {k: f for k, f in figs.items() if k in MAIN and f is not None}
    try:
        import kaleido  # noqa: F401 - only checks that it is installed
        import plotly.io as pio
    except ImportError:
        return [], (
            "PNG copies skipped: kaleido is not installed "
            "(pip install kaleido; it also needs Chrome or Chromium on PATH)"
        )
    paths = [Path(out_dir) / f"{name}.png" for name in main]
    try:
        pio.write_images(list(main.values()), paths, width=1100, height=600)
    except Exception as e:  # noqa: BLE001 - any rendering failure only costs the PNG copies
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return [], f"PNG copies skipped: kaleido could not render ({first[:160]})"
    return paths, None
