"""Plotly figures of a :class:`~search.report.collect.ReportData` and their one registry.

Each draw function takes the collected data and returns a figure, or ``None`` when there is
nothing to draw; it computes nothing. :data:`FIGURES` lists every figure in page order with its
title, caption and what the page says when it is missing, so the page, the PNG copies and the
tests read one list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from search.record import PAIRED
from search.report.axes import NON_NEGATIVE, OPEN, Bounds, metric_bounds, padded_range
from search.report.collect import ReportData
from search.report.scatter import DOMINATED, FRONT, PICK, faded_words, objective_figure

# Long parameter names (a group's precision or pruning scale, with the group's derived name)
# overlap as axis titles; these prefixes are shortened and the rest cut in the middle.
SHORT_PREFIXES = {"precision_": "prec ", "prune_scale_": "scale ", "lowrank_ratio_": "rank "}
LABEL_CHARS = 12


def short_label(name: str, chars: int = LABEL_CHARS) -> str:
    """A parameter's axis title that fits: a known prefix shortened (``precision_`` ->
    ``prec``), and a name after it longer than ``chars`` cut to its end, from a dot where one
    is near (``precision_features.3.block.2.fc1`` -> ``prec …block.2.fc1``)."""
    head = ""
    for prefix, short in SHORT_PREFIXES.items():
        if name.startswith(prefix):
            head, name = short, name[len(prefix) :]
            break
    else:
        chars += 4  # a name without a group (quantized_groups) has room for its prefix
    if len(name) <= chars:
        return head + name
    tail = name[-(chars - 1) :]
    cut = tail.find(".")
    if name[-chars] != "." and 0 <= cut < len(tail) - 4:  # start at a component when one is near
        tail = tail[cut + 1 :]
    return f"{head}…{tail}"


def axis_labels(names: list[str]) -> dict[str, str]:
    """Each name's :func:`short_label`, numbered where two would read the same."""
    out: dict[str, str] = {}
    seen: dict[str, int] = {}
    for name in names:
        label = short_label(name)
        seen[label] = seen.get(label, 0) + 1
        out[name] = label if seen[label] == 1 else f"{label} ({seen[label]})"
    return out


def parallel_params(data: ReportData) -> list[str]:
    """The parameters the parallel coordinates draw: those that acted in a completed trial."""
    df = data.trials
    if df.empty:
        return []
    done = df[(df.state == "COMPLETE") & df.accuracy.notna()]
    return [
        c.removeprefix("param_")
        for c in df.columns
        if c.startswith("param_") and done[c].notna().any()
    ]


def parallel_note(data: ReportData) -> str:
    """What the shortened axis titles stand for: the prefixes, and the full name of each title
    cut in the middle; '' when no title is shortened."""
    names = parallel_params(data)
    prefixes = [
        f"{short.strip()} = {prefix.removesuffix('_')} of a group"
        for prefix, short in SHORT_PREFIXES.items()
        if any(n.startswith(prefix) for n in names)
    ]
    labels = axis_labels(names)
    cut = [f"{labels[n]} = {n}" for n in names if "…" in labels[n] or "(" in labels[n]]
    if not prefixes and not cut:
        return ""
    return "axis titles shortened: " + "; ".join(prefixes + cut)


def parallel_figure(data: ReportData) -> go.Figure | None:
    """Parallel coordinates: each parameter that acted, then the two objectives; every axis
    ranged on its values with a little margin, within its bounds."""
    df = data.trials
    params = parallel_params(data)
    if df.empty or not params:
        return None
    done = df[(df.state == "COMPLETE") & df.accuracy.notna()]
    labels = axis_labels(params)
    dims = [_dimension(done[f"param_{name}"], labels[name]) for name in params]
    base = data.baseline
    metric = list(done.accuracy) + [base.accuracy if base is not None else None]
    dims.append(_numeric(done.accuracy, data.metric, metric_bounds(metric)))
    dims.append(_numeric(done[PAIRED], "p50 ms", NON_NEGATIVE))
    fig = go.Figure(
        go.Parcoords(
            dimensions=dims,
            line={"color": done.pareto.astype(int), "colorscale": [[0, "#c7c7c7"], [1, FRONT]]},
            labelangle=-25 if len(dims) > 8 else 0,
            labelside="top",
        )
    )
    fig.update_layout(
        title="parameters against objectives (blue: Pareto front, grey: other completed trials)",
        template="plotly_white",
        height=500,
        margin={"t": 150 if len(dims) > 8 else 110},
    )
    return fig


