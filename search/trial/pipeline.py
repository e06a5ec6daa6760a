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
from typing import TYPE_CHECKING, Any, cast

from search.compress import distill as kd
from search.compress.onnx_export import export_onnx
from search.compress.quantize.audit import group_labels, layer_kernels, layer_kernels_reported
from search.compress.quantize.calibration import CalibMethod, calibrate
from search.compress.quantize.qdq import is_quantized, needs_calibration
from search.compress.quantize.step import quantize_step
from search.compress.steps import ModelEnv, model_steps
from search.config import TrialConfig
from search.core.device import current as train_device
from search.core.device import describe as describe_device
from search.core.errors import describe
from search.core.paths import MODEL_ONNX, MODEL_OPT, MODEL_QDQ, PROGRAM, TRIAL_JSON
from search.errors import AgentError, ProviderError
from search.record import TrialRecord
from search.trial.context import Context, kernels_of, measurement_record, model_size, score
from search.trial.programs import try_save_program
from search.trial.students import Student, link_or_copy

if TYPE_CHECKING:
    from torch import nn


@dataclass
class _Draft:
    """What the steps of one trial recorded so far (becomes its :class:`TrialRecord`)."""

    sizes: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, Any] = field(default_factory=dict)
    val_history: list[float] = field(default_factory=list)
    program: dict[str, Any] = field(default_factory=dict)
    student: str | None = None
    reused_student: dict[str, Any] | None = None
    quantize: dict[str, Any] = field(default_factory=dict)
    weight_groups: dict[str, Any] = field(default_factory=dict)
    kernels: dict[str, Any] = field(default_factory=dict)
    ran: dict[str, str] = field(default_factory=dict)


class StepError(RuntimeError):
    """A step of a trial failed; the message is ``<step>: <Type>: <what> at <file:line>``."""

    def __init__(self, step: str, cause: BaseException) -> None:
        self.step = step
        super().__init__(f"{step}: {describe(cause)}")


# Raised through unchanged: a trial stopped early, or the target (not the trial) failed.
_PASS_THROUGH: tuple[type[BaseException], ...] = (StepError, AgentError, ProviderError)


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
        except optuna.TrialPruned:
            raise
        except _PASS_THROUGH:
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
) -> TrialRecord:
    """Build, fine-tune, export and measure one compressed model; artifacts go to ``out_dir``
    (``trial.json`` is the record as JSON).

    ``on_epoch(epoch, val_metric)`` is called after each distillation epoch and may raise
    ``optuna.TrialPruned`` to stop a hopeless trial. With a student store in ``ctx``, a student
    distilled before (same student steps' parts) is loaded instead of distilled again, and a
    new one is stored for later trials (``number`` says which trial made it).

    Raises:
        StepError: a step failed (its message names the step).
    """
    timer, draft = _Timer(), _Draft()
    out_dir.mkdir(parents=True, exist_ok=True)
    student = _compress(cfg, ctx=ctx, timer=timer, draft=draft)
    onnx_path, cached = _student(
        student, cfg, ctx=ctx, draft=draft, out_dir=out_dir, timer=timer, on_epoch=on_epoch,
        number=number,
    )  # fmt: skip
    calib_dir = cached.calib_dir if cached is not None else out_dir / "calib"
    measured = _quantize(
        cfg, ctx=ctx, onnx_path=onnx_path, timer=timer, calib_dir=calib_dir, draft=draft
    )
    with timer.step("kernels"):  # here; where measured elsewhere, the target audits it
        local = ctx.kernel_report(measured, out_dir / MODEL_OPT)
    with timer.step("measure"):
        metric, measurement = score(measured, ctx)
    draft.kernels = kernels_of(local, measurement)
    draft.ran = _ran(draft, ctx)
    base = measurement_record(metric, measurement, ctx).to_json()
    record = TrialRecord.from_json({
        **base,
        **{k: v for k, v in vars(draft).items() if k != "weight_groups"},
        "config": cfg.to_dict(),
        "timings_s": timer.seconds,
        "train_device": describe_device(train_device()),
        "artifacts": str(out_dir),
        "onnx": str(onnx_path),
        "measured_onnx": str(measured),
    })  # fmt: skip
    (out_dir / TRIAL_JSON).write_text(json.dumps(record.to_json(), indent=2))
    return record


def _student(
    student: nn.Module,
    cfg: TrialConfig,
    *,
    ctx: Context,
    draft: _Draft,
    out_dir: Path,
    timer: _Timer,
    on_epoch: Callable[[int, float], None] | None,
    number: int | None,
) -> tuple[Path, Student | None]:
    """Distill and export ``student`` (then store it), or load a cached one and reuse its
    export and program: the float ONNX file and the cached student (None without a store)."""
    cached = _cached_student(cfg, ctx=ctx, draft=draft)
    if cached is not None:  # distilled and exported by an earlier trial: reuse both
        with timer.step("load_student"):
            cached.load_into(student)
            onnx_path = link_or_copy(cached.onnx, out_dir / MODEL_ONNX)
            if cached.program.is_file():
                link_or_copy(cached.program, out_dir / PROGRAM)
        draft.val_history = list(cached.val_history)
        draft.program = dict(cached.program_info)
        return onnx_path, cached
    draft.val_history = _distill(student, cfg, ctx=ctx, timer=timer, on_epoch=on_epoch)
    with timer.step("export"):
        onnx_path = export_onnx(
            student, ctx.task.example_input, out_dir / MODEL_ONNX, names=ctx.output_names
        )
    with timer.step("program"):  # the torch model as data (model.pt2), never as a pickle
        draft.program = try_save_program(student, ctx.task.example_input, out_dir / PROGRAM)
    stored = _store_student(
        student, ctx=ctx, draft=draft, onnx_path=onnx_path, timer=timer, number=number
    )
    return onnx_path, stored


