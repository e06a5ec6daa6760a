"""What every trial of a study shares, and how a measured file becomes a record.

:class:`Context` holds the task, the space, the profile, where measurements run and the data
fixed for the whole study (the teacher's logits, the evaluation and calibration inputs, the
baseline's validation metric). :func:`score` measures a file and computes the task metric;
:func:`measurement_record` is the part of a trial record every measured file has.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search.compress import distill as kd
from search.compress.prune import count_macs, count_params
from search.config import Profile, Space
from search.errors import TaskError
from search.measure.kernels import kernel_report
from search.measure.measurement import Measurement
from search.tasks import Task, stack

if TYPE_CHECKING:
    import torch
    from torch import nn

    from search.compress.prune_plan import PrunePlan
    from search.students import StudentStore

MeasureFn = Callable[[Path], Measurement]


class MetricError(TaskError):
    """The task's metric returned something that is not a finite number."""


def checked_metric(value: Any, name: str, where: str) -> float:
    """``value`` as a float, or a one-line :class:`MetricError` naming the metric and where it
    was computed."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise MetricError(
            f"the task's metric {name!r} returned {value!r} on {where}, not a finite number: "
            "fix the metric (e.g. a class missing from the split gives 0/0)"
        )
    return number


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
    # The study's pruning dry run (left-alone layers); None plans in each trial, unbounded.
    prune_plan: PrunePlan | None = None
    # Distilled students shared by trials that differ only in their precision plan (None: every
    # trial distills its own; see search.students).
    students: StudentStore | None = None

    @classmethod
    def build(
        cls,
        *,
        task: Task,
        space: Space,
        profile: Profile,
        seed: int,
        measure: MeasureFn,
        prune_plan: PrunePlan | None = None,
    ) -> Context:
        """Compute the study's fixed data once: teacher logits over the training split, the
        test split as arrays, the calibration inputs and the base model's size."""
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
            baseline_val=checked_metric(
                kd.evaluate(task.model, task.val, task.metric),
                task.metric_name,
                "the validation split (the uncompressed model)",
            ),
            # The base model never changes: count its parameters and MACs once, not per trial.
            base_size=model_size(task.model, task.example_input),
            calib_inputs=x_calib.numpy(),
            prune_plan=prune_plan,
        )

    def kernel_report(self, path: Path, out_path: Path) -> dict[str, Any]:
        """What really ran as integer/fp16 kernels in ``path`` (see
        :func:`search.measure.kernels.kernel_report`), or why that is not known."""
        if self.profile.agent:
            return {
                "unavailable": "kernel counts need a local session; this profile is measured "
                "through an agent"
            }
        return kernel_report(path, self.profile.measure_spec(), out_path)


def model_size(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """``{"params", "macs"}`` of ``model`` at ``example_input``'s shape."""
    return {"params": count_params(model), "macs": count_macs(model, example_input)}


def score(path: Path, ctx: Context) -> tuple[float, Measurement]:
    """Measure ``path`` and compute the task metric from the ONNX Runtime outputs.

    Raises:
        MetricError: the metric is not a finite number.
    """
    measurement = ctx.measure(path)
    task = ctx.task
    metric = task.metric(measurement.outputs, ctx.eval_labels)
    return checked_metric(metric, task.metric_name, f"the test split of {path.name}"), measurement


def measurement_record(metric: float, m: Measurement) -> dict[str, Any]:
    """The record keys every measured file has: the metric (under ``accuracy``), p50/p90
    latency and its spread at the first batch size, peak memory, size, the whole summary."""
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
