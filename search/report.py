"""Collect a study into plain data, then render it: ``trials.csv`` and ``report.html``.

Compute, then render: :func:`collect` returns a DataFrame that tests can check; the plotting
functions only draw it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

COLUMNS = [
    "accuracy",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_cv",
    "peak_memory_mb",
    "size_mb",
]


def collect(study: optuna.Study) -> pd.DataFrame:
    """One row a trial: number, state, parameters, metrics, Pareto membership, failure reason."""
    pareto = {t.number for t in study.best_trials} if _has_complete(study) else set()
    rows: list[dict[str, Any]] = []
    for t in study.get_trials(deepcopy=False):
        rec = t.user_attrs.get("record", {})
        row: dict[str, Any] = {"trial": t.number, "state": t.state.name}
        row.update({f"param_{k}": v for k, v in t.params.items()})
        row.update({k: rec.get(k) for k in COLUMNS})
        row["pareto"] = t.number in pareto
        row["providers"] = ",".join(rec.get("measurement", {}).get("providers", []))
        kernels = rec.get("kernels", {})
        row["integer_layers"] = kernels.get("integer_layers")
        row["float_layers_after_dequantize"] = kernels.get("float_layers_after_dequantize")
        row["duration_s"] = t.user_attrs.get("duration_s")
        row["fail_reason"] = t.user_attrs.get("fail_reason", "")
        rows.append(row)
    return pd.DataFrame(rows)


def sensitivity_table(study: optuna.Study) -> pd.DataFrame:
    """The one-off per-group sensitivity pass: one row a group, most sensitive first."""
    sens = study.user_attrs.get("sensitivity")
    if not sens:
        return pd.DataFrame(columns=["group", "precision", "layers", "accuracy", "drop"])
    return pd.DataFrame(
        [
            {
                "group": g,
                "precision": sens["precision"],
                "layers": sens["groups"][g]["layers"],
                "accuracy": sens["groups"][g]["accuracy"],
                "drop": sens["groups"][g]["drop"],
            }
            for g in sens["order"]
        ]
    )


def quantization_summary(study: optuna.Study) -> pd.DataFrame:
    """Float baseline, uniform int8 of it, and the most accurate mixed-precision trial."""
    cols = ["model", "accuracy", "latency_p50_ms", "size_mb", "integer_layers", "trial"]
    rows: list[dict[str, Any]] = []
    for name, rec in (
        ("float baseline", study.user_attrs.get("baseline")),
        ("uniform int8", study.user_attrs.get("baseline_int8")),
    ):
        if rec:
            rows.append({"model": name, **rec, **rec.get("kernels", {}), "trial": None})
    mixed = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(set(t.user_attrs.get("record", {}).get("config", {}).get("precision", {}).values()))
        > 1
    ]
    if mixed:
        best = max(mixed, key=lambda t: (t.values[0], -t.values[1]))
        rec = best.user_attrs["record"]
        rows.append(
            {"model": "best mixed precision", **rec, **rec["kernels"], "trial": best.number}
        )
    return pd.DataFrame([{k: r.get(k) for k in cols} for r in rows], columns=cols)


def _has_complete(study: optuna.Study) -> bool:
    return any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))


def pareto_figure(study: optuna.Study):
    """Accuracy against p50 latency: the Pareto front, other trials, and the baseline."""
    import plotly.graph_objects as go

    df = collect(study)
    done = df[df.state == "COMPLETE"]
    fig = go.Figure()
    for on_front, name, opacity in ((False, "dominated", 0.35), (True, "Pareto front", 1.0)):
        part = done[done.pareto == on_front].sort_values("latency_p50_ms")
        fig.add_scatter(
            x=part.latency_p50_ms,
            y=part.accuracy,
            mode="markers+lines" if on_front else "markers",
            name=name,
            opacity=opacity,
            text=[f"trial {n}" for n in part.trial],
            hovertemplate="%{text}<br>p50 %{x:.3f} ms<br>accuracy %{y:.4f}<extra></extra>",
        )
    base = study.user_attrs.get("baseline")
    if base:
        fig.add_scatter(
            x=[base["latency_p50_ms"]],
            y=[base["accuracy"]],
            mode="markers",
            marker={"symbol": "star", "size": 14, "color": "black"},
            name="baseline (uncompressed)",
        )
    fig.update_layout(
        title=f"{study.study_name}: accuracy vs latency (p50, batch "
        f"{_first_batch(study)})",
        xaxis_title="latency p50 (ms)",
        yaxis_title="accuracy (ONNX Runtime, test split)",
        template="plotly_white",
    )
    return fig


def _first_batch(study: optuna.Study) -> Any:
    base = study.user_attrs.get("baseline", {})
    lat = base.get("measurement", {}).get("latency", [{}])
    return lat[0].get("batch_size", "?")


def write_outputs(study: optuna.Study, out_dir: Path, *, html: bool = True) -> dict[str, Path]:
    """Write ``trials.csv`` and (with ``html``) ``report.html`` into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out_dir / "trials.csv"}
    collect(study).to_csv(paths["csv"], index=False)
    if study.user_attrs.get("sensitivity"):
        paths["sensitivity"] = out_dir / "sensitivity.csv"
        sensitivity_table(study).to_csv(paths["sensitivity"], index=False)
    if html:
        paths["html"] = out_dir / "report.html"
        pareto_figure(study).write_html(paths["html"], include_plotlyjs=True)
    return paths
