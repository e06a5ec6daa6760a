"""The benchmark's methods, each run into a :class:`MethodRun` of measured points.

- ``prune``: torch-pruning alone at fixed ratios, each distilled with the largest budget a joint
  trial can get;
- ``sequential``: what an engineer builds by hand with two tools in a row: the ``prune`` models
  (pruned and distilled), then ONNX Runtime's uniform int8 static QDQ of each;
- studies: ``random`` and the joint samplers through :func:`search.study.run_study`, one study
  per method and sampler seed.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict

import numpy as np

from search.bench.metrics import Point
from search.compress.distill import DistillConfig
from search.compress.prune.step import PruneConfig
from search.config import Profile, Space, TrialConfig
from search.errors import SearchError
from search.record import BaselineRecord, TrialRecord, baseline_of
from search.study.warm_start import warm_start_params

if TYPE_CHECKING:
    import optuna

    from search.study.prune_references import PruneReferences
    from search.study.references import QuantizationReferences
    from search.trial.context import Context


class BenchSettings(Protocol):
    """What the methods and the report read of a :class:`~search.bench.run.BenchSpec` (the
    module that defines it imports them, so they cannot import it)."""

    @property
    def task(self) -> str: ...
    @property
    def space(self) -> Space: ...
    @property
    def profile(self) -> Profile: ...
    @property
    def trials(self) -> int: ...
    @property
    def out_dir(self) -> Path: ...
    @property
    def seed(self) -> int: ...
    @property
    def seeds(self) -> int: ...
    @property
    def ratios(self) -> tuple[float, ...]: ...
    @property
    def random_factor(self) -> int: ...
    @property
    def rounds(self) -> int: ...
    @property
    def quiet_wait_s(self) -> float: ...
    @property
    def max_drop(self) -> float: ...
    @property
    def ref_drop(self) -> float: ...
    @property
    def methods(self) -> tuple[str, ...]: ...


class References(TypedDict, total=False):
    """The study references measured once for the whole benchmark: the float baseline, the
    quantization references per plan encoding (``categorical``, ``ordinal``) and the per-group
    pruning sensitivity pass."""

    baseline: BaselineRecord
    quantization: dict[str, QuantizationReferences]
    prune: PruneReferences


# Space variants a joint method can name after a colon (``tpe:global``): the same space with one
# of the new dimensions turned off or on, to measure what it adds.
VARIANTS = {
    "global": "one global prune ratio (no per-group scales)",
    "groups": "per-group prune scales over the precision groups",
}


@dataclass
class MethodRun:
    """One method's measured points, its cost, and the per-step time split of its trials.

    ``seed`` is the sampler seed of a study (None: a method without a sampler). ``base`` holds
    the study's own baseline measurement, which its hypervolume history is normalized by.
    """

    name: str
    trials: int
    wall_s: float
    points: list[Point] = field(default_factory=list)
    distillations: int = 0
    step_seconds: dict[str, float] = field(default_factory=dict)
    base: dict[str, float] = field(default_factory=dict)
    seed: int | None = None
    durations: list[float] = field(default_factory=list)


def measured_onnx(record: TrialRecord) -> Path:
    """The ONNX file a trial was scored on: the quantized one when the trial made one."""
    return Path(record.measured_file)


def method_space(
    space: Space, method: str, *, groups: dict[str, list[str]] | None = None
) -> Space:
    """``space`` searched the way ``method`` says: ``<sampler>`` (categorical precision plan)
    or ``<sampler>-ordinal`` (:mod:`search.compress.quantize.encoding`), optionally
    ``:<variant>`` (:data:`VARIANTS`): ``global`` prunes with one ratio, ``groups`` searches a
    scale per prune group (``groups`` when given, else the precision groups, resolved against
    the model by the study)."""
    method, _, variant = method.partition(":")
    sampler, _, encoding = method.partition("-")
    search = space.search.model_copy(update={"sampler": sampler})
    quantize = space.quantize.model_copy(update={"encoding": encoding or "categorical"})
    update: dict[str, Any] = {"search": search, "quantize": quantize}
    if variant == "global":
        update["prune"] = space.prune.model_copy(update={"groups": {}})
    elif variant == "groups" and not space.prune.group_names:
        update["prune"] = space.prune.model_copy(update={"groups": groups or "quantize"})
    return space.model_copy(update=update)


def default_method(space: Space) -> str:
    """The method name of the space's own sampler and encoding (the default search)."""
    suffix = "-ordinal" if space.quantize.encoding == "ordinal" else ""
    return f"{space.search.sampler}{suffix}"


def distillations(study: optuna.Study) -> int:
    """Students a study distilled: finished trials that did not reuse one (a failed or stopped
    trial paid for its distillation too)."""
    from optuna.trial import TrialState

    count = 0
    for t in study.get_trials(deepcopy=False):
        rec = TrialRecord.of(t) if t.state == TrialState.COMPLETE else None
        count += (rec is not None and rec.reused_student is None) or t.state in (
            TrialState.FAIL, TrialState.PRUNED)  # fmt: skip
    return count


