"""Collect a study into plain data: one row a trial, the front, picks, importances, hypervolume.

Compute, then render: everything here returns plain data (pandas frames, dicts, dataclasses)
that tests check; :mod:`search.report.plots` and :mod:`search.report.page` only draw it.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import FrozenTrial, TrialState

from search.core.errors import first_line
from search.core.formatting import fmt, is_number
from search.record import (
    OBJECTIVES,
    PAIRED,
    BaselineRecord,
    TrialRecord,
    baseline_of,
    confirmed_rows,
)
from search.report.active import acted, acted_config
from search.report.batches import batch_fronts
from search.report.hypervolume import hypervolume
from search.report.notes import (
    confirmation_note,
    measurement_notes,
    output_notes,
    row_notes,
)
from search.report.picking import Pick, candidates, pick
from search.report.quantization import precision_summary, quantization_summary, sensitivity_rows

COLUMNS = [
    "accuracy",
    "test_accuracy",
    PAIRED,
    "latency_measured_p50_ms",
    "latency_relative",
    "latency_p90_ms",
    "latency_cv",
    "busy",
    "noisy",
    "peak_memory_mb",
    "size_mb",
]
# What the front's confirmation (search.study.confirm) measured, per trial; empty where it did not.
CONFIRMED = {
    "confirmed_p50_ms": PAIRED,
    "confirmed_relative": "latency_relative",
    "confirmed_spread": "spread",
    "confirmed_noisy": "noisy",
    "confirmed_front": "on_front",
}


def collect(study: optuna.Study) -> pd.DataFrame:
    """One row a trial: the parameters that acted, metrics, change from the baseline, Pareto
    membership, feasibility, sizes per step, kernel counts, precision, failure reason, whole
    config (JSON).
    """
    base = baseline_of(study)
    pareto = {t.number for t in study.best_trials} if _has_complete(study) else set()
    confirmed = confirmed_rows(study)
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = _row(t, base, t.number in pareto)
        rows.append({**row, **_confirmed_columns(confirmed.get(str(t.number)))})
    return pd.DataFrame(rows)


def _confirmed_columns(found: dict[str, Any] | None) -> dict[str, Any]:
    """A trial's confirmed figures (p50 and its interval in ms, relative latency, spread,
    noisy, still on the front, and the speedup over the baseline with its interval: the
    inverse of the relative latency and of its interval's ends), or None in each column when
    it was not confirmed."""
    found = found or {}
    out = {col: found.get(key) for col, key in CONFIRMED.items()}
    low, high = found.get("latency_ci_ms") or (None, None)
    out |= {"confirmed_ci_low_ms": low, "confirmed_ci_high_ms": high}
    rel_low, rel_high = found.get("relative_ci") or (None, None)
    return out | {
        "confirmed_speedup": _inverse(found.get("latency_relative")),
        "confirmed_speedup_low": _inverse(rel_high),
        "confirmed_speedup_high": _inverse(rel_low),
    }


def _inverse(x: object) -> float | None:
    return 1.0 / float(x) if is_number(x) and float(x) > 0 else None  # type: ignore[arg-type]


def _row(t: FrozenTrial, base: BaselineRecord | None, on_front: bool) -> dict[str, Any]:
    rec = TrialRecord.of(t)
    row: dict[str, Any] = {"trial": t.number, "state": t.state.name}
    params = acted(t, rec)
    row.update({f"param_{k}": v for k, v in params.items()})
    row.update({k: getattr(rec, k) if rec else None for k in COLUMNS})
    has_base = base is not None and is_number(base.accuracy)
    row["accuracy_change"] = rec.accuracy - base.accuracy if rec and base and has_base else None
    row["speedup"] = base.speedup(rec.latency_paired_ms) if rec and base else None
    row["pareto"] = on_front
    row["feasible"] = all(v <= 0.0 for v in t.constraints.values())
    row["precision"] = precision_summary(rec) if rec else ""
    kernels = rec.kernels if rec else {}
    for key in ("integer_layers", "float_layers_after_dequantize", "fp16_layers"):
        row[key] = kernels.get(key)
    for step, size in (rec.sizes if rec else {}).items():
        if isinstance(size, dict):
            row[f"params_{step}"] = size.get("params")
            row[f"macs_{step}"] = size.get("macs")
    row["providers"] = ",".join(rec.providers) if rec else ""
    row["measured_file"] = Path(rec.measured_file).name if rec and rec.measured_file else ""
    row["duration_s"] = t.user_attrs.get("duration_s")
    # Where it trained, and the trial whose distilled student it reused (search.trial.students).
    row["train_device"] = rec.train_device if rec else None
    row["reused_student_of"] = (rec.reused_student or {}).get("trial") if rec else None
    row["fail_reason"] = t.user_attrs.get("fail_reason", "")
    # The trial this one redoes after an interruption (search.study.resume), or None.
    redo = t.user_attrs.get("redo_of")
    row["redo_of"] = redo if isinstance(redo, int) and not isinstance(redo, bool) else None
    config = (rec.config if rec else None) or t.user_attrs.get("config")
    # What the trial ran with: settings of parameters that did not act are left out.
    shown = acted_config(config, t.params, params) if isinstance(config, dict) else t.params
    row["config"] = json.dumps(shown, sort_keys=True, default=str)
    return row


def _has_complete(study: optuna.Study) -> bool:
    return any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False))


@dataclass
class ReportData:
    """Everything the report shows, as plain data.

    ``metric`` is what the task's score is called (the study's ``metric`` attribute, e.g.
    ``accuracy`` or ``top-5 accuracy``); the trials table keeps it in its ``accuracy`` column, the
    record key every trial shares.
    """

    study_name: str
    trials: pd.DataFrame
    baseline: BaselineRecord | None
    settings: dict[str, Any]
    budgets: dict[str, float]
    metric: str = "accuracy"
    picks: list[Pick] = field(default_factory=list)
    importances: dict[str, dict[str, float]] = field(default_factory=dict)
    importance_note: str = ""
    hypervolume: pd.DataFrame = field(default_factory=pd.DataFrame)
    hv_reference: tuple[float, float] = (0.0, 0.0)
    sensitivity: pd.DataFrame = field(default_factory=pd.DataFrame)
    quantization: pd.DataFrame = field(default_factory=pd.DataFrame)
    confirmed: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # Batch size -> the front at it, for the batch sizes after the first (search.report.batches).
    batch_fronts: dict[int, pd.DataFrame] = field(default_factory=dict)

    @property
    def pareto(self) -> pd.DataFrame:
        if self.trials.empty:
            return self.trials
        return self.trials[self.trials.pareto].sort_values(PAIRED)

    def picked_by(self, trial: int) -> list[str]:
        return [p.rule for p in self.picks if p.trial == trial]

    def label(self, objective: str) -> str:
        """What an objective (an Optuna metric name or record key) is called on the page."""
        return {"accuracy": self.metric, PAIRED: "p50 latency (ms)"}.get(objective, objective)


def build_report(study: optuna.Study, *, picks: Sequence[str] = ()) -> ReportData:
    """Collect the study and compute what the plots need: picks, importances, hypervolume."""
    trials = collect(study)
    baseline = baseline_of(study)
    metric = str(study.user_attrs.get("metric") or "accuracy")
    data = ReportData(
        study_name=study.study_name,
        trials=trials,
        baseline=baseline,
        settings=study.user_attrs.get("settings") or {},
        budgets=budgets(study),
        metric=metric,
        sensitivity=sensitivity_rows(study.user_attrs.get("sensitivity")),
        quantization=quantization_summary(study),
        confirmed=study.user_attrs.get("confirmed") or {},
        batch_fronts=batch_fronts(study),
    )
    data.notes = measurement_notes(trials, baseline, metric)
    data.notes += [n for n in [confirmation_note(data.confirmed)] if n]
    data.notes += output_notes(study.user_attrs.get("model") or {})
    base_acc = baseline.accuracy if baseline else None
    data.picks = [pick(trials, rule, baseline_accuracy=base_acc, metric=metric) for rule in picks]
    data.importances, data.importance_note = importances(study)
    data.hypervolume, data.hv_reference = hypervolume_history(trials, baseline)
    return data


def budgets(study: optuna.Study) -> dict[str, float]:
    """The budgets the study ran under, recovered from the trials' Optuna constraints.

    study.py stores ``value - budget`` for each set budget (0 when no budget is set), so the
    budget is what the study really used, even if the profile file has changed since.
    """
    keys = {"latency_budget_ms": PAIRED, "memory_budget_mb": "peak_memory_mb"}
    found: dict[str, float] = {}
    for t in study.get_trials(deepcopy=False):
        rec = TrialRecord.of(t)
        for key, metric in keys.items():
            value = t.constraints.get(key)
            if rec is None or key in found or not is_number(value) or value == 0.0:
                continue
            measured = getattr(rec, metric)
            if is_number(measured):
                found[key] = round(measured - value, 9)
    return found


def _objective(i: int) -> Callable[[FrozenTrial], float]:
    """The ``i``-th objective of a trial, as Optuna's importances read it."""
    return lambda t: t.values[i]


