"""A trial's quantization step: its plan written to a file, and a group that cannot be quantized
kept in float with the reason instead of failing the trial.

ONNX Runtime's quantizer can raise on an op it does not handle in some type (an int4 override
on a layer type, a graph shape it does not expect). When the whole plan fails, each integer
group is tried alone; the groups that fail alone stay float (with their error), and so do the
nodes outside every group when only they fail; the rest of the plan is quantized as asked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from search.compress.quantize.calibration import Calibration
from search.compress.quantize.qdq import (
    INTEGER_PRECISIONS,
    QuantizeConfig,
    QuantizeResult,
    QuantizeSpace,
    half_only,
    quantize,
)

OUTSIDE = "(nodes outside every group)"


def _why(e: BaseException) -> str:
    from search.core.errors import describe

    return describe(e, 160)


def quantize_step(
    onnx_path: Path,
    cfg: QuantizeConfig,
    *,
    space: QuantizeSpace,
    calibration: Calibration | None,
    out_path: Path,
    int8_runs: bool,
) -> QuantizeResult:
    """Write ``cfg``'s plan of ``onnx_path`` to ``out_path``.

    ``calibration`` is None for plans without integer precisions (fp16 groups only): nothing is
    calibrated or quantized then. Nodes outside every group follow the space's ``ungrouped``
    only where the profile runs int8 (``int8_runs``); elsewhere they stay float. The result's
    ``kept_float`` maps each group that could not be quantized to the reason.

    Raises:
        Exception: what ONNX Runtime raised, when even the plan without the failing groups
            cannot be written.
    """
    if calibration is None:
        return half_only(onnx_path, out_path, plan=cfg.precision, groups=space.groups)
    options: dict[str, Any] = {
        "groups": space.groups,
        "activations": cfg.activations,
        "weights": cfg.weights,
        "ungrouped": space.ungrouped if int8_runs else "float",
    }
    try:
        return quantize(calibration, out_path, plan=cfg.precision, **options)
    except Exception as e:  # noqa: BLE001 - find the groups that cannot be quantized
        kept = _unquantizable(calibration, out_path, plan=cfg.precision, options=options)
        if not kept:
            raise
        first = e
    plan = {g: "float" if g in kept else p for g, p in cfg.precision.items()}
    if OUTSIDE in kept:
        options["ungrouped"] = "float"
    try:
        q = quantize(calibration, out_path, plan=plan, **options)
    except Exception:
        raise first from None
    return dataclasses.replace(q, kept_float=kept)


def uniform_int8(
    calibration: Calibration,
    out_path: Path,
    *,
    space: QuantizeSpace,
    activations: str = "uint8",
    weights: str = "signed",
) -> QuantizeResult:
    """Every group at int8 (and the nodes outside every group too): the one uniform-int8
    recipe, the reference a study measures once and the benchmark's sequential pipeline
    (static QDQ, per-channel weights, the calibration's ranges)."""
    cfg = QuantizeConfig(
        precision=dict.fromkeys(space.groups, "int8"), activations=activations, weights=weights
    )
    quantize_space = space.model_copy(update={"ungrouped": "quantize"})
    return quantize_step(
        calibration.model,
        cfg,
        space=quantize_space,
        calibration=calibration,
        out_path=out_path,
        int8_runs=True,
    )


def _unquantizable(
    calibration: Calibration, out_path: Path, *, plan: Mapping[str, str], options: dict[str, Any]
) -> dict[str, str]:
    """Group -> why it cannot be quantized alone (:data:`OUTSIDE` for the ungrouped nodes)."""
    trial_path = out_path.with_name(out_path.stem + ".probe.onnx")
    kept: dict[str, str] = {}
    for group, precision in plan.items():
        if precision not in INTEGER_PRECISIONS:
            continue
        alone = {g: p if g == group else "float" for g, p in plan.items()}
        try:
            quantize(calibration, trial_path, plan=alone, **{**options, "ungrouped": "float"})
        except Exception as e:  # noqa: BLE001 - this group is the one that fails
            kept[group] = f"cannot be quantized to {precision}: {_why(e)}"
    if not kept and options["ungrouped"] == "quantize":
        try:
            quantize(calibration, trial_path, plan=plan, **{**options, "ungrouped": "float"})
            kept[OUTSIDE] = "cannot be quantized with the plan's groups"
        except Exception:  # noqa: BLE001, S110 - not (only) the ungrouped nodes
            pass
    trial_path.unlink(missing_ok=True)
    return kept