def step_split(records: list[TrialRecord], durations: list[float]) -> dict[str, float]:
    """Mean seconds per trial step; ``other`` is the study's own overhead around the steps."""
    if not records:
        return {}
    steps: dict[str, list[float]] = {}
    for rec in records:
        for k, v in rec.timings_s.items():
            steps.setdefault(k, []).append(float(v))
    out = {k: float(np.mean(v)) for k, v in steps.items()}
    if durations:
        out["other"] = max(0.0, float(np.mean(durations)) - sum(out.values()))
        out["trial"] = float(np.mean(durations))
    return out


def study_points(study: optuna.Study) -> tuple[list[Point], list[TrialRecord], list[float]]:
    """The completed trials as points (``extra["elapsed_s"]``: seconds from the start of the
    study's first trial to the end of this one, failed and stopped trials included), their
    records and durations."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    t0 = min(starts) if starts else None
    points, records, durations = [], [], []
    for t in trials:
        if t.state != TrialState.COMPLETE:
            continue
        rec = TrialRecord.of(t)
        if rec is None:
            continue
        path = measured_onnx(rec)
        end = t.datetime_complete
        elapsed = (end - t0).total_seconds() if t0 and end else 0.0
        points.append(
            Point(
                accuracy=rec.accuracy,
                latency_ms=rec.latency_paired_ms,
                size_bytes=os.path.getsize(path),
                label=f"trial {t.number}",
                order=t.number + 1,
                extra={
                    "onnx": str(path),
                    "params": dict(t.params),
                    "elapsed_s": elapsed,
                    "distilled": rec.reused_student is None,
                    **_study_latency(rec),
                },
            )
        )
        records.append(rec)
        durations.append(float(t.user_attrs.get("duration_s", 0.0)))
    return points, records, durations


def run_study_method(
    spec: BenchSettings,
    *,
    method: str,
    trials: int,
    seed: int,
    refs: References,
    resolved: Space | None = None,
) -> MethodRun:
    """One study of ``method`` with sampler seed ``seed``, from the benchmark's references;
    ``resolved`` is the space with groups fitted to the model (the warm start names them)."""
    from search.core.progress import console
    from search.study import StudySpec, open_study, run_study
    from search.study.references import store

    studies_dir = Path(spec.out_dir) / "studies"
    name = f"{method.replace(':', '+')}-seed{seed}"  # a study name has no colon
    shutil.rmtree(studies_dir / name, ignore_errors=True)  # a benchmark starts fresh
    console.print(f"[bold]bench: {method} search, {trials} trials, sampler seed {seed}[/bold]")
    study_spec = StudySpec(
        task=spec.task,
        space=method_space(spec.space, method, groups=_prune_groups(refs)),
        profile=spec.profile,
        study_name=name,
        results_dir=studies_dir,
        seed=spec.seed,
        sampler_seed=seed,
    )
    start = time.perf_counter()
    # Reuse the references measured once for the whole benchmark: run_study measures them only
    # when the study has none. The seeded trial follows the method's encoding; a joint search
    # starts with the space's warm start, random search with the seeded trial alone.
    space = method_space(resolved or spec.space, method, groups=_prune_groups(refs))
    store(open_study(study_spec, create=True), **_references(spec, space, refs))
    study = run_study(study_spec, trials=trials, progress=False)
    points, records, durations = study_points(study)
    base = baseline_of(study)
    if base is None:
        raise SearchError(f"bench: study {name} has no baseline")
    return MethodRun(
        name=method,
        trials=trials,
        wall_s=time.perf_counter() - start,
        points=points,
        step_seconds=step_split(records, durations),
        base={"accuracy": base.accuracy, "latency_ms": base.latency_paired_ms},
        seed=seed,
        durations=durations,
        distillations=distillations(study),
    )


def _references(spec: BenchSettings, space: Space, refs: References) -> dict[str, Any]:
    """What a study of ``space`` takes of the benchmark's references: the baseline, the
    quantization references of its encoding, the pruning pass where it searches per-group
    scales, and its warm start (a joint search's; random search keeps the seeded trial)."""
    quantization = refs["quantization"].get(space.quantize.encoding)
    prune = refs.get("prune")
    if prune is not None and not space.prune.group_names:
        prune = None  # this method prunes with one global ratio
    warm = None
    if quantization is not None and space.search.sampler != "random":
        choices = space.quantize.choices(spec.profile.precisions)
        seed_params = {**(prune.seed if prune else {}), **quantization.seed}
        warm = warm_start_params(space, seed_params, choices)
    return {
        "baseline": refs["baseline"],
        "quantization": quantization,
        "prune": prune,
        "warm_start": warm,
    }


def _prune_groups(refs: References) -> dict[str, list[str]] | None:
    """The prune groups the benchmark's sensitivity pass measured (None without a pass)."""
    prune = refs.get("prune")
    sens = prune.sensitivity if prune is not None else None
    return dict(sens.get("patterns") or {}) if sens else None


def prefix(run: MethodRun, n: int, name: str) -> MethodRun:
    """The first ``n`` trials of a study, as if it had stopped there (random search of N is
    the start of random search of 3N: its suggestions do not depend on the results)."""
    kept = [p for p in run.points if p.order <= n]
    wall = max((p.extra.get("elapsed_s", 0.0) for p in kept), default=0.0)
    distilled = sum(1 for p in kept if p.extra.get("distilled", True))
    return MethodRun(
        name=name,
        trials=n,
        wall_s=wall,
        points=kept,
        base=run.base,
        seed=run.seed,
        distillations=distilled,
    )


def prune_alone(
    spec: BenchSettings, ctx: Context, work: Path
) -> tuple[MethodRun, list[TrialRecord]]:
    """torch-pruning at each fixed ratio, fine-tuned with the joint space's largest KD budget;
    the run and the trial records (their float ONNX files feed ``sequential``)."""
    from search.core.progress import console
    from search.trial.pipeline import run_trial

    d, p = spec.space.distill, spec.space.prune
    # The same distillation budget a joint trial can get at most; the other KD settings are the
    # pipeline's defaults and the middle of the space's learning-rate range.
    distill = DistillConfig(
        epochs=d.epochs.high, lr=math.sqrt(d.lr.low * d.lr.high), batch_size=d.batch_size
    )
    start = time.perf_counter()
    points, records, durations = [], [], []
    for i, ratio in enumerate(spec.ratios, start=1):
        prune = PruneConfig(
            ratio=ratio, importance=p.hand_importance, max_layer_ratio=p.max_layer_ratio
        )
        t0 = time.perf_counter()
        rec = run_trial(
            TrialConfig(prune=prune, distill=distill), ctx=ctx, out_dir=work / f"prune-{ratio:g}"
        )
        durations.append(time.perf_counter() - t0)
        points.append(
            _point(rec, label=f"prune {ratio:g}", order=i, params={"prune_ratio": ratio})
        )
        records.append(rec)
        console.print(
            f"bench: prune {ratio:g}: accuracy {rec.accuracy:.4f}, "
            f"p50 {rec.latency_paired_ms:.3f} ms, {durations[-1]:.1f} s"
        )
    run = MethodRun(
        name="prune",
        trials=len(spec.ratios),
        wall_s=time.perf_counter() - start,
        points=points,
        step_seconds=step_split(records, durations),
        durations=durations,
        distillations=len(spec.ratios),
    )
    return run, records


def sequential(ctx: Context, prune_run: MethodRun, records: list[TrialRecord]) -> MethodRun:
    """Uniform int8 static QDQ (ONNX Runtime, MinMax calibration) of each pruned and distilled
    model of ``prune_run``: the pipeline a user builds by hand; its cost includes the pruning
    and distillation it starts from."""
    from search.compress.quantize.calibration import calibrate
    from search.compress.quantize.step import uniform_int8
    from search.core.progress import console
    from search.trial.context import measurement_record, score

    start = time.perf_counter()
    space = ctx.space.quantize
    points = []
    for prev, rec in zip(prune_run.points, records, strict=True):
        src = Path(rec.onnx)
        assert ctx.calib_inputs is not None  # Context.build fixes them
        calib = calibrate(src, ctx.calib_inputs, method="minmax", cache_dir=src.parent / "calib")
        q = uniform_int8(calib, src.parent / "model.int8.q.onnx", space=space)
        metric, m = score(q.path, ctx)
        out = TrialRecord.from_json(
            {**measurement_record(metric, m, ctx).to_json(), "measured_onnx": str(q.path)}
        )
        label = f"{prev.label} + int8"
        points.append(_point(out, label=label, order=prev.order, params=prev.extra["params"]))
        console.print(f"bench: {label}: accuracy {metric:.4f}, p50 {out.latency_paired_ms:.3f} ms")
    return MethodRun(
        name="sequential",
        trials=len(points),
        wall_s=prune_run.wall_s + time.perf_counter() - start,
        points=points,
        distillations=prune_run.distillations,
    )


def _point(rec: TrialRecord, *, label: str, order: int, params: dict[str, Any]) -> Point:
    path = measured_onnx(rec)
    return Point(
        accuracy=rec.accuracy,
        latency_ms=rec.latency_paired_ms,
        size_bytes=os.path.getsize(path),
        label=label,
        order=order,
        extra={"onnx": str(path), "params": params, **_study_latency(rec)},
    )


def _study_latency(rec: TrialRecord) -> dict[str, Any]:
    """The study's ratio to its baseline (another session: measure.widen_by_sessions)."""
    rel, busy = rec.latency_relative, bool(rec.busy)
    return {} if rel is None else {"study_relative": rel, "study_busy": busy}