def importances(study: optuna.Study) -> tuple[dict[str, dict[str, float]], str]:
    """Optuna's (fANOVA) parameter importances for each objective, over the parameters that
    acted in some completed trial (:func:`search.report.active.acted`), or why there are none."""
    names = study.metric_names or list(OBJECTIVES)
    out: dict[str, dict[str, float]] = {}
    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if len(done) < 2:
        return out, "parameter importances need at least 2 completed trials"
    # Parameters that acted in no completed trial (low-rank's kind with low-rank always off)
    # would only spread noise over bars for settings that changed nothing.
    acting = {k for t in done for k in acted(t, TrialRecord.of(t))}
    shared = set.intersection(*(set(t.params) for t in done))
    params = sorted(acting & shared) or None
    for i, name in enumerate(names):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[name] = optuna.importance.get_param_importances(
                    study, target=_objective(i), params=params
                )
        except (RuntimeError, ValueError) as e:
            return {}, f"parameter importances unavailable: {first_line(e)}"
    if len(done) < 10:
        return out, f"only {len(done)} completed trials: these importances are rough"
    return out, ""


def hypervolume_history(
    trials: pd.DataFrame, baseline: BaselineRecord | None
) -> tuple[pd.DataFrame, tuple[float, float]]:
    """Hypervolume (metric x ms) of the (metric up, latency down) front after each trial.

    The reference point is metric 0 and 1.1 x the slowest latency seen (trials and baseline),
    fixed for the whole history so the curve can only rise.
    """
    pool = candidates(trials).sort_values("trial") if not trials.empty else trials
    if pool.empty:
        return pd.DataFrame(columns=["trial", "hypervolume"]), (0.0, 0.0)
    lats = list(pool[PAIRED]) + [baseline.latency_paired_ms if baseline else 0.0]
    ref = (0.0, 1.1 * max(lats))
    points: list[tuple[float, float]] = []
    rows = []
    for _, r in pool.iterrows():
        points.append((float(r.accuracy), float(r[PAIRED])))
        rows.append({"trial": int(r.trial), "hypervolume": hypervolume(points, reference=ref)})
    return pd.DataFrame(rows), ref


