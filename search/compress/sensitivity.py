"""One-off per-group sensitivity pass, as in HAWQ and AIMET's mixed-precision tools.

Each group alone is quantized to the lowest precision the profile runs, everything else left
float, and the accuracy of that ONNX file in ONNX Runtime is measured. The result is plain data
stored with the study; it orders the groups and seeds the search with one trial that quantizes
the groups that tolerate it. Every variant reuses one calibration of the float model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from search.compress.calibration import Calibration
from search.compress.quantize import QuantizeSpace, quantize

# Lower index = fewer bits (fp16 before int16: on GPUs it is the next step after int8); the
# sensitivity pass uses the lowest one the profile allows.
_BY_BITS = ["int4", "int8", "fp16", "int16"]


def lowest_precision(choices: list[str]) -> str | None:
    """The quantized precision with the fewest bits among ``choices`` (None if only float)."""
    return next((p for p in _BY_BITS if p in choices), None)


def sensitivity_pass(
    calibration: Calibration,
    *,
    space: QuantizeSpace,
    precision: str,
    activations: str,
    weights: str,
    evaluate: Callable[[Path], float],
    out_dir: Path,
) -> dict[str, Any]:
    """Accuracy with only one group at ``precision``, for each group; plain data.

    Returns:
        ``{"precision", "float_accuracy", "groups": {group: {"accuracy", "drop",
        "layer_types"}}, "order"}`` where ``order`` lists groups from most to least sensitive.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    reference = evaluate(calibration.model)
    groups: dict[str, Any] = {}
    for group in space.groups:
        plan = {g: (precision if g == group else "float") for g in space.groups}
        q = quantize(
            calibration,
            out_dir / f"{group}.q.onnx",
            plan=plan,
            groups=space.groups,
            activations=activations,  # type: ignore[arg-type]
            weights=weights,  # type: ignore[arg-type]
            ungrouped="float",  # only this group is quantized
        )
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
        "calibration": calibration.method,
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


def study_references(onnx_path: Path, *, ctx: Any, out_dir: Path) -> dict[str, Any]:
    """The study's one-off quantization references for the uncompressed model ``onnx_path``.

    Runs the sensitivity pass (scored on the validation split, so the test split stays unseen
    by the search) and measures the uniform-int8 model like any trial. Both reuse one MinMax
    calibration of ``onnx_path``. Returns plain data: ``sensitivity``, ``int8`` (a trial-like
    record) and ``seed`` (Optuna params for one seeded trial).
    """
    from search.compress.calibration import calibrate
    from search.measure import run_batches
    from search.measure.kernels import kernel_report
    from search.measure.runtime import create_session
    from search.tasks import stack
    from search.trial import measurement_record, score

    space, profile = ctx.space.quantize, ctx.profile
    choices = space.choices(profile.precisions)
    activations, weights = choices["activations"][0], choices["weights"][0]
    calib = calibrate(
        onnx_path, ctx.calib_inputs, method="minmax", cache_dir=out_dir / "calibration"
    )
    x_val, y_val = stack(ctx.task.val)

    def evaluate(path: Path) -> float:
        outputs = run_batches(create_session(path, profile), x_val.numpy())
        return ctx.task.metric(outputs, y_val.numpy())

    result: dict[str, Any] = {"sensitivity": None, "int8": None, "seed": {}}
    all_choices = sorted({c for g in space.groups for c in choices[f"precision_{g}"]})
    low = lowest_precision(all_choices)
    # The pass scores each variant in a local session; a profile measured through an agent may
    # not run here at all, so it goes without (the seeded trial then is not added).
    if low is not None and space.sensitivity and not getattr(profile, "agent", None):
        sens = sensitivity_pass(
            calib,
            space=space,
            precision=low,
            activations=activations,
            weights=weights,
            evaluate=evaluate,
            out_dir=out_dir / "sensitivity",
        )
        result["sensitivity"] = sens
        result["seed"] = seed_params(sens, choices=choices, tolerance=space.tolerance)
    if "int8" not in profile.precisions.layer:
        return result
    q = quantize(
        calib,
        out_dir / "model.int8.q.onnx",
        plan={g: "int8" for g in space.groups},
        groups=space.groups,
        activations=activations,  # type: ignore[arg-type]
        weights=weights,  # type: ignore[arg-type]
        ungrouped="quantize",
    )
    metric, m = score(q.path, ctx)
    result["int8"] = {
        **measurement_record(metric, m),
        "quantize": {**q.to_dict(), "calibration": calib.key, "activations": activations},
        "kernels": kernel_report(q.path, profile, out_dir / "model.int8.opt.onnx"),
    }
    return result
