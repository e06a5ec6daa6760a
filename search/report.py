"""Collect a study into plain data, then write it: ``trials.csv``, ``pareto.csv``, ``report.html``.

Compute, then render: :func:`collect` and :func:`build_report` return plain data that tests can
check; :mod:`search.plots` only draws it.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from search.picking import Pick, candidates, pick

COLUMNS = [
    "accuracy",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_cv",
    "peak_memory_mb",
    "size_mb",
]
OBJECTIVES = ["accuracy", "latency_p50_ms"]


def collect(study: optuna.Study) -> pd.DataFrame:
    """One row a trial: parameters, metrics, change from the baseline, Pareto membership,
    feasibility, sizes per step, kernel counts, precision, failure reason, whole config (JSON).
    """
    base = study.user_attrs.get("baseline") or {}
    pareto = {t.number for t in study.best_trials} if _has_complete(study) else set()
    rows = [_row(t, base, t.number in pareto) for t in study.get_trials(deepcopy=False)]
    return pd.DataFrame(rows)


def _row(t: FrozenTrial, base: dict[str, Any], on_front: bool) -> dict[str, Any]:
    rec = t.user_attrs.get("record") or {}
    row: dict[str, Any] = {"trial": t.number, "state": t.state.name}
    row.update({f"param_{k}": v for k, v in t.params.items()})
    row.update({k: rec.get(k) for k in COLUMNS})
    acc, lat = rec.get("accuracy"), rec.get("latency_p50_ms")
    row["accuracy_change"] = acc - base["accuracy"] if _num(acc) and "accuracy" in base else None
    base_lat = base.get("latency_p50_ms")
    row["speedup"] = base_lat / lat if _num(lat) and lat > 0 and _num(base_lat) else None
    row["pareto"] = on_front
    row["feasible"] = all(v <= 0.0 for v in t.constraints.values())
    row["precision"] = precision_summary(rec) if rec else ""
    kernels = rec.get("kernels") or {}
    row["integer_layers"] = kernels.get("integer_layers")
    row["float_layers_after_dequantize"] = kernels.get("float_layers_after_dequantize")
    row["fp16_layers"] = kernels.get("fp16_layers")
    for step, size in (rec.get("sizes") or {}).items():
        if isinstance(size, dict):
            row[f"params_{step}"] = size.get("params")
            row[f"macs_{step}"] = size.get("macs")
    row["providers"] = ",".join(rec.get("measurement", {}).get("providers", []))
    measured = rec.get("measured_onnx") or rec.get("onnx")
    row["measured_file"] = Path(measured).name if measured else ""
    row["duration_s"] = t.user_attrs.get("duration_s")
    row["fail_reason"] = t.user_attrs.get("fail_reason", "")
    config = rec.get("config") or t.user_attrs.get("config") or t.params
    row["config"] = json.dumps(config, sort_keys=True, default=str)
    return row


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


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


def precision_summary(record: dict[str, Any]) -> str:
    """Short words for the precision a trial ran at, from what its record says.

    ``record["precision"]`` may be a string, or a mapping of layer -> type (counted, e.g.
    ``int8 x12, float x2``); ``record["kernels"]`` adds ``n int / m float kernels``. A record
    without either was measured from the float ONNX file (``float32``).
    """
    parts: list[str] = []
    prec = record.get("precision") or (record.get("config") or {}).get("precision")
    if isinstance(prec, str) and prec:
        parts.append(prec)
    elif isinstance(prec, dict) and prec:
        counts: dict[str, int] = {}
        for value in prec.values():
            key = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            counts[key] = counts.get(key, 0) + 1
        parts.append(", ".join(f"{k} x{n}" for k, n in sorted(counts.items())))
    kernels = record.get("kernels")
    if isinstance(kernels, dict) and kernels:
        n_int = kernels.get("integer_layers", 0)
        n_float = kernels.get("float_layers_after_dequantize", 0)
        after_dq = f", {n_float} float after DequantizeLinear" if n_float else ""
        n_half = kernels.get("fp16_layers", 0)
        half = f", {n_half} fp16" if n_half else ""
        parts.append(f"{n_int} int kernels{half}{after_dq}")
    if not parts:
        measured = record.get("measured_onnx") or record.get("onnx", "")
        quantized = str(measured).endswith(".q.onnx")
        parts.append("quantized" if quantized else "float32")
    return "; ".join(parts)


@dataclass
class ReportData:
    """Everything the report shows, as plain data."""

    study_name: str
    trials: pd.DataFrame
    baseline: dict[str, Any]
    settings: dict[str, Any]
    budgets: dict[str, float]
    picks: list[Pick] = field(default_factory=list)
    importances: dict[str, dict[str, float]] = field(default_factory=dict)
    importance_note: str = ""
    hypervolume: pd.DataFrame = field(default_factory=pd.DataFrame)
    hv_reference: tuple[float, float] = (0.0, 0.0)
    sensitivity: Any = None

    @property
    def pareto(self) -> pd.DataFrame:
        if self.trials.empty:
            return self.trials
        return self.trials[self.trials.pareto].sort_values("latency_p50_ms")

    def picked_by(self, trial: int) -> list[str]:
        return [p.rule for p in self.picks if p.trial == trial]


def build_report(study: optuna.Study, *, picks: Sequence[str] = ()) -> ReportData:
    """Collect the study and compute what the plots need: picks, importances, hypervolume."""
    trials = collect(study)
    baseline = study.user_attrs.get("baseline") or {}
    data = ReportData(
        study_name=study.study_name,
        trials=trials,
        baseline=baseline,
        settings=study.user_attrs.get("settings") or {},
        budgets=budgets(study),
        sensitivity=study.user_attrs.get("sensitivity"),
    )
    data.picks = [pick(trials, rule, baseline=baseline) for rule in picks]
    data.importances, data.importance_note = importances(study)
    data.hypervolume, data.hv_reference = hypervolume_history(trials, baseline)
    return data


def budgets(study: optuna.Study) -> dict[str, float]:
    """The budgets the study ran under, recovered from the trials' Optuna constraints.

    study.py stores ``value - budget`` for each set budget (0 when no budget is set), so the
    budget is what the study really used, even if the profile file has changed since.
    """
    keys = {"latency_budget_ms": "latency_p50_ms", "memory_budget_mb": "peak_memory_mb"}
    found: dict[str, float] = {}
    for t in study.get_trials(deepcopy=False):
        rec = t.user_attrs.get("record") or {}
        for key, metric in keys.items():
            value = t.constraints.get(key)
            if key not in found and _num(value) and value != 0.0 and _num(rec.get(metric)):
                found[key] = round(rec[metric] - value, 9)
    return found


def importances(study: optuna.Study) -> tuple[dict[str, dict[str, float]], str]:
    """Optuna's (fANOVA) parameter importances for each objective, or why there are none."""
    names = study.metric_names or OBJECTIVES
    out: dict[str, dict[str, float]] = {}
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(done) < 2:
        return out, "parameter importances need at least 2 completed trials"
    for i, name in enumerate(names):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[name] = optuna.importance.get_param_importances(
                    study, target=lambda t, i=i: t.values[i]
                )
        except (RuntimeError, ValueError) as e:
            return {}, f"parameter importances unavailable: {str(e).splitlines()[0]}"
    if len(done) < 10:
        return out, f"only {len(done)} completed trials: these importances are rough"
    return out, ""


