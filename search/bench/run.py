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
from search.compress.distill import DistillConfig
from search.compress.prune import PRUNE_RATIO, PruneConfig
from search.config import Profile, Space, TrialConfig
from search.errors import SearchError

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
        if self.trials < 1:
            raise SearchError(f"--trials must be at least 1, but got {self.trials}")
        bad = [s for s in self.samplers if s not in SAMPLERS or s == "random"]
        if bad:
            raise SearchError(f"unknown joint sampler(s) {bad}: choose from tpe, nsga2")
        for r in self.ratios:
            PRUNE_RATIO.check(r, "--ratios")
            if r == 0.0:
                raise SearchError("--ratios: ratio 0 prunes nothing (that is the float method)")


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
    return Path(record["measured_onnx"])


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


def _run_studies(spec: BenchSpec, studies_dir: Path, refs: dict[str, Any]) -> list[MethodRun]:
    from search.progress import console
    from search.references import store
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
        # Reuse the references measured once for the whole benchmark: run_study measures them
        # only when the study has none.
        store(open_study(study_spec, create=True), **refs)
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
            ratio=ratio, importance=p.importance, max_layer_ratio=p.max_layer_ratio
        )
        cfg = TrialConfig(prune=prune, distill=distill)
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

    from search.bench.measure import measure_interleaved
    from search.bench.report import summarize_runs, write_bench
    from search.progress import console
    from search.threads import apply_threads, resolve_threads

    # $OMP_NUM_THREADS when set, else every CPU this process may use (taskset, cgroups).
    apply_threads(resolve_threads(None))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out, studies_dir = Path(spec.out_dir), Path(spec.out_dir) / "studies"
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    started = time.perf_counter()
    ctx, teacher_s = _context(spec, studies_dir)
    refs, runs = _references(ctx, work)
    prune_run = _prune_alone(spec, ctx, work)
    study_runs = _run_studies(spec, studies_dir, refs)
    random_full = study_runs[0]
    runs += [prune_run, _prefix(random_full, spec.trials, f"random@{spec.trials}"), random_full]
    random_full.name = f"random@{random_full.trials}"
    runs += study_runs[1:]

    # Re-measure, side by side, every point that could be on a front.
    candidates = {p.extra["onnx"]: Path(p.extra["onnx"]) for run in runs[:2] for p in run.points}
    for run in [r for r in runs if r.name not in ("float", "int8")]:
        for p in near_front(run.points) + (prune_run.points if run is prune_run else []):
            candidates[p.extra["onnx"]] = Path(p.extra["onnx"])
    console.print(f"bench: measuring {len(candidates)} candidates interleaved")
    latency = measure_interleaved(
        candidates,
        spec=spec.profile.measure_spec(),
        example_input=ctx.task.example_input.numpy(),
        rounds=spec.rounds,
    )
    data = summarize_runs(
        runs,
        latency=latency,
        spec=spec,
        extra={
            "teacher_load_s": teacher_s,
            "total_wall_s": time.perf_counter() - started,
            "task_key": ctx.task.key,
        },
    )
    paths = write_bench(data, out)
    console.print(f"bench: wrote {', '.join(str(p) for p in paths.values())}")
    return data


def _context(spec: BenchSpec, studies_dir: Path) -> tuple[Any, float]:
    """The trials' shared context, measured on this machine, and the teacher's load time."""
    from search.context import Context
    from search.measure.target import LocalTarget
    from search.tasks import load_task

    target = LocalTarget(spec.profile.measure_spec())  # checks the providers before any work
    t0 = time.perf_counter()
    task = load_task(spec.task, seed=spec.seed, cache_dir=studies_dir)
    teacher_s = time.perf_counter() - t0
    latency_input = task.example_input.numpy()

    def measure(path: Path) -> Any:
        return target.measure(path, eval_inputs=ctx.eval_inputs, latency_input=latency_input)

    ctx = Context.build(
        task=task, space=spec.space, profile=spec.profile, seed=spec.seed, measure=measure
    )
    return ctx, teacher_s


def _references(ctx: Any, work: Path) -> tuple[dict[str, Any], list[MethodRun]]:
    """The float and int8 methods: the study references (:mod:`search.references`), measured
    once and handed to every study of the benchmark. Uniform int8 is what users try first, so
    it is measured even where the profile does not search int8."""
    from search.progress import console
    from search.references import export_float, measure_baseline, quantization_references

    t0 = time.perf_counter()
    base_path = export_float(ctx, work / "float")
    baseline = measure_baseline(ctx, base_path)
    runs = [_one_point("float", baseline, base_path, wall_s=time.perf_counter() - t0)]
    t0 = time.perf_counter()
    quant = quantization_references(ctx, base_path, work / "float", int8=True)
    int8 = quant.int8 or {}
    path = Path(int8["measured_onnx"])
    runs.append(_one_point("int8", int8, path, wall_s=time.perf_counter() - t0))
    console.print(
        f"bench: float accuracy {baseline['accuracy']:.4f}; int8 accuracy {int8['accuracy']:.4f}"
    )
    return {"baseline": baseline, "quantization": quant}, runs


def _one_point(name: str, record: dict[str, Any], path: Path, *, wall_s: float) -> MethodRun:
    """A method of one measured file (its latency comes from the interleaved re-measurement)."""
    point = Point(
        accuracy=record["accuracy"],
        latency_ms=math.inf,
        size_bytes=os.path.getsize(path),
        label=name,
        order=0 if name == "float" else 1,
        extra={"onnx": str(path)},
    )
    return MethodRun(name=name, trials=0 if name == "float" else 1, wall_s=wall_s, points=[point])
