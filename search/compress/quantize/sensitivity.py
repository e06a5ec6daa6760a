"""One-off per-group sensitivity pass, as in HAWQ and AIMET's mixed-precision tools.

Each group alone is quantized to the lowest precision the profile runs, everything else left
float, and the accuracy of that ONNX file in ONNX Runtime is measured. The result is plain data
stored with the study; it orders the groups and seeds the search with one trial that quantizes
the groups that tolerate it. Every variant reuses one calibration of the float model.

This is a pure pass over a calibration and an ``evaluate`` function; where the calibration comes
from and how files are scored is up to the caller (:mod:`search.study.references`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from search.compress.quantize.calibration import Calibration
from search.compress.quantize.encoding import BY_BITS, ordinal_seed
from search.compress.quantize.qdq import QuantizeSpace, half_only, quantize


def sensitivity_pass(
    calibration: Calibration | Path,
    *,
    space: QuantizeSpace,
    precision: str,
    activations: str,
    weights: str,
    evaluate: Callable[[Path], float],
    out_dir: Path,
) -> dict[str, Any]:
    """Accuracy with only one group at ``precision``, for each group; plain data.

    ``calibration`` is the float model's calibration, or the float model's path itself for a
    precision that needs none (fp16).

    Returns:
        ``{"precision", "float_accuracy", "groups": {group: {"accuracy", "drop",
        "layer_types"}}, "order"}`` where ``order`` lists groups from most to least sensitive.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    float_model = calibration.model if isinstance(calibration, Calibration) else calibration
    reference = evaluate(float_model)
    groups: dict[str, Any] = {}
    for group in space.groups:
        plan = {g: (precision if g == group else "float") for g in space.groups}
        out = out_dir / f"{group}.q.onnx"
        if isinstance(calibration, Calibration):
            q = quantize(
                calibration,
                out,
                plan=plan,
                groups=space.groups,
                activations=activations,  # type: ignore[arg-type]
                weights=weights,  # type: ignore[arg-type]
                ungrouped="float",  # only this group is quantized
            )
        else:
            q = half_only(calibration, out, plan=plan, groups=space.groups)
        acc = evaluate(q.path)
        quantized = {k: v for k, v in q.layer_types.items() if v != "float"}
        groups[group] = {
            "accuracy": acc,
            "drop": reference - acc,
            "layers": len(quantized),
            "layer_types": quantized,
        }
    order = sorted(groups, key=lambda g: groups[g]["drop"], reverse=True)
    return {
        "precision": precision,
        "calibration": getattr(calibration, "method", None),
        "activations": activations,
        "weights": weights,
        "float_accuracy": reference,
        "groups": groups,
        "order": order,
    }


def seed_params(
    sensitivity: Mapping[str, Any],
    *,
    choices: Mapping[str, list[str]],
    tolerance: float,
    encoding: str = "categorical",
) -> dict[str, Any]:
    """Optuna params of one seeded trial: groups within ``tolerance`` at the pass's precision.

    A group that lost more accuracy gets the next wider quantized precision it may use, else
    float. Only searched parameters (more than one choice) are returned. Under the ordinal
    encoding the one parameter is the number of groups within ``tolerance``.
    """
    if encoding == "ordinal":
        return ordinal_seed(sensitivity, tolerance=tolerance)
    low = sensitivity["precision"]
    params: dict[str, Any] = {}
    for group, info in sensitivity["groups"].items():
        name = f"precision_{group}"
        options = choices.get(name, [])
        if len(options) < 2:
            continue
        if info["drop"] <= tolerance and low in options:
            params[name] = low
            continue
        wider = [p for p in BY_BITS[BY_BITS.index(low) + 1 :] if p in options]
        params[name] = wider[0] if wider else "float"
    return params