# Left-aligned in every table the report renders; the other columns are numbers.
TEXT_COLUMNS = ("model", "precision", "notes", "picked by")


def front_table(data: ReportData) -> tuple[list[str], list[list[str]]]:
    """The Pareto trials as words, fastest first, for the console and the page alike.

    Returns:
        Column names and rows of formatted cells; when the study has a baseline, the first row
        is it (its first cell is ``"baseline"``). Numbers missing from a record show as ``-``.
        ``test`` (the test-split metric) shows when any trial has one, ``confirmed p50 ms``
        and ``confirmed speedup`` (each with its 95 % interval) when the front was confirmed;
        ``notes`` marks redos of interrupted trials, trials measured under load (busy), noisy
        ones and those off the front after confirmation.
    """
    trials = data.trials
    test = "test_accuracy" in trials and trials.test_accuracy.notna().any()
    confirmed = bool(data.confirmed)
    columns = ["trial", data.metric, "vs baseline"] + (["test"] if test else [])
    columns += ["p50 ms", "speedup"]
    columns += ["confirmed p50 ms", "confirmed speedup"] if confirmed else []
    columns += ["peak MB", "size MB", "precision", "notes", "picked by"]
    rows: list[list[str]] = []
    b = data.baseline
    if b is not None:
        rows.append(
            ["baseline", fmt(b.accuracy, ".4f"), ""]
            + ([fmt(b.test_accuracy, ".4f")] if test else [])
            + [fmt(b.latency_paired_ms, ".3f"), "1.00x"]
            + ([fmt(b.latency_paired_ms, ".3f"), "1.00x"] if confirmed else [])
            + [fmt(b.peak_memory_mb, ".1f"), fmt(b.size_mb, ".2f")]
            + ["float", "busy" if b.busy else "", ""]
        )
    for _, r in data.pareto.iterrows():
        rows.append(
            [str(r.trial), fmt(r.accuracy, ".4f"), fmt(r.accuracy_change, "+.2%")]
            + ([fmt(r.test_accuracy, ".4f")] if test else [])
            + [fmt(r[PAIRED], ".3f"), fmt(r.speedup, ".2f", "x")]
            + ([_confirmed_cell(r), confirmed_speedup(r)] if confirmed else [])
            + [fmt(r.peak_memory_mb, ".1f"), fmt(r.size_mb, ".2f"), str(r.precision)]
            + [row_notes(r), ", ".join(data.picked_by(int(r.trial)))]
        )
    return columns, rows


def _confirmed_cell(r: pd.Series) -> str:
    """``0.412 [0.405, 0.420]``: the confirmed p50 and its 95 % interval, or ``-``."""
    if not is_number(r.get("confirmed_p50_ms")):
        return "-"
    low, high = r.get("confirmed_ci_low_ms"), r.get("confirmed_ci_high_ms")
    return f"{fmt(r.confirmed_p50_ms, '.3f')} [{fmt(low, '.3f')}, {fmt(high, '.3f')}]"


def confirmed_speedup(r: pd.Series) -> str:
    """``1.82x [1.75, 1.90]``: the confirmed speedup over the baseline and its 95 % interval
    (from the interval of the relative latency), or ``-`` for a trial not confirmed."""
    if not is_number(r.get("confirmed_speedup")):
        return "-"
    low, high = r.get("confirmed_speedup_low"), r.get("confirmed_speedup_high")
    return f"{fmt(r.confirmed_speedup, '.2f', 'x')} [{fmt(low, '.2f')}, {fmt(high, '.2f')}]"
