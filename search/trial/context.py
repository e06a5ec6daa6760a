"""What every trial of a study shares, and how a measured file becomes a record.

:class:`Context` holds the task, the space, the profile, where measurements run and the data
fixed for the whole study (the teacher's logits, the evaluation and calibration inputs, the
baseline's validation metric). :func:`score` measures a file and computes the task metric;
:func:`measurement_record` is the part of a trial record every measured file has: the
validation metric (the objective), the test metric, paired latency, load and noise flags.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search.compress import distill as kd
from search.compress.prune.plan import output_shapes
from search.compress.prune.step import count_macs, count_params
from search.config import Profile, Space
from search.errors import TaskError
from search.measure.kernels import kernel_report
from search.measure.measurement import Measurement
from search.record import Measured
from search.tasks import Task, stack

if TYPE_CHECKING:
    import torch
    from torch import nn

    from search.compress.prune.plan import PrunePlan
    from search.trial.students import StudentStore

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
    """What every trial of a study shares: the task, the targets, and precomputed data.

    ``eval_inputs`` are the validation inputs followed by the test inputs (one pass of the
    session scores both); the first ``len(eval_labels)`` outputs give the objective
    (validation), the rest ``test_accuracy`` (None when the task has no test split of its own).
    ``reference`` is the baseline's ONNX file every trial's latency is paired with and
    ``latency_scale_ms`` the baseline's p50 the relative latencies are multiplied by; both are
    set once the baseline is measured (:func:`search.study.references.ensure_baseline`).
    """

    task: Task
    space: Space
    profile: Profile
    seed: int
    measure: MeasureFn
    # The teacher's raw outputs over the training split (a tuple of tensors, one row per item),
    # or the teacher module itself when they would not fit in memory (run on each batch).
    teacher_logits: tuple[torch.Tensor, ...] | nn.Module
    eval_inputs: np.ndarray
    eval_labels: np.ndarray
    baseline_val: float
    base_size: dict[str, int] = field(default_factory=dict)  # params/MACs of the base model
    calib_inputs: np.ndarray | None = None  # quantization calibration inputs, fixed per study
    # The study's pruning dry run (left-alone layers); None plans in each trial, unbounded.
    prune_plan: PrunePlan | None = None
    test_labels: np.ndarray | None = None
    reference: Path | None = None
    latency_scale_ms: float | None = None
    # Distilled students shared by trials that differ only in their precision plan (None: every
    # trial distills its own; see search.trial.students).
    students: StudentStore | None = None
    output_names: tuple[str, ...] = ("output",)  # the exported files' outputs
    # False where files are measured elsewhere (an agent, a runtime of its own): what ran is
    # then audited there and comes back with the measurement (kernels_of).
    measured_here: bool = True
    # The file's outputs over ``eval_inputs`` where it is measured, for the sensitivity pass when
    # that is not here (None: a session here).
    outputs: Callable[[Path], list[np.ndarray]] | None = None

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
        """Compute the study's fixed data once: teacher outputs over the training split, the
        validation (and test) split as arrays, the calibration inputs and the base model's
        size."""
        # The teacher is frozen and the training data is fixed, so its outputs are computed
        # once, unless they would take more memory than TEACHER_OUTPUTS_BYTES.
        teacher_logits = teacher_outputs(task)
        names = task.outputs.output_names(len(output_shapes(task.model, task.example_input)))
        x_val, y_val = stack(task.val)
        inputs, test_labels = x_val.numpy(), None
        if task.has_test_split:
            x_test, y_test = stack(task.test)
            inputs = np.concatenate([inputs, x_test.numpy()])
            test_labels = y_test.numpy()
        x_calib, _ = stack(task.calibration, limit=space.quantize.calibration_samples)
        return cls(
            task=task,
            space=space,
            profile=profile,
            seed=seed,
            measure=measure,
            teacher_logits=teacher_logits,
            eval_inputs=inputs,
            eval_labels=y_val.numpy(),
            baseline_val=checked_metric(
                kd.evaluate(task.model, task.val, task.metric, read=task.outputs.read),
                task.metric_name,
                "the validation split (the uncompressed model)",
            ),
            # The base model never changes: count its parameters and MACs once, not per trial.
            base_size=model_size(task.model, task.example_input),
            calib_inputs=x_calib.numpy(),
            prune_plan=prune_plan,
            test_labels=test_labels,
            output_names=names,
        )

    def kernel_report(self, path: Path, out_path: Path) -> dict[str, Any] | None:
        """What really ran as integer/fp16 kernels in ``path`` (see
        :func:`search.measure.kernels.kernel_report`), or why that is not known; None where
        files are measured elsewhere (the measurement brings it: :func:`kernels_of`)."""
        if not self.measured_here:
            return None
        return kernel_report(path, self.profile.measure_spec(), out_path)


TEACHER_OUTPUTS_BYTES = 1 << 30  # kept in memory up to this size, else computed per batch


def teacher_outputs(task: Task) -> tuple[torch.Tensor, ...] | nn.Module:
    """The teacher's raw outputs over ``task.train`` (float32, on the CPU), or the teacher
    itself when they would take more than :data:`TEACHER_OUTPUTS_BYTES` (a detector's
    per-anchor scores over thousands of images)."""
    import torch

    with torch.no_grad():
        one = kd.as_tuple(task.model.eval()(task.example_input[:1]))
    per_item = sum(4 * o[0].numel() for o in one)
    if per_item * len(task.train) > TEACHER_OUTPUTS_BYTES:  # type: ignore[arg-type]
        return task.model
    return kd.predict_outputs(task.model, task.train)


def kernels_of(local: dict[str, Any] | None, m: Measurement) -> dict[str, Any]:
    """The kernel report of a measured file: ``local`` (computed here), else the one the target
    computed where the model ran (``m.extra["kernels"]``), else why there is none."""
    if local is not None:
        return local
    remote = m.extra.get("kernels")
    if isinstance(remote, dict):
        return remote
    return {"unavailable": f"the target ({m.extra.get('measured_by', '?')}) sent no kernel audit"}


def model_size(model: nn.Module, example_input: torch.Tensor) -> dict[str, int]:
    """``{"params", "macs"}`` of ``model`` at ``example_input``'s shape."""
    return {"params": count_params(model), "macs": count_macs(model, example_input)}


