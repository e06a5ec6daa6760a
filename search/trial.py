"""One trial as an ordered pipeline of small steps: prune, low-rank, distill, export, quantize,
count kernels, measure.

Each step is a plain function of its compression module with explicit inputs and outputs (and its
own part of the :class:`~search.config.TrialConfig`); this module only wires them together, times
them and records what each did.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from search.compress import distill as kd
from search.compress.calibration import calibrate
from search.compress.lowrank import lowrank_step
from search.compress.onnx_export import export_onnx
from search.compress.prune import prune_step
from search.compress.quantize import is_quantized, needs_calibration, quantize_step
from search.config import TrialConfig
from search.context import Context, measurement_record, model_size, score
from search.device import current, describe
from search.students import link_or_copy


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


def run_trial(
    cfg: TrialConfig,
    *,
    ctx: Context,
    out_dir: Path,
    on_epoch: Callable[[int, float], None] | None = None,
    number: int | None = None,
) -> TrialResult:
    """Build, fine-tune, export and measure one compressed model; artifacts go to ``out_dir``.

    ``on_epoch(epoch, val_metric)`` is called after each distillation epoch and may raise
    ``optuna.TrialPruned`` to stop a hopeless trial. With a student store in ``ctx``, a student
    distilled before (same prune, low-rank and distill parts) is loaded instead of distilled
    again, and a new one is stored for later trials (``number`` says which trial made it).
    """
    timer = _Timer()
    out_dir.mkdir(parents=True, exist_ok=True)
    student, record = _compress(cfg, ctx=ctx, timer=timer)
    cached = _cached_student(cfg, ctx=ctx, record=record)
    if cached is not None:  # distilled and exported by an earlier trial: reuse both
        with timer.step("load_student"):
            cached.load_into(student)
            onnx_path = link_or_copy(cached.onnx, out_dir / "model.onnx")
            torch.save(student, out_dir / "model.pt")
        record["val_history"] = cached.val_history
    else:
        record["val_history"] = _distill(student, cfg, ctx=ctx, timer=timer, on_epoch=on_epoch)
        with timer.step("export"):
            onnx_path = export_onnx(student, ctx.task.example_input, out_dir / "model.onnx")
            torch.save(student, out_dir / "model.pt")
        cached = _store_student(
            student, ctx=ctx, record=record, onnx_path=onnx_path, timer=timer, number=number
        )
    calib_dir = cached.calib_dir if cached is not None else out_dir / "calib"
    measured, record["quantize"] = _quantize(
        cfg, ctx=ctx, onnx_path=onnx_path, timer=timer, calib_dir=calib_dir
    )
    with timer.step("kernels"):
        record["kernels"] = ctx.kernel_report(measured, out_dir / "model.opt.onnx")
    with timer.step("measure"):
        metric, measurement = score(measured, ctx)
    record = {
        "config": cfg.to_dict(),
        **measurement_record(metric, measurement),
        **record,
        "timings_s": timer.seconds,
        "train_device": describe(current()),
        "artifacts": str(out_dir),
        "onnx": str(onnx_path),
        "measured_onnx": str(measured),
    }
    (out_dir / "trial.json").write_text(json.dumps(record, indent=2, default=str))
    return TrialResult(accuracy=metric, latency_ms=measurement.latency[0].p50_ms, record=record)


def _cached_student(cfg: TrialConfig, *, ctx: Context, record: dict[str, Any]) -> Any:
    """The cached student of ``cfg`` (None without a store or a hit); the record says which
    student the trial has (``student``) and, on a hit, whose distillation it reused
    (``reused_student``: the digest and the trial that distilled it)."""
    if ctx.students is None:
        return None
    digest = ctx.students.digest(cfg)
    record["student"] = digest
    cached = ctx.students.find(digest)
    record["reused_student"] = (
        {"digest": digest, "trial": cached.trial} if cached is not None else None
    )
    return cached


def _store_student(
    student: Any,
    *,
    ctx: Context,
    record: dict[str, Any],
    onnx_path: Path,
    timer: _Timer,
    number: int | None,
) -> Any:
    """Keep a freshly distilled student for later plans (None without a store)."""
    if ctx.students is None:
        return None
    return ctx.students.save(
        record["student"],
        model=student,
        onnx_path=onnx_path,
        trial=number,
        val_history=record["val_history"],
        distill_s=timer.seconds.get("distill"),
    )


def _compress(cfg: TrialConfig, *, ctx: Context, timer: _Timer) -> tuple[Any, dict[str, Any]]:
    """Prune, then factorize: the student and what each step did (sizes after each step,
    layers pruning left alone and why, low-rank records)."""
    task, x, round_to = ctx.task, ctx.task.example_input, ctx.profile.round_to
    sizes = {"base": dict(ctx.base_size) or model_size(task.model, x)}
    with timer.step("prune"):
        ignored = task.ignored_layers or None
        student, pruning = prune_step(
            task.model, cfg.prune, example_input=x, ignored_layers=ignored, round_to=round_to
        )
    sizes["prune"] = model_size(student, x)
    # After pruning (it needs the unfactorized graph), before distillation (which repairs what
    # the truncation lost).
    with timer.step("lowrank"):
        student, layers = lowrank_step(
            student, cfg.lowrank, space=ctx.space.lowrank, example_input=x, round_to=round_to
        )
    sizes["lowrank"] = model_size(student, x)
    return student, {
        "sizes": sizes,
        "pruning": pruning.to_dict(),
        "lowrank_layers": [r.to_dict() for r in layers],
    }


def _distill(
    student: Any,
    cfg: TrialConfig,
    *,
    ctx: Context,
    timer: _Timer,
    on_epoch: Callable[[int, float], None] | None,
) -> list[float]:
    """Fine-tune ``student`` against the teacher in place; its validation metric per epoch."""
    task, history = ctx.task, []

    def epoch_done(epoch: int) -> None:
        history.append(kd.evaluate(student, task.val, task.metric))
        if on_epoch is not None:
            on_epoch(epoch, history[-1])

    with timer.step("distill"):
        kd.distill_step(
            student,
            cfg.distill,
            data=task.train,
            teacher_logits=ctx.teacher_logits,
            seed=ctx.seed,
            on_epoch=epoch_done,
        )
    return history


def _quantize(
    cfg: TrialConfig, *, ctx: Context, onnx_path: Path, timer: _Timer, calib_dir: Path
) -> tuple[Path, dict[str, Any]]:
    """The measured file and what quantization did: ``model.q.onnx`` when any group is
    quantized or float16, else ``model.onnx`` itself. Plans with fp16 but no integer precision
    need no calibration."""
    plan = cfg.quantize.precision
    if not is_quantized(plan):
        return onnx_path, {"quantized": False}
    calib = None
    if needs_calibration(plan):
        with timer.step("calibrate"):
            calib = calibrate(
                onnx_path,
                ctx.calib_inputs,
                method=cfg.quantize.calibration,
                cache_dir=calib_dir,
            )
    with timer.step("quantize" if calib else "fp16"):
        q = quantize_step(
            onnx_path,
            cfg.quantize,
            space=ctx.space.quantize,
            calibration=calib,
            out_path=onnx_path.parent / "model.q.onnx",
            int8_runs="int8" in ctx.profile.precisions.layer,
        )
    return q.path, {"quantized": True, **q.to_dict(), "calibration": calib.key if calib else None}
