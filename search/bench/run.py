"""Run every method of the benchmark on one task, profile and trial budget, then compare them.

Methods, all in one run on one machine:

1. ``float``: the uncompressed teacher exported to ONNX.
2. ``int8``: ONNX Runtime 8-bit static QDQ quantization of that file alone.
3. ``prune``: torch-pruning alone at fixed ratios, each with the same distillation budget.
4. ``sequential``: those pruned and distilled models, then uniform int8 PTQ of each.
5. ``random@N`` and ``random@3N``: random search over the joint space (one study of 3N trials;
   its first N trials are exactly a random search of N).
6. The joint searches of N trials: ``tpe``, ``gp``, ``nsga2``, each optionally ``-ordinal``
   (the precision plan as one ordinal parameter, :mod:`search.compress.quantize.encoding`).

Random search and the joint searches run once per sampler seed (``--seeds``); the task's
splits, the teacher and the training seed stay at ``--seed``, so the spread across seeds is the
samplers' own. ``float``, ``int8``, ``prune`` and ``sequential`` have no sampler and run once.
The studies run through the public pipeline (:func:`search.study.run_study`), so whatever the
space file enables is searched with no change here. Afterwards the candidates that can be on a
front are re-measured side by side (:mod:`search.bench.measure`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search.bench.methods import (
    VARIANTS,
    MethodRun,
    References,
    default_method,
    prefix,
    prune_alone,
    run_study_method,
    sequential,
)
from search.bench.metrics import MAX_DROP, REF_DROP, Point
from search.bench.reconfirm import LATENCY_INPUT
from search.compress.prune.step import PRUNE_RATIO
from search.compress.quantize.encoding import ordinal_seed
from search.config import Profile, Space
from search.errors import SearchError
from search.record import Measured
from search.study.samplers import SAMPLERS

if TYPE_CHECKING:
    from search.measure.measurement import Measurement
    from search.measure.target import Target
    from search.study.prune_references import PruneReferences
    from search.trial.context import Context

JOINT = tuple(s for s in SAMPLERS if s != "random")
JOINT_METHODS = JOINT + tuple(f"{s}-ordinal" for s in JOINT)


@dataclass(frozen=True)
class BenchSpec:
    """What to benchmark and with which budget.

    Attributes:
        task: Built-in task name or ``module:function``.
        space: The joint search space (its sampler and encoding are overridden per method; its
            own pair is the default search, always run).
        profile: The hardware profile every candidate is measured on.
        trials: N: trials of the joint search; random search gets ``random_factor * N``.
        out_dir: Where studies, artifacts, ``bench.md``, ``bench.html`` and ``bench.json`` go.
        seed: Seed of the task's splits, the teacher and the training of every trial.
        seeds: Sampler seeds per study method: ``seed``, ``seed + 1``, ...
        samplers: Joint-search methods to run (``tpe``, ``gp``, ``nsga2``, each optionally
            with ``-ordinal``).
        ratios: Fixed pruning ratios of the pruning-alone and sequential methods.
        random_factor: Random search's budget as a multiple of N.
        rounds: Interleaved rounds of the final confirmation, in each fresh process.
        quiet_wait_s: Seconds the final confirmation waits for a quiet machine.
        profile_source: What ``--hw`` named (a built-in name or a file), for ``--reconfirm``.
        max_drop: The accuracy drop the "best speedup" columns allow (absolute).
        ref_drop: The accuracy drop of the hypervolume's reference point (absolute).
    """

    task: str
    space: Space
    profile: Profile
    trials: int
    out_dir: Path
    seed: int = 0
    seeds: int = 3
    samplers: tuple[str, ...] = ("tpe",)
    ratios: tuple[float, ...] = (0.3, 0.5, 0.7)
    random_factor: int = 3
    rounds: int = 20
    quiet_wait_s: float = 0.0
    profile_source: str = ""
    max_drop: float = MAX_DROP
    ref_drop: float = REF_DROP

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise SearchError(f"--trials must be at least 1, but got {self.trials}")
        if self.seeds < 1:
            raise SearchError(f"--seeds must be at least 1, but got {self.seeds}")
        bad = [s for s in self.samplers if s.partition(":")[0] not in JOINT_METHODS]
        bad += [s for s in self.samplers if s.partition(":")[2] not in ("", *VARIANTS)]
        if bad:
            raise SearchError(
                f"unknown joint sampler(s) {bad}: choose from {', '.join(JOINT_METHODS)}, "
                f"each optionally with :{' or :'.join(VARIANTS)}"
            )
        for r in self.ratios:
            PRUNE_RATIO.check(r, "--ratios")
            if r == 0.0:
                raise SearchError("--ratios: ratio 0 prunes nothing (that is the float method)")

    @property
    def methods(self) -> tuple[str, ...]:
        """The joint methods run: the space's default first, then the others asked for."""
        default = default_method(self.space)
        return (default, *(m for m in self.samplers if m != default))


