"""The study's quantization as plain data: a trial's precision plan and its summary in words,
the one-off per-group sensitivity pass, and float baseline against uniform int8 and mixed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from search.config import plan_of

SENSITIVITY_COLUMNS = ["group", "precision", "layers", "accuracy", "drop", "float_accuracy"]
SUMMARY_COLUMNS = ["model", "accuracy", "latency_p50_ms", "size_mb", "integer_layers", "trial"]


def precision_summary(record: dict[str, Any]) -> str:
    """Short words for the precision a trial ran at, from what its record says.

    ``record["ran"]`` (group -> what its layers ran at in ONNX Runtime's optimized graph,
    :mod:`search.compress.audit`) comes first: ``int8: stem, layer1; float: fc``. Records made
    before the audit fall back to ``record["precision"]`` or the plan in ``record["config"]``,
    a string or a mapping of group -> type (counted, e.g. ``int8 x12, float x2``).
    ``record["kernels"]`` adds ``n int kernels``. A record without any was measured from the
    float ONNX file (``float32``).
    """
    parts: list[str] = []
    ran = record.get("ran")
    prec = record.get("precision") or plan_of(record.get("config"))
    if isinstance(ran, dict) and ran:
        parts.append(ran_summary(ran))
    elif isinstance(prec, str) and prec:
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


def ran_summary(ran: dict[str, Any]) -> str:
    """``int8: stem, layer1; float: fc``: the groups by what they ran at."""
    kinds: dict[str, list[str]] = {}
    for group, label in ran.items():
        kinds.setdefault(str(label), []).append(str(group))
    return "; ".join(f"{kind}: {', '.join(groups)}" for kind, groups in kinds.items())


def sensitivity_rows(sensitivity: Mapping[str, Any] | None) -> pd.DataFrame:
    """The sensitivity pass as one row a group, most sensitive first (the pass's ``order``).

    Args:
        sensitivity: The study's ``sensitivity`` attribute as ``compress/sensitivity.py``
            stores it: ``{precision, float_accuracy, groups: {group: {accuracy, drop, layers,
            layer_types}}, order, ...}``; ``None`` when the study ran no pass.

    Returns:
        Columns ``group, precision, layers, accuracy, drop, float_accuracy``; ``drop`` is the
        float model's metric minus the metric with only that group quantized to ``precision``
        (validation split). Empty when there was no pass.
    """
    if not sensitivity or not sensitivity.get("groups"):
        return pd.DataFrame(columns=SENSITIVITY_COLUMNS)
    groups = sensitivity["groups"]
    order = [g for g in sensitivity.get("order") or groups if g in groups]
    return pd.DataFrame(
        [
            {
                "group": g,
                "precision": sensitivity.get("precision"),
                "layers": groups[g].get("layers"),
                "accuracy": groups[g].get("accuracy"),
                "drop": groups[g].get("drop"),
                "float_accuracy": sensitivity.get("float_accuracy"),
            }
            for g in order
        ],
        columns=SENSITIVITY_COLUMNS,
    )


def sensitivity_table(study: optuna.Study) -> pd.DataFrame:
    """:func:`sensitivity_rows` of the study's ``sensitivity`` attribute."""
    return sensitivity_rows(study.user_attrs.get("sensitivity"))


def quantization_summary(study: optuna.Study) -> pd.DataFrame:
    """Float baseline, uniform int8 of it, and the most accurate mixed-precision trial."""
    rows: list[dict[str, Any]] = []
    for name, rec in (
        ("float baseline", study.user_attrs.get("baseline")),
        ("uniform int8", study.user_attrs.get("baseline_int8")),
    ):
        if rec:
            rows.append({"model": name, **rec, **(rec.get("kernels") or {}), "trial": None})
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    mixed = [t for t in done if len(set(_ran_or_plan(t).values())) > 1]
    if mixed:
        best = max(mixed, key=lambda t: (t.values[0], -t.values[1]))
        rec = best.user_attrs["record"]
        rows.append(
            {
                "model": "best mixed precision",
                **rec,
                **(rec.get("kernels") or {}),
                "trial": best.number,
            }
        )
    return pd.DataFrame(
        [{k: r.get(k) for k in SUMMARY_COLUMNS} for r in rows], columns=SUMMARY_COLUMNS
    )


def _ran_or_plan(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """What the trial's groups ran at (the audit), or its plan for older records."""
    ran = (t.user_attrs.get("record") or {}).get("ran")
    return ran if isinstance(ran, dict) and ran else plan_of(_config(t))


def _config(t: optuna.trial.FrozenTrial) -> dict[str, Any] | None:
    return (t.user_attrs.get("record") or {}).get("config")
