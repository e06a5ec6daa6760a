"""One study, one setup: the worker that claims it first loads the task (training the teacher
if needed), creates the study, records the teacher and the data digests, measures the baseline
and the quantization references and enqueues the seeded trial; every other worker waits, then
downloads the study's teacher and joins, or is refused when its teacher or data differ.

The claim goes through the storage (:mod:`search.distributed.claims`), so it holds across machines.
A new SQLite study is the exception that keeps bad input from creating anything: the task is loaded
(and checked) before the database file exists; workers on one machine then share the teacher
through the results folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from search.core.progress import Ticker, console
from search.distributed.artifacts import check_task, fetch_teacher, publish_teacher, study_store
from search.distributed.claims import run_once
from search.distributed.storage import open_storage
from search.errors import SearchError
from search.record import BaselineRecord, baseline_of
from search.tasks.digests import task_digests

if TYPE_CHECKING:
    from optuna.artifacts._protocol import ArtifactStore

    from search.distributed.host_locks import CpuLock
    from search.measure.measurement import Measurement
    from search.measure.target import Target
    from search.study.model_checks import ModelChecks
    from search.study.spec import StudySpec
    from search.tasks import Task
    from search.trial.context import Context


@dataclass
class Joined:
    """What a worker needs to run trials: the study, its artifact store, the shared context."""

    study: optuna.Study
    store: ArtifactStore
    ctx: Context
    cpu: CpuLock


@dataclass
class _Worker:
    """This worker's part of joining: its spec, target, lock and what it has loaded so far."""

    spec: StudySpec
    target: Target
    cpu: CpuLock
    threads: int
    opener: Callable[..., optuna.Study]  # search.study.open_study
    task: Task | None = None
    checked: ModelChecks | None = None
    on_checked: Callable[[], None] | None = None  # called once, when the checks first pass

    def check(self) -> ModelChecks:
        """The model checks (export, groups, pruning dry run), once, before a study is used."""
        from search.study.model_checks import check_model

        if self.checked is None:
            self.checked = check_model(self.load(), self.spec.space)
            if self.on_checked is not None:
                self.on_checked()
        return self.checked

    def load(self) -> Task:
        from search.tasks import load_task

        if self.task is None:
            spec = self.spec
            self.task = load_task(
                spec.task, seed=spec.seed, cache_dir=spec.results_dir, options=spec.task_options
            )
        return self.task

    def context(self) -> Context:
        from search.trial.context import Context
        from search.trial.students import StudentStore

        task, checked = self.load(), self.check()
        latency_input = task.example_input.numpy()  # one fixed array: the same input every trial
        ctx: Context

        def measure(path: Path) -> Measurement:
            # Paired with the baseline once it is measured (pair_with_baseline sets it).
            return self.target.measure(
                path,
                eval_inputs=ctx.eval_inputs,
                latency_input=latency_input,
                reference=ctx.reference,
            )

        spec = self.spec
        with Ticker("preparing the study's data: the teacher's outputs, the validation metric"):
            ctx = Context.build(
                task=task,
                space=checked.space,  # groups fitted to the model
                profile=spec.profile,
                seed=spec.seed,
                measure=measure,
                prune_plan=checked.prune_plan,
            )
        attach_target(ctx, self.target, latency_input)
        if checked.space.distill.plans_per_student > 1:  # students are kept only to be reused
            ctx.students = StudentStore.for_study(
                spec.paths.students,
                task=ctx.task,
                teacher_logits=ctx.teacher_logits,
                seed=ctx.seed,
                round_to=ctx.profile.round_to,
                space=ctx.space,
            )
        return ctx


def join_study(
    spec: StudySpec,
    *,
    storage: optuna.storages.RDBStorage | None,
    target: Target,
    cpu: CpuLock,
    threads: int,
    opener: Callable[..., optuna.Study],
    on_checked: Callable[[], None] | None = None,
) -> Joined:
    """Join ``spec``'s study as one of its workers, setting it up if no worker has.

    ``storage`` is the opened storage, or None for a SQLite file that does not exist yet;
    ``opener`` is :func:`search.study.open_study` (which refuses other settings);
    ``on_checked()`` is called once the task is loaded and its model passed the checks (the
    worker's notes wait for it, so bad input is one line).

    Raises:
        SearchError: bad task, settings that differ from the study's, a teacher or data that
            differ, another device, a setup that failed on the worker that claimed it.
    """
    worker = _Worker(
        spec=spec, target=target, cpu=cpu, threads=threads, opener=opener, on_checked=on_checked
    )
    settings = spec.worker
    if storage is None:  # a new local study: check task and model before anything is created
        worker.check()
        if spec.storage is None:  # the default file lies in the study's folder
            spec.study_dir.mkdir(parents=True, exist_ok=True)
        storage = open_storage(
            spec.storage_url, heartbeat_s=settings.heartbeat_s, grace_s=settings.grace_s
        )
    done: dict[str, Joined] = {}

    def on_wait(owner: dict[str, Any]) -> None:
        console.print(
            f"waiting for {owner.get('host')}:{owner.get('pid')} to set up study "
            f"{spec.study_name!r} (teacher, baseline, references)"
        )

    outcome = run_once(
        storage,
        spec.study_name,
        "setup",
        lambda: done.setdefault("joined", _set_up(worker, storage)),
        heartbeat_s=settings.heartbeat_s,
        grace_s=settings.grace_s,
        on_wait=on_wait,
    )
    joined = done["joined"] if outcome.won else _join_set_up(worker, storage)
    _requeue_seed_once(worker, storage, joined)
    return joined