def _dimension(values: pd.Series, label: str) -> dict:
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        # Parameters are ratios, scales, epochs, rates: none below 0.
        return _numeric(values, label, NON_NEGATIVE if (values.dropna() >= 0).all() else OPEN)
    # A parameter that did not act in a trial (low-rank's kind with low-rank off) reads "-".
    words = values.map(lambda v: "-" if pd.isna(v) else str(v))
    cats = sorted(words.unique())
    codes = words.map({c: i for i, c in enumerate(cats)})
    return {
        "label": label,
        "values": codes,
        "tickvals": list(range(len(cats))),
        "ticktext": cats,
        "range": [-0.5, len(cats) - 0.5] if len(cats) == 1 else [0, len(cats) - 1],
    }


def _numeric(values: pd.Series, label: str, bounds: Bounds) -> dict:
    out = {"label": label, "values": values}
    found = padded_range(values, bounds=bounds)
    return out | ({"range": list(found)} if found is not None else {})


def importance_figure(data: ReportData) -> go.Figure | None:
    """Optuna's parameter importances (fANOVA), one bar group per objective."""
    if not data.importances:
        return None
    fig = go.Figure()
    for objective, imp in data.importances.items():
        names = sorted(imp, key=imp.__getitem__)
        fig.add_bar(
            y=names, x=[imp[n] for n in names], name=data.label(objective), orientation="h"
        )
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
    found = padded_range(hv.hypervolume, bounds=NON_NEGATIVE)
    if found is not None:  # plotly stretches a flat curve to -1..1: hypervolume is >= 0
        fig.update_yaxes(range=list(found))
    if hv.trial.max() - hv.trial.min() <= 20:
        fig.update_xaxes(dtick=1)  # trial numbers are integers; no 0.5 ticks on short studies
    metric_ref, lat_ref = data.hv_reference
    fig.update_layout(
        title=f"hypervolume over trials (reference: {data.metric} {metric_ref:g}, "
        f"latency {lat_ref:.3f} ms)",
        xaxis_title="trial",
        yaxis_title=f"hypervolume ({data.metric} x ms)",
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
            fig.add_bar(
                x=labels,
                y=front[f"{kind}_{step}"],
                name="uncompressed" if step == "base" else f"after {step}",
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
    """The sensitivity pass: the metric each group loses when it alone is quantized, one bar a
    group in the pass's order (most sensitive first)."""
    sens, metric = data.sensitivity, data.metric
    if sens.empty:
        return None
    precision = sens["precision"].iloc[0]
    fig = go.Figure(
        go.Bar(
            x=sens["group"],
            y=sens["drop"],
            marker_color=FRONT,
            text=[f"{d:+.4f}" for d in sens["drop"]],
            textposition="outside",
            customdata=sens[["accuracy", "layers"]].to_numpy(),
            hovertemplate=f"<b>%{{x}}</b> at {precision}, the rest float<br>{metric} "
            "%{customdata[0]:.4f} (drop %{y:+.4f})<br>%{customdata[1]} layer(s)<extra></extra>",
        )
    )
    reference = sens["float_accuracy"].iloc[0]
    ref = f"; float model {reference:.4f}" if pd.notna(reference) else ""
    fig.update_layout(
        title=f"{metric} drop with one group at {precision}, the rest float{ref}",
        xaxis_title="layer group (most sensitive first)",
        yaxis_title=f"{metric} drop (validation split)",
        template="plotly_white",
        height=420,
    )
    return fig


@dataclass(frozen=True)
class Figure:
    """One figure of the report: its anchor, its words on the page and how it is drawn.

    Attributes:
        key: Anchor on the page and name of the PNG copy.
        title, caption: Words on the page; ``{metric}`` stands for the task's metric and
            ``{faded}`` for what the faded points of the scatter plots are (the kinds present).
        draw: The figure of the data, or ``None`` when there is nothing to draw.
        missing: Why the figure is not shown, when it has no data.
        note: A remark about the data shown with the figure (or, when there is no figure,
            instead of ``missing``); ``""`` for none.
        optional: Left out of the page, rather than shown as missing, when it has no data.
        png: Worth a PNG copy: a figure a user pastes into a slide or a pull request.
    """

    key: str
    title: str
    caption: str
    draw: Callable[[ReportData], go.Figure | None]
    missing: str = "no data"
    note: Callable[[ReportData], str] = lambda data: ""
    optional: bool = False
    png: bool = False

    def words(self, data: ReportData) -> tuple[str, str]:
        """The title (first letter capital: it heads a section) and caption for ``data``'s
        metric."""
        title = self.title.format(metric=data.metric)
        caption = self.caption.format(metric=data.metric, faded=faded_words(data))
        return title[:1].upper() + title[1:], caption


def _objective(x: str, x_title: str) -> Callable[[ReportData], go.Figure | None]:
    return lambda data: objective_figure(data, x=x, x_title=x_title)


FIGURES: tuple[Figure, ...] = (
    Figure(
        "pareto",
        "Pareto front: {metric} against latency",
        "Each point is one trial's exported ONNX file, measured in ONNX Runtime. Bold blue "
        "points are the Pareto front (no other trial has both a higher {metric} and a lower "
        "latency); {faded}. Hover a point for its configuration.",
        _objective(PAIRED, "latency p50 (ms)"),
        png=True,
    ),
    Figure(
        "memory",
        "{metric} against peak memory",
        "Peak memory of inference, measured in a fresh process. The colours still mark the "
        "{metric}/latency front.",
        _objective("peak_memory_mb", "peak inference memory (MB)"),
        png=True,
    ),
    Figure(
        "size",
        "{metric} against size",
        "Size of the measured ONNX file on disk.",
        _objective("size_mb", "model file size (MB)"),
        png=True,
    ),
    Figure(
        "parallel",
        "Parameters against objectives",
        "One line a completed trial, through each searched parameter that acted in some "
        "trial ('-' where it did not act in this one) and both objectives. Drag along an axis "
        "to filter trials.",
        parallel_figure,
        note=parallel_note,
    ),
    Figure(
        "importance",
        "Parameter importances",
        "How much of each objective's variance each searched parameter explains.",
        importance_figure,
        missing="not enough completed trials with varying parameters",
        note=lambda data: data.importance_note,
    ),
    Figure(
        "hypervolume",
        "Hypervolume over trials",
        "Area the front dominates ({metric} x ms); it rises when a trial improves the front.",
        hypervolume_figure,
        png=True,
    ),
    Figure(
        "savings",
        "Where the savings came from",
        "Parameters and multiply-accumulates of the PyTorch model after each step.",
        savings_figure,
    ),
    Figure(
        "kernels",
        "Integer kernels",
        "How many nodes of the measured file ran as integer kernels.",
        kernels_figure,
        missing="no trial recorded kernel counts (no trial was quantized)",
    ),
    Figure(
        "sensitivity",
        "Layer-group sensitivity",
        "How much {metric} (validation split) each group of layers loses when it alone is "
        "quantized to the lowest precision the profile runs and the rest stays float. This "
        "one-off pass orders the groups and seeds the search; most sensitive first.",
        sensitivity_figure,
        missing="the study ran no sensitivity pass",
        optional=True,
    ),
)


def figures(data: ReportData) -> dict[str, go.Figure | None]:
    """Every registered figure of ``data`` by key, in page order; ``None`` where it has no data."""
    return {f.key: f.draw(data) for f in FIGURES}