def _cached_student(cfg: TrialConfig, *, ctx: Context, draft: _Draft) -> Student | None:
    """The cached student of ``cfg`` (None without a store or a hit); the record says which
    student the trial has (``student``) and, on a hit, whose distillation it reused
    (``reused_student``: the digest and the trial that distilled it)."""
    if ctx.students is None:
        return None
    digest = ctx.students.digest(cfg)
    draft.student = digest
    cached = ctx.students.find(digest)
    draft.reused_student = {"digest": digest, "trial": cached.trial} if cached else None
    return cached


def _store_student(
    student: nn.Module,
    *,
    ctx: Context,
    draft: _Draft,
    onnx_path: Path,
    timer: _Timer,
    number: int | None,
) -> Student | None:
    """Keep a freshly distilled student for later plans (None without a store)."""
    if ctx.students is None or draft.student is None:
        return None
    return ctx.students.save(
        draft.student,
        model=student,
        onnx_path=onnx_path,
        trial=number,
        val_history=draft.val_history,
        distill_s=timer.seconds.get("distill"),
        program=draft.program,
    )


def _compress(cfg: TrialConfig, *, ctx: Context, timer: _Timer, draft: _Draft) -> nn.Module:
    """Every model step of the registry in pipeline order (prune, then low-rank): the student,
    and in ``draft`` what each did and the model's size after it."""
    task, x = ctx.task, ctx.task.example_input
    env = ModelEnv(
        example_input=x,
        round_to=ctx.profile.round_to,
        ignored_layers=list(task.ignored_layers),
        prune_plan=ctx.prune_plan,
    )
    draft.sizes["base"] = dict(ctx.base_size) or model_size(task.model, x)
    student = task.model
    for step in model_steps(ctx.space.steps):
        assert step.apply is not None  # the registry checks model steps have one
        with timer.step(step.name):
            section = ctx.space.section(step.name)
            student, draft.steps[step.name] = step.apply(
                student, cfg.part(step.name), section, env
            )
        draft.sizes[step.name] = model_size(student, x)
    return student


def _distill(
    student: nn.Module,
    cfg: TrialConfig,
    *,
    ctx: Context,
    timer: _Timer,
    on_epoch: Callable[[int, float], None] | None,
) -> list[float]:
    """Fine-tune ``student`` against the teacher in place; its validation metric per epoch."""
    task, history = ctx.task, []

    def epoch_done(epoch: int) -> None:
        history.append(kd.evaluate(student, task.val, task.metric, read=task.outputs.read))
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
            loss=task.outputs.distill_loss,
        )
    return history


def _quantize(
    cfg: TrialConfig,
    *,
    ctx: Context,
    onnx_path: Path,
    timer: _Timer,
    calib_dir: Path,
    draft: _Draft,
) -> Path:
    """The measured file (``model.q.onnx`` when any group is quantized or float16, else
    ``model.onnx`` itself); what quantization did goes into ``draft``. Plans with fp16 but no
    integer precision need no calibration."""
    plan = cfg.quantize.precision
    if not is_quantized(plan):
        draft.quantize = {"quantized": False}
        return onnx_path
    calib = None
    if needs_calibration(plan):
        assert ctx.calib_inputs is not None  # the study's setup fixes them for every trial
        with timer.step("calibrate"):
            calib = calibrate(
                onnx_path,
                ctx.calib_inputs,
                method=cast(CalibMethod, cfg.quantize.calibration),  # QuantizeConfig checks it
                cache_dir=calib_dir,
            )
    with timer.step("quantize" if calib else "fp16"):
        q = quantize_step(
            onnx_path,
            cfg.quantize,
            space=ctx.space.quantize,
            calibration=calib,
            out_path=onnx_path.parent / MODEL_QDQ,
            int8_runs="int8" in ctx.profile.precisions.layer,
        )
    notes = list(calib.notes) if calib else []
    key = calib.key if calib else None
    draft.quantize = {"quantized": True, **q.to_dict(), "calibration": key, "notes": notes}
    draft.weight_groups = dict(q.weight_groups)
    return q.path


def _ran(draft: _Draft, ctx: Context) -> dict[str, str]:
    """Group -> what its layers ran at, from the optimized graph
    (:mod:`search.compress.quantize.audit`); every group ``float`` when nothing was quantized;
    ``{}`` when the graph is not known. Where the provider reported per layer instead (OpenVINO,
    QNN, an agent) that report says it."""
    import onnx

    if not draft.quantize.get("quantized"):
        return dict.fromkeys(ctx.space.quantize.groups, "float")
    graph = draft.kernels.get("optimized_graph")
    reported = draft.kernels.get("ran_weights")
    stored = draft.quantize["layer_types"]
    if graph:
        ran = layer_kernels(onnx.load(graph, load_external_data=False), stored)
    elif isinstance(reported, dict):
        ran = layer_kernels_reported(reported, stored)
    else:
        return {}
    return group_labels(ran, draft.weight_groups)