def run_bench(spec: BenchSpec) -> dict[str, Any]:
    """Run all methods, re-measure the candidates interleaved, score and write the outputs.

    Returns the plain data written to ``bench.json``.
    """
    import optuna

    from search.bench.measure import measured_on
    from search.core.threads import apply_threads, resolve_threads
    from search.measure.target import close_target

    # $OMP_NUM_THREADS when set, else every CPU this process may use (taskset, cgroups).
    apply_threads(resolve_threads(None))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(spec.out_dir)
    work = out / "work"
    shutil.rmtree(work, ignore_errors=True)
    started = time.perf_counter()
    ctx, teacher_s, target = _context(spec, out / "studies")
    try:
        return _run_methods(spec, ctx, teacher_s, work, started, measured_on(target))
    finally:
        close_target(target)  # the runtime's agent, where the profile runs in one of its own


def _run_methods(
    spec: BenchSpec,
    ctx: Context,
    teacher_s: float,
    work: Path,
    started: float,
    measured_on: dict[str, str],
) -> dict[str, Any]:
    """Every method of :func:`run_bench` on the measured context, then the outputs."""
    from search.bench.measure import confirm_runs, unconfirmed
    from search.bench.report import summarize_runs, write_bench
    from search.core.progress import console

    out = Path(spec.out_dir)
    refs, runs = _references(ctx, work)
    refs["prune"] = _prune_references(spec, ctx, work)
    np.save(out / LATENCY_INPUT, ctx.task.example_input.numpy(), allow_pickle=False)
    prune_run, records = prune_alone(spec, ctx, work)
    runs += [prune_run, sequential(ctx, prune_run, records)]
    n, n_random = spec.trials, spec.random_factor * spec.trials
    seeds = list(range(spec.seed, spec.seed + spec.seeds))
    for i, seed in enumerate(seeds):
        rand = run_study_method(
            spec, method="random", trials=n_random, seed=seed, refs=refs, resolved=ctx.space
        )
        runs += [
            prefix(rand, n, f"random@{n}"),
            dataclasses.replace(rand, name=f"random@{n_random}"),
        ]
        for method in spec.methods:
            runs.append(
                run_study_method(
                    spec, method=method, trials=n, seed=seed, refs=refs, resolved=ctx.space
                )
            )
        # Written after every seed, so a bench stopped early still leaves its finished seeds.
        # Confirmed after the last seed only (a quiet spell is waited for once); the seeds
        # before are written with their study-time latencies, marked as such.
        last = i == len(seeds) - 1
        latency, confirmation = confirm_runs(spec, ctx, runs) if last else unconfirmed(runs)
        extra = {
            "teacher_load_s": teacher_s,
            "total_wall_s": time.perf_counter() - started,
            "task_key": ctx.task.key,
            "load_average": os.getloadavg(),
            "seeds_done": seeds[: i + 1],
            "confirmation": confirmation,
            "prune_sensitivity": refs["prune"].sensitivity,
            "prune_seed": refs["prune"].seed,
            **measured_on,
        }
        data = summarize_runs(runs, latency=latency, spec=spec, extra=extra)
        paths = write_bench(data, out)
        console.print(f"bench: wrote {', '.join(str(p) for p in paths.values())}")
    return data


