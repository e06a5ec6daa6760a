"""The study's quantization as plain data: a trial's precision plan and its summary in words,
the one-off per-group sensitivity pass, and float baseline against uniform int8 and mixed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from search.config import plan_of
from search.record import PAIRED, Measured, TrialRecord, baseline_of

SENSITIVITY_COLUMNS = ["group", "precision", "layers", "accuracy", "drop", "float_accuracy"]
SUMMARY_COLUMNS = ["model", "accuracy", PAIRED, "size_mb", "integer_layers", "trial"]


def precision_summary(record: TrialRecord) -> str:
    """Short words for the precision a trial ran at, from what its record says.

    ``record.ran`` (group -> what its layers ran at in ONNX Runtime's optimized graph,
    :mod:`search.compress.quantize.audit`) comes first: ``int8: stem, layer1; float: fc``.
    Records made before the audit fall back to the plan in ``record.config`` (counted, e.g.
    ``int8 x12, float x2``, or the plan's own words). ``record.kernels`` adds
    ``n int kernels``. A record without any was measured from the float ONNX file
    (``float32``).
    """
    parts: list[str] = []
    plan = plan_of(record.config)
    legacy = record.config.get("precision")  # records before per-step configs: one word
    if record.ran:
        parts.append(ran_summary(record.ran))
    elif plan:
        counts: dict[str, int] = {}
        for value in plan.values():
            counts[value] = counts.get(value, 0) + 1
        parts.append(", ".join(f"{k} x{n}" for k, n in sorted(counts.items())))
    elif isinstance(legacy, str) and legacy:
        parts.append(legacy)
    kernels = record.kernels
    if kernels and "unavailable" not in kernels:
        n_int = kernels.get("integer_layers", 0)
        n_float = kernels.get("float_layers_after_dequantize", 0)
        after_dq = f", {n_float} float after DequantizeLinear" if n_float else ""
        n_half = kernels.get("fp16_layers", 0)
        half = f", {n_half} fp16" if n_half else ""
        parts.append(f"{n_int} int kernels{half}{after_dq}")
    if not parts:
        quantized = str(record.measured_file).endswith(".q.onnx")
        parts.append("quantized" if quantized else "float32")
    return "; ".join(parts)


def ran_summary(ran: Mapping[str, object]) -> str:
    """``int8: stem, layer1; float: fc``: the groups by what they ran at."""
    kinds: dict[str, list[str]] = {}
    for group, label in ran.items():
        kinds.setdefault(str(label), []).append(str(group))
    return "; ".join(f"{kind}: {', '.join(groups)}" for kind, groups in kinds.items())


def sensitivity_rows(sensitivity: Mapping[str, Any] | None) -> pd.DataFrame:
    """The sensitivity pass as one row a group, most sensitive first (the pass's ``order``).

    Args:
        sensitivity: The study's ``sensitivity`` attribute as ``compress/quantize/sensitivity.py``
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
    """Float baseline, uniform int8 of it, and the most accurate mixed-precision trial (a
    trial whose groups ran at more than one precision); rows for what the study has."""
    rows: list[tuple[str, Measured, dict[str, Any], int | None]] = []
    baseline = baseline_of(study)
    if baseline is not None:
        rows.append(("float baseline", baseline, {}, None))
    int8 = study.user_attrs.get("baseline_int8")
    if isinstance(int8, dict):
        rec = TrialRecord.from_json(int8)
        rows.append(("uniform int8", rec, rec.kernels, None))
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    records = {t.number: r for t in done if (r := TrialRecord.of(t)) is not None}
    mixed = [
        t
        for t in done
        if t.number in records and len(set(_ran_or_plan(records[t.number]).values())) > 1
    ]
    if mixed:
        best = max(mixed, key=lambda t: (t.values[0], -t.values[1]))
        rec = records[best.number]
        rows.append(("best mixed precision", rec, rec.kernels, best.number))
    return pd.DataFrame(
        [
            {
                "model": name,
                "accuracy": r.accuracy,
                PAIRED: r.latency_paired_ms,
                "size_mb": r.size_mb,
                "integer_layers": kernels.get("integer_layers"),
                "trial": number,
            }  # fmt: skip
            for name, r, kernels, number in rows
        ],
        columns=SUMMARY_COLUMNS,
    )


def _ran_or_plan(rec: TrialRecord) -> dict[str, str]:
    """What the trial's groups ran at (the audit), or its plan for older records."""
    return dict(rec.ran) or plan_of(rec.config)
