"""Run every method of the benchmark on one task, profile and trial budget, then compare them.

Methods, all in one run on one machine:

1. ``float``: the uncompressed teacher exported to ONNX.
2. ``int8``: ONNX Runtime 8-bit static QDQ quantization of that file alone.
3. ``prune``: torch-pruning alone at fixed ratios, each with the same distillation budget.
4. ``random@N`` and ``random@2N``: random search over the joint space (one study of 2N trials;
   its first N trials are exactly a random search of N).
5. ``tpe`` (and optionally ``nsga2``): the joint search of N trials.

The studies run through the public pipeline (:func:`search.study.run_study`), so whatever the
space file enables (pruning, quantization, low-rank) is searched with no change here. Afterwards
the candidates that can be on a front are re-measured side by side (:mod:`search.bench.measure`).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search.bench.metrics import MAX_DROP, REF_DROP, Point, near_front
from search.config import Profile, Space, TrialConfig

SAMPLERS = ("tpe", "nsga2", "random")


@dataclass(frozen=True)
class BenchSpec:
    """What to benchmark and with which budget.

    Attributes:
        task: Built-in task name or ``module:function``.
        space: The joint search space (its sampler is overridden per method).
        profile: The hardware profile every candidate is measured on.
        trials: N: trials of the joint search; random search gets ``random_factor * N``.
        out_dir: Where studies, artifacts, ``bench.md``, ``bench.html`` and ``bench.json`` go.
        seed: Seed of the task's splits, the teacher and every sampler.
        samplers: Joint-search samplers to run (``tpe``, ``nsga2``).
        ratios: Fixed pruning ratios of the pruning-alone method.
        random_factor: Random search's budget as a multiple of N.
        rounds: Round-robin passes of the interleaved latency measurement.
        max_drop: The accuracy drop the "best speedup" columns allow (absolute).
        ref_drop: The accuracy drop of the hypervolume's reference point (absolute).
    """

    task: str
    space: Space
    profile: Profile
    trials: int
    out_dir: Path
    seed: int = 0
    samplers: tuple[str, ...] = ("tpe",)
    ratios: tuple[float, ...] = (0.3, 0.5, 0.7)
    random_factor: int = 2
    rounds: int = 20
    max_drop: float = MAX_DROP
    ref_drop: float = REF_DROP

    def __post_init__(self) -> None:
        from search.errors import SearchError

        if self.trials < 1:
            raise SearchError(f"--trials must be at least 1, but got {self.trials}")
        bad = [s for s in self.samplers if s not in SAMPLERS or s == "random"]
        if bad:
            raise SearchError(f"unknown joint sampler(s) {bad}: choose from tpe, nsga2")
        if any(not 0.0 < r < 1.0 for r in self.ratios):
            raise SearchError(f"--ratios must lie in (0, 1), but got {list(self.ratios)}")


@dataclass
class MethodRun:
    """One method's measured points, its cost, and the per-step time split of its trials."""

    name: str
    trials: int
    wall_s: float
    points: list[Point] = field(default_factory=list)
    step_seconds: dict[str, float] = field(default_factory=dict)
    base: dict[str, float] = field(default_factory=dict)  # the study's own baseline measurement


def measured_onnx(record: dict[str, Any]) -> Path:
    """The ONNX file a trial was scored on: the quantized one when the trial made one."""
    for key in ("measured_onnx", "quantized_onnx", "onnx_q"):
        if record.get(key):
            return Path(record[key])
    quantized = Path(record.get("artifacts", "")) / "model.q.onnx"
    return quantized if quantized.is_file() else Path(record["onnx"])


def _space_with(space: Space, sampler: str) -> Space:
    return space.model_copy(
        update={"search": space.search.model_copy(update={"sampler": sampler})}
    )


def _step_split(records: list[dict[str, Any]], durations: list[float]) -> dict[str, float]:
    """Mean seconds per trial step; ``other`` is the study's own overhead around the steps."""
    if not records:
        return {}
    steps: dict[str, list[float]] = {}
    for rec in records:
        for k, v in rec.get("timings_s", {}).items():
            steps.setdefault(k, []).append(float(v))
    out = {k: float(np.mean(v)) for k, v in steps.items()}
    if durations:
        out["other"] = max(0.0, float(np.mean(durations)) - sum(out.values()))
        out["trial"] = float(np.mean(durations))
    return out


