"""The metric against latency, memory or size: one point a trial, with the Pareto front in
bold, the baseline, the budgets, the pick rules' floors and the picked trials labelled.
"""

from __future__ import annotations

import json

import pandas as pd
import plotly.graph_objects as go

from search.record import PAIRED
from search.report.axes import NON_NEGATIVE, finite, metric_bounds, padded_range
from search.report.collect import ReportData
from search.report.notes import redo_of
from search.report.picking import parse_rule

FRONT = "#1f77b4"
DOMINATED = "#7f7f7f"
OVER_BUDGET = "#ff7f0e"
FAILED = "#d62728"
PICK = "#2ca02c"


def _hover(r: pd.Series, metric: str) -> str:
    lines = [f"<b>trial {r.trial}</b> ({r.state.lower()})"]
    if pd.notna(r.accuracy):
        change = f" ({r.accuracy_change:+.2%})" if pd.notna(r.accuracy_change) else ""
        lines.append(f"{metric} {r.accuracy:.4f}{change}")
    if pd.notna(r[PAIRED]):
        speed = f" ({r.speedup:.2f}x)" if pd.notna(r.speedup) else ""
        lines.append(f"p50 {r[PAIRED]:.3f} ms{speed}, p90 {r.latency_p90_ms:.3f} ms")
    if pd.notna(r.peak_memory_mb):
        lines.append(f"memory {r.peak_memory_mb:.1f} MB, size {r.size_mb:.3f} MB")
    lines.append(f"precision: {r.precision}")
    if redo_of(r) is not None:
        lines.append(f"redo of trial {redo_of(r)} (interrupted)")
    if r.fail_reason:
        lines.append(f"reason: {r.fail_reason[:90]}")
    lines.append("<i>configuration (settings that acted)</i>")
    for key, value in _flat(json.loads(r.config)).items():
        shown = f"{value:.4g}" if isinstance(value, float) else json.dumps(value)
        lines.append(f"  {key}: {shown[:80]}")
    return "<br>".join(lines)


def _flat(config: dict) -> dict:
    # A per-step config ({"prune": {"ratio": ...}, ...}) reads as prune.ratio, one line a value.
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            out[key] = value
    return out


def _groups(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame, dict]]:
    done = df.state == "COMPLETE"
    feasible = df.feasible.astype(bool)
    front = df.pareto.astype(bool)
    faded = {"opacity": 0.4}
    return [
        (
            "dominated",
            df[done & feasible & ~front],
            {"marker": {"color": DOMINATED, "size": 8}, **faded},
        ),
        (
            "over budget",
            df[done & ~feasible],
            {"marker": {"color": OVER_BUDGET, "size": 8, "symbol": "diamond"}, **faded},
        ),
        (
            "failed / stopped",
            df[~done],
            {"marker": {"color": FAILED, "size": 9, "symbol": "x"}, **faded},
        ),
        (
            "Pareto front",
            df[front].sort_values(PAIRED),
            {"marker": {"color": FRONT, "size": 11, "line": {"width": 1, "color": "white"}}},
        ),
    ]


def objective_figure(data: ReportData, *, x: str, x_title: str) -> go.Figure | None:
    """The metric against ``x``: the metric/latency Pareto trials in bold, the rest faded, the
    baseline as a star, budgets and metric floors as dashed lines, picks labelled."""
    df, metric = data.trials, data.metric
    if df.empty or df[x].isna().all():
        return None
    fig = go.Figure()
    for name, part, style in _groups(df.dropna(subset=["accuracy", x])):
        if part.empty:
            continue
        lines = name == "Pareto front" and x == PAIRED
        fig.add_scatter(
            x=part[x],
            y=part.accuracy,
            name=f"{name} ({len(part)})",
            mode="markers+lines" if lines else "markers",
            line={"color": FRONT, "shape": "hv"} if lines else None,
            text=[_hover(r, metric) for _, r in part.iterrows()],
            hovertemplate="%{text}<extra></extra>",
            cliponaxis=False,  # a point on the axis range's end (accuracy 1.0) is drawn whole
            **style,
        )
    base = data.baseline
    base_x = getattr(base, x, None) if base is not None else None
    if base is not None and base_x is not None:
        fig.add_scatter(
            x=[base_x],
            y=[base.accuracy],
            mode="markers",
            name="baseline (uncompressed)",
            marker={"symbol": "star", "size": 16, "color": "black"},
            hovertemplate=f"baseline<br>{metric} %{{y:.4f}}<br>{x_title} %{{x:.3f}}"
            "<extra></extra>",
        )
    _budget_line(fig, data, x)
    if x == PAIRED:
        _metric_floors(fig, data)
    _ranges(fig, data, x)
    _pick_labels(fig, data, x)
    missing = int((df.accuracy.isna() | df[x].isna()).sum())
    note = f"<br><sup>{missing} trial(s) without measurements are listed below</sup>"
    fig.update_layout(
        title=f"{metric} vs {x_title}{note if missing else ''}",
        xaxis_title=x_title,
        yaxis_title=f"{metric} (ONNX Runtime, {_objective_split(data)} split)",
        template="plotly_white",
        legend={"orientation": "h", "y": -0.2},
        height=520,
    )
    return fig


