"""The benchmark's figure: the fronts, and hypervolume against trial count and wall time.

Draws :func:`search.bench.report.summarize_runs`' data only. Hypervolume curves come from each
study's own measurements (normalized by its own baseline measurement); thin lines are single
sampler seeds, the thick line against trial count is the mean over seeds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import plotly.colors

if TYPE_CHECKING:
    import plotly.graph_objects as go

PANELS = (
    "accuracy vs speedup over float (interleaved latency)",
    "hypervolume vs trial count",
    "hypervolume vs wall time (shared, loaded machine)",
)


def _colors(methods: list[str]) -> dict[str, str]:
    palette = plotly.colors.qualitative.Plotly
    return {m: palette[i % len(palette)] for i, m in enumerate(methods)}


def _fronts(fig: go.Figure, data: dict[str, Any], color: dict[str, str]) -> None:
    shown: set[str] = set()
    for r in data["runs"]:
        pts = sorted((p for p in r["front"] if p["speedup"]), key=lambda p: p["speedup"])
        fig.add_scatter(
            x=[p["speedup"] for p in pts],
            y=[p["accuracy"] for p in pts],
            mode="markers+lines" if len(pts) > 1 else "markers",
            name=r["title"],
            legendgroup=r["method"],
            showlegend=r["method"] not in shown,
            marker={"color": color[r["method"]]},
            text=[f"{p['label']} (seed {r['seed']})" for p in pts],
            row=1,
            col=1,
        )
        shown.add(r["method"])


def _curves(fig: go.Figure, data: dict[str, Any], color: dict[str, str]) -> None:
    for r in data["runs"]:
        for col, key in ((2, "hv_history"), (3, "hv_time_history")):
            if r[key]:
                xs, ys = zip(*r[key], strict=True)
                fig.add_scatter(
                    x=xs,
                    y=ys,
                    mode="lines",
                    name=f"{r['title']}, seed {r['seed']}",
                    legendgroup=r["method"],
                    showlegend=False,
                    opacity=0.35,
                    line={"shape": "hv", "color": color[r["method"]], "width": 1},
                    row=1,
                    col=col,
                )
    for m in data["methods"]:
        if m["hv_by_trial"]:
            fig.add_scatter(
                x=list(range(1, len(m["hv_by_trial"]) + 1)),
                y=m["hv_by_trial"],
                mode="lines",
                name=f"{m['title']} (mean)",
                legendgroup=m["method"],
                showlegend=False,
                line={"shape": "hv", "color": color[m["method"]], "width": 3},
                row=1,
                col=2,
            )


def figure(data: dict[str, Any]) -> go.Figure:
    """Left: the fronts; middle: hypervolume vs trial count; right: vs seconds since the
    study's first trial started."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=3, subplot_titles=PANELS)
    color = _colors([m["method"] for m in data["methods"]])
    _fronts(fig, data, color)
    _curves(fig, data, color)
    fig.add_hline(
        y=data["baseline"]["accuracy"] - data["max_drop"],
        line_dash="dot",
        row=1,
        col=1,
        annotation_text=f"-{data['max_drop'] * 100:g} % accuracy",
    )
    labels = (
        ("speedup over float (x)", "accuracy (ONNX Runtime, test split)"),
        ("trials", "normalized hypervolume"),
        ("seconds since the study started", "normalized hypervolume"),
    )
    for col, (x, y) in enumerate(labels, start=1):
        fig.update_xaxes(title_text=x, row=1, col=col)
        fig.update_yaxes(title_text=y, row=1, col=col)
    fig.update_layout(
        title=f"{data['task']} on {data['profile']}", template="plotly_white", width=1600
    )
    return fig