def _study_points(study: Any) -> tuple[list[Point], list[dict[str, Any]], list[float]]:
    from optuna.trial import TrialState

    points, records, durations = [], [], []
    for t in study.get_trials(deepcopy=False):
        if t.state != TrialState.COMPLETE:
            continue
        rec = t.user_attrs["record"]
        path = measured_onnx(rec)
        points.append(
            Point(
                accuracy=float(rec["accuracy"]),
                latency_ms=float(rec["latency_p50_ms"]),
                size_bytes=os.path.getsize(path),
                label=f"trial {t.number}",
                order=t.number + 1,
                extra={"onnx": str(path), "params": dict(t.params)},
            )
        )
        records.append(rec)
        durations.append(float(t.user_attrs.get("duration_s", 0.0)))
    return points, records, durations


def _run_studies(spec: BenchSpec, studies_dir: Path, baseline: dict[str, Any]) -> list[MethodRun]:
    from search.progress import console
    from search.study import StudySpec, open_study, run_study

    runs = []
    plan = [("random", spec.random_factor * spec.trials)]
    plan += [(s, spec.trials) for s in spec.samplers]
    for sampler, n in plan:
        name = f"{sampler}"
        shutil.rmtree(studies_dir / name, ignore_errors=True)  # a benchmark starts fresh
        console.print(f"[bold]bench: {sampler} search, {n} trials[/bold]")
        study_spec = StudySpec(
            task=spec.task,
            space=_space_with(spec.space, sampler),
            profile=spec.profile,
            study_name=name,
            results_dir=studies_dir,
            seed=spec.seed,
        )
        start = time.perf_counter()
        # Reuse the baseline exported and measured once for the whole benchmark: run_study
        # measures it only when the study has none.
        open_study(study_spec, create=True).set_user_attr("baseline", baseline)
        study = run_study(study_spec, trials=n, progress=False)
        wall = time.perf_counter() - start
        points, records, durations = _study_points(study)
        base = study.user_attrs["baseline"]
        run = MethodRun(
            name=sampler,
            trials=n,
            wall_s=wall,
            points=points,
            step_seconds=_step_split(records, durations),
            base={"accuracy": base["accuracy"], "latency_ms": base["latency_p50_ms"]},
        )
        run.base["overhead_s"] = wall - sum(durations)
        run.base["durations"] = durations  # type: ignore[assignment]
        runs.append(run)
    return runs


def _prefix(run: MethodRun, n: int, name: str) -> MethodRun:
    """The first ``n`` trials of a sequential study, as if it had stopped there."""
    durations = list(run.base.get("durations", []))  # type: ignore[arg-type]
    kept = [p for p in run.points if p.order <= n]
    wall = run.base.get("overhead_s", 0.0) + sum(durations[: len(kept)])
    return MethodRun(
        name=name,
        trials=n,
        wall_s=wall,
        points=kept,
        base=run.base,
    )


def _prune_alone(spec: BenchSpec, ctx: Any, work: Path) -> MethodRun:
    """torch-pruning at each fixed ratio, fine-tuned with the joint space's largest KD budget."""
    from search.progress import console
    from search.trial import run_trial

    d = spec.space.distill
    start = time.perf_counter()
    points, records, durations = [], [], []
    for i, ratio in enumerate(spec.ratios, start=1):
        # The same distillation budget a joint trial can get at most; the other KD settings are
        # the pipeline's defaults and the middle of the space's learning-rate range.
        cfg = TrialConfig(
            prune_ratio=ratio,
            epochs=d.epochs.high,
            lr=math.sqrt(d.lr.low * d.lr.high),
            batch_size=d.batch_size,
        )
        t0 = time.perf_counter()
        result = run_trial(cfg, ctx=ctx, out_dir=work / f"prune-{ratio:g}")
        durations.append(time.perf_counter() - t0)
        rec = result.record
        path = measured_onnx(rec)
        points.append(
            Point(
                accuracy=result.accuracy,
                latency_ms=result.latency_ms,
                size_bytes=os.path.getsize(path),
                label=f"prune {ratio:g}",
                order=i,
                extra={"onnx": str(path), "params": {"prune_ratio": ratio}},
            )
        )
        records.append(rec)
        console.print(
            f"bench: prune {ratio:g}: accuracy {result.accuracy:.4f}, "
            f"p50 {result.latency_ms:.3f} ms, {durations[-1]:.1f} s"
        )
    return MethodRun(
        name="prune",
        trials=len(spec.ratios),
        wall_s=time.perf_counter() - start,
        points=points,
        step_seconds=_step_split(records, durations),
    )