def hypervolume_history(
    trials: pd.DataFrame, baseline: dict[str, Any]
) -> tuple[pd.DataFrame, tuple[float, float]]:
    """Hypervolume of the (accuracy up, latency down) front after each trial.

    The reference point is accuracy 0 and 1.1 x the slowest latency seen (trials and baseline),
    fixed for the whole history so the curve can only rise.
    """
    pool = candidates(trials).sort_values("trial") if not trials.empty else trials
    if pool.empty:
        return pd.DataFrame(columns=["trial", "hypervolume"]), (0.0, 0.0)
    lats = list(pool.latency_p50_ms) + [baseline.get("latency_p50_ms") or 0.0]
    ref = (0.0, 1.1 * max(lats))
    points: list[tuple[float, float]] = []
    rows = []
    for _, r in pool.iterrows():
        points.append((float(r.accuracy), float(r.latency_p50_ms)))
        rows.append({"trial": int(r.trial), "hypervolume": _hv2d(points, ref)})
    return pd.DataFrame(rows), ref


def _hv2d(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Area dominated by (accuracy, latency) points, maximizing accuracy, minimizing latency."""
    area, best_acc = 0.0, ref[0]
    # Sweep from fastest to slowest; each point adds the accuracy it gains over faster ones.
    for acc, lat in sorted(points, key=lambda p: (p[1], -p[0])):
        if acc > best_acc and lat < ref[1]:
            area += (acc - best_acc) * (ref[1] - lat)
            best_acc = acc
    return area


def pareto_table(data: ReportData, *, metric: str = "accuracy"):
    """The Pareto trials as a rich table, fastest first, with the picks named."""
    from rich.table import Table

    base = data.baseline
    table = Table(title=f"{data.study_name}: Pareto front ({len(data.pareto)} trials)")
    for col in (
        "trial",
        metric,
        "vs base",
        "p50 ms",
        "speedup",
        "mem MB",
        "size MB",
        "precision",
        "picked by",
    ):
        table.add_column(col, justify="left" if col in ("precision", "picked by") else "right")
    if base:
        table.add_row(
            "baseline",
            _f(base.get("accuracy"), ".4f"),
            "",
            _f(base.get("latency_p50_ms"), ".3f"),
            "1.00x",
            _f(base.get("peak_memory_mb"), ".1f"),
            _f(base.get("size_mb"), ".2f"),
            "float32",
            "",
            style="dim",
        )
    for _, r in data.pareto.iterrows():
        table.add_row(
            str(r.trial),
            _f(r.accuracy, ".4f"),
            _f(r.accuracy_change, "+.2%"),
            _f(r.latency_p50_ms, ".3f"),
            _f(r.speedup, ".2f", "x"),
            _f(r.peak_memory_mb, ".1f"),
            _f(r.size_mb, ".2f"),
            r.precision,
            ", ".join(data.picked_by(int(r.trial))),
        )
    return table


def _f(x: Any, spec: str, suffix: str = "") -> str:
    return f"{x:{spec}}{suffix}" if _num(x) else "-"


def write_outputs(
    study: optuna.Study,
    out_dir: Path,
    *,
    html: bool = True,
    picks: Sequence[str] = (),
    png: bool = False,
) -> dict[str, Path]:
    """Write ``trials.csv``, ``pareto.csv`` and (with ``html``) ``report.html`` into ``out_dir``.

    study.py calls this after every trial with ``html=False`` (cheap) and once at the end.
    """
    if not html:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        trials = collect(study)
        return _write_csv(trials, out_dir)
    paths, _ = write_report(build_report(study, picks=picks), out_dir, png=png)
    return paths


def write_report(
    data: ReportData, out_dir: Path, *, png: bool = False
) -> tuple[dict[str, Path], list[str]]:
    """Write the CSV files, ``report.html`` and (with ``png``) PNG copies of the main plots.

    Returns the written paths and notes for the user (e.g. why PNGs were skipped).
    """
    from search import plots
    from search.page import page

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = _write_csv(data.trials, out_dir)
    figures = plots.figures(data)
    paths["html"] = out_dir / "report.html"
    paths["html"].write_text(page(data, figures), encoding="utf-8")
    notes: list[str] = []
    if png:
        written, note = plots.write_pngs(figures, out_dir)
        paths.update({f"png_{p.stem}": p for p in written})
        notes += [note] if note else []
    return paths, notes


def _write_csv(trials: pd.DataFrame, out_dir: Path) -> dict[str, Path]:
    paths = {"csv": out_dir / "trials.csv", "pareto_csv": out_dir / "pareto.csv"}
    trials.to_csv(paths["csv"], index=False)
    front = trials[trials.pareto.astype(bool)] if not trials.empty else trials
    front.to_csv(paths["pareto_csv"], index=False)
    return paths