def score(path: Path, ctx: Context) -> tuple[float, Measurement]:
    """Measure ``path`` and compute the task metric on the validation split (the objective)
    from the ONNX Runtime outputs.

    Raises:
        MetricError: the metric is not a finite number.
    """
    measurement = ctx.measure(path)
    task, n_val = ctx.task, len(ctx.eval_labels)
    metric = task.metric(task.outputs.read([o[:n_val] for o in measurement.outputs]),
                         ctx.eval_labels)  # fmt: skip
    where = f"the validation split of {path.name}"
    return checked_metric(metric, task.metric_name, where), measurement


def metric_on_test(ctx: Context, m: Measurement) -> float | None:
    """The task metric of ``m``'s outputs on the test split; None without a test split."""
    if ctx.test_labels is None:
        return None
    n_val = len(ctx.eval_labels)
    metric = ctx.task.metric(ctx.task.outputs.read([o[n_val:] for o in m.outputs]),
                             ctx.test_labels)  # fmt: skip
    return checked_metric(metric, ctx.task.metric_name, "the test split")


def measurement_record(metric: float, m: Measurement, ctx: Context) -> Measured:
    """The record every measured file has, at the first batch size (:class:`Measured`).

    ``accuracy`` is the validation metric (the objective) and ``test_accuracy`` the test
    metric (the figure to quote). ``latency_paired_ms`` is the latency objective: with a paired
    measurement the relative latency times ``ctx.latency_scale_ms`` (the baseline's p50 when the
    study started), which stays comparable however loaded the machine was
    (:mod:`search.measure.paired`); otherwise the measured p50. ``latency_measured_p50_ms``,
    ``latency_p90_ms`` and ``latency_cv`` are what was measured in this window (they move with
    the load). ``busy`` and ``noisy`` say whether other processes used the cores while latency
    was timed and whether the paired spread stayed above the profile's threshold.
    """
    first = m.latency[0]
    paired = m.extra.get("paired")
    load = m.extra.get("load") or {}
    objective = first.p50_ms
    if paired and ctx.latency_scale_ms:
        objective = paired["relative"] * ctx.latency_scale_ms
    return Measured(
        accuracy=metric,
        test_accuracy=metric_on_test(ctx, m),
        latency_paired_ms=objective,
        latency_measured_p50_ms=first.p50_ms,
        latency_p90_ms=first.p90_ms,
        latency_cv=first.cv,
        latency_relative=paired["relative"] if paired else None,
        latency_relative_ci=[paired["ci_low"], paired["ci_high"]] if paired else None,
        noisy=bool(m.extra.get("noisy", False)),
        busy=load.get("busy"),
        peak_memory_mb=m.memory.inference_mb,
        size_mb=m.size_bytes / 1e6,
        measurement=m.summary(),
    )


def latency_scale(m: Measurement) -> float:
    """The baseline's p50 the study's relative latencies are multiplied by: the thread CPU time's
    p50 where the runs were timed that way (the run's own work, unaffected by preemption), else
    the wall-time p50."""
    first = m.latency[0]
    return first.cpu_p50_ms if first.cpu_p50_ms is not None else first.p50_ms