def _context(spec: BenchSpec, studies_dir: Path) -> tuple[Context, float, Target]:
    """The trials' shared context, measured on the profile's target (here, its agent or an
    agent started from the profile's runtime), the teacher's load time and the target (close it
    with :func:`~search.measure.target.close_target`). Once the baseline is measured
    (:func:`_references`) every file is timed paired with it, as a study times its trials."""
    from search.measure.target import open_target
    from search.study.model_checks import check_model
    from search.study.setup import attach_target
    from search.tasks import load_task
    from search.trial.context import Context

    profile = spec.profile
    # Checks the providers (here or on the agent) before any work.
    target = open_target(
        profile.measure_spec(),
        agent=profile.agent,
        runtime=profile.runtime,
        token_env=profile.agent_token_env,
    )
    t0 = time.perf_counter()
    task = load_task(spec.task, seed=spec.seed, cache_dir=studies_dir)
    teacher_s = time.perf_counter() - t0
    latency_input = task.example_input.numpy()

    def measure(path: Path) -> Measurement:
        return target.measure(
            path,
            eval_inputs=ctx.eval_inputs,
            latency_input=latency_input,
            reference=ctx.reference,
        )

    checked = check_model(task, spec.space)  # groups fitted to the model, as a study's are
    ctx = Context.build(
        task=task,
        space=checked.space,
        profile=spec.profile,
        seed=spec.seed,
        measure=measure,
        prune_plan=checked.prune_plan,
    )
    attach_target(ctx, target, latency_input)  # a runtime of its own scores the files there
    return ctx, teacher_s, target


def _references(ctx: Context, work: Path) -> tuple[References, list[MethodRun]]:
    """The float and int8 methods: the study references (:mod:`search.study.references`), measured
    once and handed to every study of the benchmark. Uniform int8 is what users try first, so
    it is measured even where the profile does not search int8."""
    from search.core.progress import console
    from search.study.references import (
        export_float,
        measure_baseline,
        pair_with_baseline,
        quantization_references,
    )

    t0 = time.perf_counter()
    base_path = export_float(ctx, work / "float")
    baseline = measure_baseline(ctx, base_path)
    pair_with_baseline(ctx, baseline, work / "float")
    runs = [_one_point("float", baseline, base_path, wall_s=time.perf_counter() - t0)]
    t0 = time.perf_counter()
    quant = quantization_references(ctx, base_path, work / "float", int8=True)
    int8 = quant.int8
    if int8 is None:
        raise SearchError("bench: the uniform int8 reference could not be measured")
    path = Path(int8.measured_file)
    runs.append(_one_point("int8", int8, path, wall_s=time.perf_counter() - t0))
    console.print(
        f"bench: float accuracy {baseline.accuracy:.4f}; int8 accuracy {int8.accuracy:.4f}"
    )
    # The seeded trial in both encodings, so every method starts from the same plan.
    sensitivity = quant.sensitivity if quant.seed else None
    by_encoding = {
        "categorical": quant,
        "ordinal": dataclasses.replace(
            quant,
            seed=ordinal_seed(sensitivity, tolerance=ctx.space.quantize.tolerance)
            if sensitivity
            else {},
        ),
    }
    return {"baseline": baseline, "quantization": by_encoding}, runs


def _prune_references(spec: BenchSpec, ctx: Context, work: Path) -> PruneReferences:
    """The per-group pruning sensitivity pass, once for every study of the benchmark: on the
    space's prune groups, or on the precision groups that own prunable layers where the space
    prunes globally (a ``:groups`` variant may search them)."""
    from search.compress.prune.groups import prunable_groups
    from search.core.progress import console
    from search.study.prune_references import describe, prune_references

    prune = ctx.space.prune
    if not prune.group_names:
        plan = ctx.prune_plan.left_alone if ctx.prune_plan else {}
        groups = prunable_groups(ctx.task.model, ctx.space.quantize.groups, plan)
        prune = prune.model_copy(update={"groups": groups})
    space = ctx.space
    ctx.space = space.model_copy(update={"prune": prune})
    try:
        refs = prune_references(ctx, work / "float")
    finally:
        ctx.space = space
    if refs.sensitivity:
        console.print(f"bench: {describe(refs.sensitivity, refs.seed)}", markup=False)
    return refs


def _one_point(name: str, record: Measured, path: Path, *, wall_s: float) -> MethodRun:
    """A method of one measured file (paired with the baseline; confirmed at the end)."""
    point = Point(
        accuracy=record.accuracy,
        latency_ms=record.latency_paired_ms,
        size_bytes=os.path.getsize(path),
        label=name,
        order=0 if name == "float" else 1,
        extra={"onnx": str(path)},
    )
    return MethodRun(name=name, trials=0 if name == "float" else 1, wall_s=wall_s, points=[point])
