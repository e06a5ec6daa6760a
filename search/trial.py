"""One trial as an ordered pipeline of small steps: prune, low-rank, distill, export, quantize,
count kernels, measure.

Each step is a plain function of its compression module with explicit inputs and outputs (and its
own part of the :class:`~search.config.TrialConfig`); this module only wires them together, times
them and records what each did. A step that raises becomes a :class:`StepError` whose one-line
message starts with the step (``prune: ...``, ``calibrate: ...``) and names the layer or the
file:line where it failed; that is the trial's failure reason in ``trials.csv``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.compress import distill as kd
from search.compress.audit import group_labels, layer_kernels
from search.compress.calibration import calibrate
from search.compress.lowrank import lowrank_step
from search.compress.onnx_export import export_onnx
from search.compress.prune import prune_step
from search.compress.quantize import is_quantized, needs_calibration
from search.compress.quantize_step import quantize_step
from search.config import TrialConfig
from search.context import Context, measurement_record, model_size, score
from search.device import current as train_device
from search.device import describe as describe_device
from search.errors import AgentError, ProviderError
from search.programs import PROGRAM, try_save_program
from search.students import link_or_copy


@dataclass
class TrialResult:
    """The objectives and the JSON-ready record of everything the trial did."""

    accuracy: float
    latency_ms: float
    record: dict[str, Any] = field(default_factory=dict)


class StepError(RuntimeError):
    """A step of a trial failed; the message is ``<step>: <Type>: <what> at <file:line>``."""

    def __init__(self, step: str, cause: BaseException) -> None:
        self.step = step
        super().__init__(f"{step}: {describe(cause)}")


# Raised through unchanged: a trial stopped early, or the target (not the trial) failed.
_PASS_THROUGH: tuple[type[BaseException], ...] = (StepError, AgentError, ProviderError)


def describe(e: BaseException) -> str:
    """``Type: first line at file:line``; where the innermost frame is in a library, also the
    innermost frame of the caller's own code (``(from my_model.py:23)``)."""
    import traceback

    frames = traceback.extract_tb(e.__traceback__) if e.__traceback__ else []
    msg = (str(e).strip().splitlines() or [""])[0][:200]
    if not frames:
        return f"{type(e).__name__}: {msg}"
    name = lambda f: f"{Path(f.filename).name}:{f.lineno}"  # noqa: E731
    where = name(frames[-1])
    if "site-packages" in frames[-1].filename:
        own = [f for f in frames if "site-packages" not in f.filename]
        where += f" (from {name(own[-1])})" if own else ""
    return f"{type(e).__name__}: {msg} at {where}"


def failure_reason(e: BaseException) -> str:
    """The one-line reason a failed trial records: the step and what went wrong."""
    return str(e) if isinstance(e, StepError) else describe(e)


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        import optuna

        start = time.perf_counter()
        try:
            yield
        except (optuna.TrialPruned, *_PASS_THROUGH):
            raise
        except Exception as e:
            raise StepError(name, e) from e
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
    onnx_path, cached = _student(
        student, cfg, ctx=ctx, record=record, out_dir=out_dir, timer=timer, on_epoch=on_epoch,
        number=number,
    )  # fmt: skip
    calib_dir = cached.calib_dir if cached is not None else out_dir / "calib"
    measured, record["quantize"] = _quantize(
        cfg, ctx=ctx, onnx_path=onnx_path, timer=timer, calib_dir=calib_dir
    )
    with timer.step("kernels"):
        record["kernels"] = ctx.kernel_report(measured, out_dir / "model.opt.onnx")
        record["ran"] = _ran(record, cfg, ctx)
    with timer.step("measure"):
        metric, measurement = score(measured, ctx)
    record = {
        "config": cfg.to_dict(),
        **measurement_record(metric, measurement, ctx),
        **record,
        "timings_s": timer.seconds,
        "train_device": describe_device(train_device()),
        "artifacts": str(out_dir),
        "onnx": str(onnx_path),
        "measured_onnx": str(measured),
    }
    (out_dir / "trial.json").write_text(json.dumps(record, indent=2, default=str))
    # The objectives: validation metric, paired latency (see measurement_record).
    return TrialResult(accuracy=metric, latency_ms=record["latency_p50_ms"], record=record)


def _student(
    student: Any,
    cfg: TrialConfig,
    *,
    ctx: Context,
    record: dict[str, Any],
    out_dir: Path,
    timer: _Timer,
    on_epoch: Callable[[int, float], None] | None,
    number: int | None,
) -> tuple[Path, Any]:
    """Distill and export ``student`` (then store it), or load a cached one and reuse its
    export and program: the float ONNX file and the cached student (None without a store)."""
    cached = _cached_student(cfg, ctx=ctx, record=record)
    if cached is not None:  # distilled and exported by an earlier trial: reuse both
        with timer.step("load_student"):
            cached.load_into(student)
            onnx_path = link_or_copy(cached.onnx, out_dir / "model.onnx")
            if cached.program.is_file():
                link_or_copy(cached.program, out_dir / PROGRAM)
        record["val_history"] = cached.val_history
        record["program"] = cached.program_info
        return onnx_path, cached
    record["val_history"] = _distill(student, cfg, ctx=ctx, timer=timer, on_epoch=on_epoch)
    with timer.step("export"):
        onnx_path = export_onnx(student, ctx.task.example_input, out_dir / "model.onnx")
    with timer.step("program"):  # the torch model as data (model.pt2), never as a pickle
        record["program"] = try_save_program(student, ctx.task.example_input, out_dir / PROGRAM)
    cached = _store_student(
        student, ctx=ctx, record=record, onnx_path=onnx_path, timer=timer, number=number
    )
    return onnx_path, cached


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
        program=record.get("program") or {},
    )


def _compress(cfg: TrialConfig, *, ctx: Context, timer: _Timer) -> tuple[Any, dict[str, Any]]:
    """Prune, then factorize: the student and what each step did (sizes after each step,
    layers pruning left alone and why, low-rank records)."""
    task, x, round_to = ctx.task, ctx.task.example_input, ctx.profile.round_to
    sizes = {"base": dict(ctx.base_size) or model_size(task.model, x)}
    with timer.step("prune"):
        student, pruning = prune_step(
            task.model,
            cfg.prune,
            example_input=x,
            ignored_layers=task.ignored_layers or None,
            round_to=round_to,
            plan=ctx.prune_plan,
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
    notes = list(calib.notes) if calib else []
    done = {"quantized": True, **q.to_dict(), "calibration": calib.key if calib else None}
    done["weight_groups"], done["notes"] = q.weight_groups, notes
    return q.path, done


def _ran(record: dict[str, Any], cfg: TrialConfig, ctx: Context) -> dict[str, str]:
    """Group -> what its layers ran at, from the optimized graph (:mod:`search.compress.audit`);
    every group ``float`` when nothing was quantized; ``{}`` when the graph is not known."""
    import onnx

    quant, kernels = record["quantize"], record["kernels"]
    weight_groups = quant.pop("weight_groups", {})
    if not quant.get("quantized"):
        return dict.fromkeys(ctx.space.quantize.groups, "float")
    graph = kernels.get("optimized_graph")
    if not graph:
        return {}
    ran = layer_kernels(onnx.load(graph, load_external_data=False), quant["layer_types"])
    return group_labels(ran, weight_groups)