def _ranges(fig: go.Figure, data: ReportData, x: str) -> None:
    """Both axes on what is drawn (points, baseline, budget and floor lines) with a little
    margin, never past the metric's bounds ([0, 1] for accuracy-like metrics) or below 0 ms,
    MB: plotly's autorange stretches a single value to twice it."""
    df, base = data.trials, data.baseline
    ys = list(df.accuracy) + [base.accuracy if base is not None else None]
    ys += [line.y0 for line in fig.layout.shapes if line.y0 == line.y1]
    xs = list(df[x]) + [getattr(base, x, None) if base is not None else None]
    xs += [line.x0 for line in fig.layout.shapes if line.x0 == line.x1]
    y_range = padded_range(ys, bounds=metric_bounds(ys[: len(df) + 1]))
    x_range = padded_range(xs, bounds=NON_NEGATIVE)
    if y_range is not None:
        fig.update_yaxes(range=list(y_range))
    if x_range is not None:
        fig.update_xaxes(range=list(x_range))


def faded_words(data: ReportData) -> str:
    """What the faded points of the scatter plots are, naming only the kinds present."""
    df = data.trials
    if df.empty:
        return "there are no other points"
    df = df.dropna(subset=["accuracy", PAIRED])  # what the figures draw
    groups = [(name, len(part)) for name, part, _ in _groups(df) if name != "Pareto front"]
    words = {
        "dominated": "dominated",
        "over budget": "over a budget (orange diamonds)",
        "failed / stopped": "failed or stopped before measuring (red crosses)",
    }
    shown = [words[name] for name, n in groups if n]
    if not shown:
        return "every completed trial is on the front"
    return "faded points are " + (
        ", ".join(shown[:-1]) + " or " + shown[-1] if len(shown) > 1 else shown[0]
    )


def _objective_split(data: ReportData) -> str:
    """Where the objective was scored: studies scored before validation-split selection
    (no ``test_accuracy`` beside the baseline's) selected on the test split."""
    return "test" if data.baseline is not None and data.baseline.scored_on_test else "validation"


def _budget_line(fig: go.Figure, data: ReportData, x: str) -> None:
    budget = {PAIRED: "latency_budget_ms", "peak_memory_mb": "memory_budget_mb"}.get(x)
    if budget in data.budgets:
        fig.add_vline(
            x=data.budgets[budget],
            line_dash="dash",
            line_color=OVER_BUDGET,
            annotation_text=f"{budget.split('_')[0]} budget {data.budgets[budget]:g} "
            f"{'ms' if budget.endswith('ms') else 'MB'}",
            annotation_position="top left",
        )


def _pick_labels(fig: go.Figure, data: ReportData, x: str) -> None:
    # One label a picked trial, naming every rule that chose it, so labels do not overlap.
    # A label points away from the nearer edges, so one at the top or right stays inside.
    df = data.trials
    x_range, y_range = fig.layout.xaxis.range, fig.layout.yaxis.range
    for trial in dict.fromkeys(p.trial for p in data.picks if p.trial is not None):
        row = df[df.trial == trial].iloc[0]
        fig.add_annotation(
            x=row[x],
            y=row.accuracy,
            text=f"trial {trial}: {', '.join(data.picked_by(trial))}",
            showarrow=True,
            arrowcolor=PICK,
            font={"color": PICK},
            ax=-40 if _upper_half(row[x], x_range) else 40,
            ay=30 if _upper_half(row.accuracy, y_range) else -30,
            bgcolor="rgba(255,255,255,0.8)",
        )


def _upper_half(value: object, span: tuple[float, float] | None) -> bool:
    if span is None or not finite([value]):
        return False
    return finite([value])[0] > (span[0] + span[1]) / 2


def _metric_floors(fig: go.Figure, data: ReportData) -> None:
    if data.baseline is None:
        return
    base = data.baseline.accuracy
    for p in data.picks:
        if p.rule.lower().startswith("fastest-within"):
            fig.add_hline(
                y=base - (parse_rule(p.rule).bound or 0.0),
                line_dash="dot",
                line_color=PICK,
                annotation_text=f"{p.rule} floor",
                annotation_position="bottom right",
            )