def run_bench(spec: BenchSpec) -> dict[str, Any]:
    """Run all methods, re-measure the candidates interleaved, score and write the outputs.

    Returns the plain data written to ``bench.json``.
    """
    import optuna
    import torch

    from search.bench.measure import measure_interleaved, onnx_accuracy, quantize_int8
    from search.bench.report import summarize_runs, write_bench
    from search.measure import measure_onnx
    from search.measure.export import export_onnx
    from search.measure.runtime import check_providers
    from search.progress import console
    from search.tasks import load_task, stack
    from search.trial import Context, measurement_record, score

    check_providers(spec.profile)
    torch.set_num_threads(os.cpu_count() or 1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out, studies_dir = Path(spec.out_dir), Path(spec.out_dir) / "studies"
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    started = time.perf_counter()

    t0 = time.perf_counter()
    task = load_task(spec.task, seed=spec.seed, cache_dir=studies_dir)
    teacher_s = time.perf_counter() - t0

    def measure(path: Path):
        return measure_onnx(
            path,
            profile=spec.profile,
            eval_inputs=ctx.eval_inputs,
            latency_input=task.example_input.numpy(),
        )

    ctx = Context.build(
        task=task, space=spec.space, profile=spec.profile, seed=spec.seed, measure=measure
    )
    labels, inputs = ctx.eval_labels, ctx.eval_inputs

    def acc(path: Path) -> float:
        return onnx_accuracy(
            path, profile=spec.profile, inputs=inputs, labels=labels, metric=task.metric
        )

    t0 = time.perf_counter()
    base_path = export_onnx(task.model, task.example_input, work / "float" / "model.onnx")
    base_acc, base_m = score(base_path, ctx)
    baseline = {**measurement_record(base_acc, base_m), "val_accuracy": ctx.baseline_val}
    float_run = MethodRun(
        name="float",
        trials=0,
        wall_s=time.perf_counter() - t0,
        points=[
            Point(
                accuracy=base_acc,
                latency_ms=math.inf,
                size_bytes=os.path.getsize(base_path),
                label="float",
                extra={"onnx": str(base_path)},
            )
        ],
    )

    t0 = time.perf_counter()
    calib, _ = stack(task.calibration)
    int8_path = quantize_int8(base_path, work / "int8" / "model.onnx", calibration=calib.numpy())
    int8_run = MethodRun(
        name="int8",
        trials=1,
        wall_s=time.perf_counter() - t0,
        points=[
            Point(
                accuracy=acc(int8_path),
                latency_ms=math.inf,
                size_bytes=os.path.getsize(int8_path),
                label="int8",
                order=1,
                extra={"onnx": str(int8_path)},
            )
        ],
    )
    console.print(
        f"bench: float accuracy {base_acc:.4f}; int8 accuracy {int8_run.points[0].accuracy:.4f}"
    )

    prune_run = _prune_alone(spec, ctx, work)
    study_runs = _run_studies(spec, studies_dir, baseline)
    random_full = study_runs[0]
    runs = [
        float_run,
        int8_run,
        prune_run,
        _prefix(random_full, spec.trials, f"random@{spec.trials}"),
        random_full,
    ]
    random_full.name = f"random@{random_full.trials}"
    runs += study_runs[1:]

    # Re-measure, side by side, every point that could be on a front.
    candidates = {str(base_path): base_path, str(int8_path): int8_path}
    for run in runs[2:]:
        for p in near_front(run.points):
            candidates[p.extra["onnx"]] = Path(p.extra["onnx"])
    for p in prune_run.points:
        candidates[p.extra["onnx"]] = Path(p.extra["onnx"])
    console.print(f"bench: measuring {len(candidates)} candidates interleaved")
    latency = measure_interleaved(
        candidates,
        profile=spec.profile,
        example_input=task.example_input.numpy(),
        rounds=spec.rounds,
    )
    data = summarize_runs(
        runs,
        latency=latency,
        spec=spec,
        extra={
            "teacher_load_s": teacher_s,
            "total_wall_s": time.perf_counter() - started,
            "task_key": task.key,
        },
    )
    paths = write_bench(data, out)
    console.print(f"bench: wrote {', '.join(str(p) for p in paths.values())}")
    return data