def _set_up(worker: _Worker, storage: optuna.storages.RDBStorage) -> Joined:
    """The claimed setup: study, teacher record, data digest, baseline, references, seed."""
    from search.study.references import ensure_baseline, ensure_quantization
    from search.tasks.teacher import teacher_files

    spec = worker.spec
    _fetch_recorded_teacher(worker, storage)  # a setup taken over from a worker that died
    task, checked = worker.load(), worker.check()
    study = worker.opener(spec, create=True, metric=task.metric_name, storage=storage)
    checked.store(study)
    paths = spec.paths
    store = study_store(study, override=spec.worker.artifacts, default=paths.store)
    digests = task_digests(task)
    if "teacher" in study.user_attrs:  # set up by an earlier version's claim, or resumed
        check_task(study, digests, cache_dir=spec.results_dir)
    else:
        cache = Path(spec.results_dir).resolve()
        files = {k: p for k, p in teacher_files().items() if cache in p.resolve().parents}
        publish_teacher(
            study, store, digests=digests, files=files, cache_dir=cache, threads=worker.threads
        )
    ctx = worker.context()
    baseline = ensure_baseline(study, ctx, paths.baseline_dir)
    _check_same_device(baseline, worker.target, spec.study_name)
    _pair(ctx, baseline, paths.baseline_dir)
    ensure_quantization(study, ctx, paths.baseline_dir)
    return Joined(study=study, store=store, ctx=ctx, cpu=worker.cpu)


def _pair(ctx: Context, baseline: BaselineRecord, references: Path) -> None:
    """Every later measurement is paired with the baseline (:mod:`search.measure.paired`);
    the latency input is kept for confirmations (``report --confirm``)."""
    from search.study.confirm import save_latency_input
    from search.study.references import pair_with_baseline

    pair_with_baseline(ctx, baseline, references)
    save_latency_input(references, ctx.task.example_input.numpy())
    if not ctx.task.has_test_split:
        console.print("note: this task has no separate test split; no test figure is reported")


def _fetch_recorded_teacher(worker: _Worker, storage: optuna.storages.RDBStorage) -> None:
    """Download the study's teacher, if it has one, before this worker loads its task."""
    spec = worker.spec
    if worker.task is not None or spec.study_name not in optuna.get_all_study_names(storage):
        return
    study = optuna.load_study(study_name=spec.study_name, storage=storage)
    if "teacher" in study.user_attrs:
        store = study_store(study, override=spec.worker.artifacts, default=spec.study_dir)
        fetch_teacher(study, store, spec.results_dir)


def _join_set_up(worker: _Worker, storage: optuna.storages.RDBStorage) -> Joined:
    """Join a study another worker set up: its teacher, checked digests, the same device."""
    spec = worker.spec
    _fetch_recorded_teacher(worker, storage)
    worker.check()  # this worker's model passes the checks before it joins
    study = worker.opener(spec, create=True, storage=storage)  # refuses other settings
    paths = spec.paths
    store = study_store(study, override=spec.worker.artifacts, default=paths.store)
    check_task(study, task_digests(worker.load()), cache_dir=spec.results_dir)
    baseline = baseline_of(study)
    if baseline is None:
        raise SearchError(
            f"study {spec.study_name!r} was set up without a baseline (its setup was "
            "interrupted): rerun the same command to finish it"
        )
    _check_same_device(baseline, worker.target, spec.study_name)
    ctx = worker.context()
    _pair(ctx, baseline, paths.baseline_dir)
    return Joined(study=study, store=store, ctx=ctx, cpu=worker.cpu)


def _requeue_seed_once(
    worker: _Worker, storage: optuna.storages.RDBStorage, joined: Joined
) -> None:
    """Enqueue the warm-start trials again that an interruption lost: once per loss,
    whichever worker gets there first."""
    from search.study.references import ensure_quantization
    from search.study.warm_start import enqueued

    study = joined.study
    warm = enqueued(study)
    if not warm:
        return
    lost = sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.system_attrs.get("fixed_params") in warm and t.user_attrs.get("interrupted")
    )
    if lost:
        refs = worker.spec.paths.baseline_dir
        settings = worker.spec.worker
        run_once(
            storage,
            worker.spec.study_name,
            f"seed-requeue-{lost}",
            lambda: ensure_quantization(study, joined.ctx, refs),
            heartbeat_s=settings.heartbeat_s,
            grace_s=settings.grace_s,
        )


def _check_same_device(baseline: BaselineRecord, target: Target, study_name: str) -> None:
    """Refuse to resume a study on another machine: its numbers would not compare."""
    before = baseline.measurement.get("device")
    if before and target.device and before != target.device:
        raise SearchError(
            f"study {study_name!r} was measured on '{before}', but this run measures on "
            f"'{target.device}' ({target.where}): resume it on the same target or start a new "
            "study with --study"
        )


def attach_target(ctx: Context, target: Target, latency_input: np.ndarray) -> None:
    """Tell ``ctx`` where its files are measured: ``measured_here`` is False for an agent or a
    runtime of its own, and for a runtime of its own on this machine ``ctx.outputs`` runs the
    sensitivity pass's files there too (this onnxruntime may lack the profile's provider; a
    remote agent's profile goes without the pass, see
    :func:`~search.study.references.quantization_references`)."""
    ctx.measured_here = target.where == "here"
    if not ctx.measured_here and ctx.profile.agent is None:

        def outputs(path: Path) -> list[np.ndarray]:  # unpaired: only outputs are used
            return target.measure(
                path, eval_inputs=ctx.eval_inputs, latency_input=latency_input
            ).outputs

        ctx.outputs = outputs
