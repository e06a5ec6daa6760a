"""One trial as an ordered pipeline of small steps: prune, distill, export, measure.

Each step is a plain function with explicit inputs and outputs; this module only wires them
together, times them and records what each did.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from search.compress import distill as kd
from search.compress.calibration import calibrate
from search.compress.lowrank import apply_lowrank
from search.compress.prune import count_macs, count_params, prune_with_report
from search.compress.quantize import (
    half_only,
    is_quantized,
    needs_calibration,
    quantize,
)
from search.config import Profile, Space, TrialConfig
from search.measure import Measurement
from search.measure.export import export_onnx
from search.measure.kernels import kernel_report
from search.tasks import Task, stack

MeasureFn = Callable[[Path], Measurement]


@dataclass
class Context:
    """What every trial of a study shares: the task, the targets, and precomputed data."""

    task: Task
    space: Space
    profile: Profile
    seed: int
    measure: MeasureFn
    teacher_logits: torch.Tensor
    eval_inputs: np.ndarray
    eval_labels: np.ndarray
    baseline_val: float
    base_size: dict[str, int] = field(default_factory=dict)  # params/MACs of the base model
    calib_inputs: np.ndarray | None = None  # quantization calibration inputs, fixed per study

    @classmethod
    def build(
        cls, *, task: Task, space: Space, profile: Profile, seed: int, measure: MeasureFn
    ) -> Context:
        # The teacher is frozen and the training data is fixed, so its logits are computed once.
        teacher_logits = kd.predict(task.model, task.train)
        x_test, y_test = stack(task.test)
        x_calib, _ = stack(task.calibration, limit=space.quantize.calibration_samples)
        return cls(
            task=task,
            space=space,
            profile=profile,
            seed=seed,
            measure=measure,
            teacher_logits=teacher_logits,
            eval_inputs=x_test.numpy(),
            eval_labels=y_test.numpy(),
            baseline_val=kd.evaluate(task.model, task.val, task.metric),
            # The base model never changes: count its parameters and MACs once, not per trial.
            base_size=_size(task.model, task.example_input),
            calib_inputs=x_calib.numpy(),
        )


@dataclass
class TrialResult:
    """The objectives and the JSON-ready record of everything the trial did."""

    accuracy: float
    latency_ms: float
    record: dict[str, Any] = field(default_factory=dict)


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - start, 3)


def _size(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    return {"params": count_params(model), "macs": count_macs(model, example_input)}


def score(path: Path, ctx: Context) -> tuple[float, Measurement]:
    """Measure ``path`` and compute the task metric from the ONNX Runtime outputs."""
    measurement = ctx.measure(path)
    return ctx.task.metric(measurement.outputs, ctx.eval_labels), measurement


def measurement_record(metric: float, m: Measurement) -> dict[str, Any]:
    first = m.latency[0]
    return {
        "accuracy": metric,
        "latency_p50_ms": first.p50_ms,
        "latency_p90_ms": first.p90_ms,
        "latency_cv": first.cv,
        "peak_memory_mb": m.memory.inference_mb,
        "size_mb": m.size_bytes / 1e6,
        "measurement": m.summary(),
    }


def run_trial(
    cfg: TrialConfig,
    *,
    ctx: Context,
    out_dir: Path,
    on_epoch: Callable[[int, float], None] | None = None,
    on_step: Callable[[], None] | None = None,
) -> TrialResult:
    """Build, fine-tune, export and measure one compressed model; artifacts go to ``out_dir``.

    ``on_epoch(epoch, val_metric)`` is called after each distillation epoch and may raise
    ``optuna.TrialPruned`` to stop a hopeless trial.
    """
    task, profile, timer = ctx.task, ctx.profile, _Timer()
    out_dir.mkdir(parents=True, exist_ok=True)
    x = task.example_input
    sizes = {"base": dict(ctx.base_size) or _size(task.model, x)}

    with timer.step("prune"):
        student, pruning = prune_with_report(
            task.model,
            ratio=cfg.prune_ratio,
            example_input=x,
            ignored_layers=task.ignored_layers or None,
            round_to=profile.round_to,
            importance=ctx.space.prune.importance,
            max_layer_ratio=ctx.space.prune.max_layer_ratio,
        )
    sizes["prune"] = _size(student, x)

    # After pruning (it needs the unfactorized graph), before distillation (which repairs what
    # the truncation lost).
    with timer.step("lowrank"):
        student, lowrank_layers = apply_lowrank(
            student,
            space=ctx.space.lowrank,
            apply=cfg.lowrank,
            kind=cfg.lowrank_kind,
            rank_ratio=cfg.lowrank_ratio,
            group_ratios=cfg.lowrank_group_ratios,
            example_input=x,
            round_to=profile.round_to,
        )
    sizes["lowrank"] = _size(student, x)

    val_history: list[float] = []

    def epoch_done(epoch: int) -> None:
        val = kd.evaluate(student, task.val, task.metric)
        val_history.append(val)
        if on_epoch is not None:
            on_epoch(epoch, val)

    with timer.step("distill"):
        torch.manual_seed(ctx.seed)
        kd.train(
            student,
            data=task.train,
            epochs=cfg.epochs,
            lr=cfg.lr,
            batch_size=cfg.batch_size,
            seed=ctx.seed,
            teacher_logits=ctx.teacher_logits,
            temperature=cfg.temperature,
            alpha=cfg.alpha,
            on_epoch=epoch_done,
            on_step=on_step,
        )

    with timer.step("export"):
        onnx_path = export_onnx(student, x, out_dir / "model.onnx")
        torch.save(student, out_dir / "model.pt")

    # The measured artifact is model.q.onnx when any group is quantized or float16; model.onnx
    # stays float. Plans with fp16 but no integer precision need no calibration.
    measured, quant = onnx_path, {"quantized": False}
    if is_quantized(cfg.precision):
        groups, calib = ctx.space.quantize.groups, None
        if needs_calibration(cfg.precision):
            with timer.step("calibrate"):
                calib = calibrate(
                    onnx_path,
                    ctx.calib_inputs,
                    method=cfg.calibration,
                    cache_dir=out_dir / "calib",
                )
        with timer.step("quantize" if calib else "fp16"):
            if calib is None:
                q = half_only(
                    onnx_path, out_dir / "model.q.onnx", plan=cfg.precision, groups=groups
                )
            else:
                q = quantize(
                    calib,
                    out_dir / "model.q.onnx",
                    plan=cfg.precision,
                    groups=groups,
                    activations=cfg.activations,
                    weights=cfg.weights,
                    # Nodes outside every group become int8 only where the profile runs int8.
                    ungrouped=ctx.space.quantize.ungrouped
                    if "int8" in profile.precisions.layer
                    else "float",
                )
        measured = q.path
        quant = {"quantized": True, **q.to_dict(), "calibration": calib.key if calib else None}
    with timer.step("kernels"):
        kernels = kernel_report(measured, profile, out_dir / "model.opt.onnx")

    with timer.step("measure"):
        metric, measurement = score(measured, ctx)

    record = {
        "config": cfg.to_dict(),
        **measurement_record(metric, measurement),
        "val_history": val_history,
        "sizes": sizes,
        "quantize": quant,
        "kernels": kernels,
        # Layers pruning had to leave alone (heads, unrecognised attention) and why.
        "pruning": pruning.to_dict(),
        "lowrank_layers": [r.to_dict() for r in lowrank_layers],
        "timings_s": timer.seconds,
        "artifacts": str(out_dir),
        "onnx": str(onnx_path),
        "measured_onnx": str(measured),
    }
    (out_dir / "trial.json").write_text(json.dumps(record, indent=2, default=str))
    return TrialResult(accuracy=metric, latency_ms=measurement.latency[0].p50_ms, record=record)
