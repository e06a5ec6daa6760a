"""One-off per-group sensitivity pass, as in HAWQ and AIMET's mixed-precision tools.

Each group alone is quantized to the lowest precision the profile runs, everything else left
float, and the accuracy of that ONNX file in ONNX Runtime is measured. The result is plain data
stored with the study; it orders the groups and seeds the search with one trial that quantizes
the groups that tolerate it. Every variant reuses one calibration of the float model.

This is a pure pass over a calibration and an ``evaluate`` function; where the calibration comes
from and how files are scored is up to the caller (:mod:`search.references`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from search.compress.calibration import Calibration
from search.compress.quantize import QuantizeSpace, half_only, quantize

# Lower index = fewer bits (fp16 before int16: on GPUs it is the next step after int8); the
# sensitivity pass uses the lowest one the profile allows.
_BY_BITS = ["int4", "int8", "fp16", "int16"]


def lowest_precision(choices: list[str]) -> str | None:
    """The quantized precision with the fewest bits among ``choices`` (None if only float)."""
    return next((p for p in _BY_BITS if p in choices), None)


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
    sensitivity: Mapping[str, Any], *, choices: Mapping[str, list[str]], tolerance: float
) -> dict[str, str]:
    """Optuna params of one seeded trial: groups within ``tolerance`` at the pass's precision.

    A group that lost more accuracy gets the next wider quantized precision it may use, else
    float. Only searched parameters (more than one choice) are returned.
    """
    low = sensitivity["precision"]
    params: dict[str, str] = {}
    for group, info in sensitivity["groups"].items():
        name = f"precision_{group}"
        options = choices.get(name, [])
        if len(options) < 2:
            continue
        if info["drop"] <= tolerance and low in options:
            params[name] = low
            continue
        wider = [p for p in _BY_BITS[_BY_BITS.index(low) + 1 :] if p in options]
        params[name] = wider[0] if wider else "float"
    return params
