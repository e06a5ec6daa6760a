"""Create or load the Optuna study, measure the baseline, run the missing trials, resume.

Objectives: maximize the task metric of the exported ONNX file, minimize its p50 latency at the
profile's first batch size. Everything else a trial measured is in its user attributes.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import signal
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState

from search import interrupts
from search.checks import check_study_name, disk_problem, preflight
from search.config import Profile, Space
from search.device import on_spec_device
from search.distributed import counted, next_trial, start_attempt
from search.errors import AgentError, ProviderError, SearchError
from search.objectives import DIRECTIONS, OBJECTIVES
from search.resume import check_settings, content_digests, fail_stale_trials, legacy_digests
from search.samplers import build_sampler
from search.storage import open_storage, redact_url
from search.students import after_trial, skip_same_plan
from search.threads import WorkerSettings

if TYPE_CHECKING:
    from search.progress import TrialBars


@dataclass(frozen=True)
class StudySpec:
    """Where a study lives and what it searches."""

    task: str
    space: Space
    profile: Profile
    study_name: str
    results_dir: Path
    storage: str | None = None
    seed: int = 0
    # Keyword options for the task factory (model, weights, data, ...); part of the settings.
    task_options: dict[str, Any] = field(default_factory=dict)
    # Seed of the sampler alone when set (the benchmark's repeats: same task, teacher and
    # training seed, another sampler seed); None: ``seed``.
    sampler_seed: int | None = None
    train_device: str = "auto"  # auto, cpu, cuda[:N]: not a setting (a study may move)
    # How this worker runs (threads, artifact store, heartbeat); not part of the settings.
    worker: WorkerSettings = field(default_factory=WorkerSettings)

    def __post_init__(self) -> None:
        check_study_name(self.study_name)  # a name, not a path: the study stays in results_dir

    @property
    def study_dir(self) -> Path:
        return self.results_dir / self.study_name

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.study_dir / 'study.db'}"

    def settings(self) -> dict[str, Any]:
        """What a resumed study must match: task, options, seed, and what the space and profile
        files say (:func:`search.resume.content_digests`)."""
        settings: dict[str, Any] = {
            "task": self.task,
            "space": self.space.name,
            "profile": self.profile.name,
            "seed": self.seed,
        }
        if self.sampler_seed is not None:
            settings["sampler_seed"] = self.sampler_seed
        if self.task_options:
            settings["task_options"] = {k: str(v) for k, v in sorted(self.task_options.items())}
        return {**settings, **content_digests(self.space, self.profile)}


def open_study(
    spec: StudySpec,
    *,
    create: bool,
    metric: str | None = None,
    storage: optuna.storages.BaseStorage | None = None,
    scored: bool = False,
) -> optuna.Study:
    """Load the study, or create it when ``create``; refuse a study made with other settings.

    ``metric`` (the task's metric name, e.g. ``accuracy``) is kept as the study user attribute
    ``metric`` for the report's labels. ``storage``: an opened storage (default: open
    ``spec.storage_url``). ``scored``: refuse a study scored the old way (a run adds trials).
    """
    from search.claims import is_claim_study
    from search.resume import record_scoring

    if create and spec.storage is None:
        spec.study_dir.mkdir(parents=True, exist_ok=True)
    storage = storage or open_storage(spec.storage_url)
    names = [n for n in optuna.get_all_study_names(storage) if not is_claim_study(n)]
    if spec.study_name not in names and not create:
        raise SearchError(
            f"no study {spec.study_name!r} in {redact_url(spec.storage_url)}; "
            f"studies there: {', '.join(names) or 'none'}"
        )
    study = optuna.create_study(
        study_name=spec.study_name,
        storage=storage,
        directions=list(DIRECTIONS),
        load_if_exists=True,
    )
    if not create:
        return study
    record_scoring(study, refuse_old=scored)  # before anything else is written
    old = study.user_attrs.get("settings")
    if old is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # set_metric_names is marked experimental
            study.set_metric_names(list(OBJECTIVES))
        study.set_user_attr("settings", spec.settings())
        # The files themselves, for reproducing; not compared on resume (a path may move).
        study.set_user_attr("sources", {"space": spec.space.path, "profile": spec.profile.path})
    else:
        legacy = legacy_digests(spec.space, spec.profile)
        new = spec.settings()
        if check_settings(old, new, legacy=legacy, study_name=spec.study_name):
            study.set_user_attr("settings", new)  # the same content, now in version-2 digests
    if metric is not None and study.user_attrs.get("metric") != metric:
        study.set_user_attr("metric", metric)
    return study


class _Terminated(KeyboardInterrupt):
    pass


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated(f"signal {signum}")


@on_spec_device  # trains on spec.train_device; a missing CUDA device fails before any work
def run_study(spec: StudySpec, *, trials: int, progress: bool = True) -> optuna.Study:
    """Run trials until the study holds ``trials`` counted ones, with any number of workers on
    the same storage (:mod:`search.distributed`); returns the study."""
    from search.confirm import confirm_after_run
    from search.measure.target import open_target
    from search.progress import console
    from search.storage import storage_exists
    from search.study_setup import join_study
    from search.threads import CpuLock, Paced, WorkerRegistry, apply_threads, resolve_threads

    preflight(spec)  # folder, free space, space vs profile: before anything is created
    # Checks providers and architecture where the measurement runs (here or on the agent) before
    # anything is created, so a profile that cannot be measured stops with exit 2 and no study.
    profile, cpu = spec.profile, CpuLock()
    target = open_target(
        profile.measure_spec(),
        agent=profile.agent,
        token_env=profile.agent_token_env,
        timing=cpu.timing,  # latency timed here is noise while another worker here trains
    )
    settings = spec.worker
    storage = None
    if storage_exists(spec.storage_url, default=spec.storage is None):  # bad URLs fail now
        storage = open_storage(
            spec.storage_url, heartbeat_s=settings.heartbeat_s, grace_s=settings.grace_s
        )
    threads = resolve_threads(settings.threads)
    apply_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with WorkerRegistry(threads=threads, study=spec.study_name) as registry:
        if note := registry.sharing_note():
            console.print(note)
        _note_timing_threads(profile, threads)
        opener = functools.partial(open_study, scored=True)  # refuses old-scored studies
        joined = join_study(
            spec, storage=storage, target=target, cpu=cpu, threads=threads, opener=opener
        )
        study = joined.study
        spec = dataclasses.replace(spec, space=joined.ctx.space)  # groups fitted to the model
        stale = fail_stale_trials(study)
        if stale:
            console.print(f"marked {stale} interrupted trial(s) as failed; they will be rerun")
        # Training yields to latency timing of any worker on this host between batches.
        joined.ctx.task.train = Paced(joined.ctx.task.train, cpu)
        try:
            _run_trials(study, spec, joined, trials=trials, progress=progress)
        finally:
            cpu.release()
        confirm_after_run(study, profile=profile, study_dir=spec.study_dir, target=target)
    console.print(f"results: {spec.study_dir} (trials.csv, report.html, artifacts/)")
    return study


def _note_timing_threads(profile: Profile, threads: int) -> None:
    """Say when the profile's ONNX Runtime threads exceed this worker's torch threads: they
    describe the target, so every worker times with them (under the host's timing lock)."""
    from search.progress import console

    intra = profile.threads.intra_op
    if not profile.agent and (intra == 0 or intra > threads):
        console.print(
            f"note: latency is timed with the profile's ONNX Runtime threads "
            f"({intra or 'all cores'}), more than this worker's --threads {threads}; no worker "
            "on this machine trains while a model is timed"
        )


def _run_trials(
    study: optuna.Study, spec: StudySpec, joined: Any, *, trials: int, progress: bool
) -> None:
    """Ask, run and tell until ``trials`` are counted; the report is rewritten after each."""
    from search.progress import TrialBars, console, study_progress

    todo = max(trials - counted(study.get_trials(deepcopy=False)), 0)
    if todo == 0:
        console.print(f"study {spec.study_name!r} already has {trials} finished trials")

    def waiting(done: int, running: int) -> None:
        console.print(
            f"{done} of {trials} trials counted, {running} running on other workers: waiting "
            f"(a dead worker's trial is retried after {spec.worker.grace_s} s)"
        )

    old_handler = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with study_progress(disable=not progress) as bars:
            overall = bars.add_task("trials", total=todo)
            epochs = bars.add_task("distillation", total=None, visible=False)
            while (got := next_trial(study, trials, on_wait=waiting)) is not None:
                trial, beat = got
                with beat:
                    # Seeded by trial number: reproducible, and distinct across workers.
                    seed = spec.seed if spec.sampler_seed is None else spec.sampler_seed
                    study.sampler = build_sampler(
                        spec.space.search, seed=seed, n_existing=trial.number
                    )
                    _one_trial(study, trial, spec, joined, TrialBars(bars, epochs))
                joined.cpu.release()  # idle: let other workers on this host time
                bars.advance(overall)
                _write_outputs(study, spec.study_dir, html=False)
    finally:
        signal.signal(signal.SIGTERM, old_handler)
        _write_outputs(study, spec.study_dir, html=True)


def _write_outputs(study: optuna.Study, study_dir: Path, *, html: bool) -> None:
    """The report files, written by one worker of this host at a time (they may share them)."""
    from search.report import write_outputs
    from search.threads import host_lock

    with host_lock("report", str(Path(study_dir).resolve())):
        write_outputs(study, study_dir, html=html)


def _one_trial(
    study: optuna.Study, trial: optuna.Trial, spec: StudySpec, joined: Any, bars: TrialBars
) -> None:
    """Run one asked trial and tell Optuna how it ended (failures are recorded)."""
    from search.progress import console
    from search.trial import failure_reason, run_trial

    retry_of = start_attempt(study, trial)
    if retry_of is not None:
        console.print(f"trial {trial.number}: retrying trial {retry_of} (its worker stopped)")
    ctx = joined.ctx
    started = time.perf_counter()
    try:
        cfg = spec.space.sample(trial, spec.profile)
        trial.set_user_attr("config", cfg.to_dict())
        skip_same_plan(study, trial, space=spec.space, profile=spec.profile, cfg=cfg)
        bars.show(trial.number, 0, total=cfg.distill.epochs)
        out_dir = spec.study_dir / "artifacts" / str(trial.number)
        on_epoch = _early_stop(trial, spec, ctx, bars, cpu=joined.cpu)
        result = run_trial(cfg, ctx=ctx, out_dir=out_dir, on_epoch=on_epoch, number=trial.number)
    except optuna.TrialPruned as e:
        trial.set_user_attr("fail_reason", f"stopped early: {e}")
        study.tell(trial, state=TrialState.PRUNED)
        console.print(f"trial {trial.number}: stopped early ({e})")
        return
    except (KeyboardInterrupt, AgentError, ProviderError) as e:
        # Interrupted, or the target (not the trial) failed: agent down, provider fallback.
        # Later trials would fail the same way: stop, and let a rerun redo this trial.
        if isinstance(e, KeyboardInterrupt):
            interrupts.handled()  # seen: the way out is known, no need to deliver it again
        trial.set_user_attr("fail_reason", _stop_reason(e))
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as e:  # noqa: BLE001 - a crashing trial is recorded, the study goes on
        if disk_problem(e) or interrupts.requested():  # a full disk or a converted Ctrl-C:
            _stop_for_disk(study, trial, e)  # stop, and redo this trial on the rerun
            raise
        reason = failure_reason(e)  # the step, and the layer or file:line
        trial.set_user_attr("fail_reason", reason)
        study.tell(trial, state=TrialState.FAIL)
        console.print(f"trial {trial.number}: failed: {reason}")
        return
    finally:
        bars.hide()
    _tell_complete(study, trial, spec, joined, cfg=cfg, result=result, started=started)
    after_trial(study, trial, result.record, space=spec.space, profile=spec.profile)


def _stop_for_disk(study: optuna.Study, trial: optuna.Trial, e: BaseException) -> None:
    """Mark ``trial`` interrupted (by a full disk or Ctrl-C), if the storage can still be
    written; if not, the next run finds it RUNNING with its process gone and marks it so."""
    try:
        trial.set_user_attr("fail_reason", f"stopped: {disk_problem(e) or 'interrupted'}")
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=TrialState.FAIL)
    except Exception:  # noqa: BLE001, S110 - the storage is on the full disk too
        pass


def _stop_reason(e: BaseException) -> str:
    if isinstance(e, _Terminated):
        return f"interrupted by {e}"
    if isinstance(e, KeyboardInterrupt):
        return "interrupted by the user"
    return f"{type(e).__name__}: {e}"


def _early_stop(
    trial: optuna.Trial, spec: StudySpec, ctx: Any, bars: TrialBars, *, cpu: Any
) -> Any:
    """``on_epoch`` of one trial: record its validation metric, stop it when hopeless."""
    stop, base_val = spec.space.early_stop, ctx.baseline_val

    def on_epoch(epoch: int, val: float) -> None:
        cpu.release()  # training paused: another worker here may time (the next batch waits)
        trial.set_user_attr("val_history", [*trial.user_attrs.get("val_history", []), val])
        bars.show(trial.number, epoch)
        if epoch >= stop.min_epochs and val < base_val - stop.max_accuracy_drop:
            raise optuna.TrialPruned(
                f"validation {ctx.task.metric_name} {val:.4f} after epoch {epoch} is more than "
                f"{stop.max_accuracy_drop} below the baseline's {base_val:.4f}"
            )

    return on_epoch


def _tell_complete(
    study: optuna.Study,
    trial: optuna.Trial,
    spec: StudySpec,
    joined: Any,
    *,
    cfg: Any,
    result: Any,
    started: float,
) -> None:
    """Store the record, files and budgets of a finished trial, tell Optuna, print one line."""
    from search.artifacts import ArtifactError, upload_trial
    from search.progress import console
    from search.report.console import load_note, test_note

    ctx, rec = joined.ctx, result.record
    try:
        upload_trial(trial, joined.store, Path(rec["artifacts"]))  # before tell: attrs freeze
    except Exception as e:
        # The store is gone (unmounted, full, unreachable): later trials would fail the same
        # way. Stop; a rerun redoes this trial.
        trial.set_user_attr("fail_reason", f"upload to the artifact store: {e}")
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=TrialState.FAIL)
        raise ArtifactError(f"trial {trial.number}: cannot upload its files: {e}") from None
    trial.set_user_attr("record", json.loads(json.dumps(rec, default=str)))
    for key, value in _violations(rec, spec.profile).items():
        trial.set_constraint(key, value)  # samplers treat > 0 as infeasible
    trial.set_user_attr("duration_s", round(time.perf_counter() - started, 2))
    study.tell(trial, [result.accuracy, result.latency_ms])
    baseline = study.user_attrs["baseline"]
    kernels = f"{rec['kernels'].get('integer_layers', '?')} integer"
    if "fp16" in cfg.quantize.precision.values():  # did the provider keep them in float16?
        kernels += f", {rec['kernels'].get('fp16_layers', '?')} fp16"
    speed = baseline["latency_p50_ms"] / result.latency_ms if result.latency_ms else float("nan")
    console.print(
        f"trial {trial.number}: {ctx.task.metric_name} {result.accuracy:.4f} "
        f"({result.accuracy - baseline['accuracy']:+.4f}){test_note(rec)}, p50 "
        f"{result.latency_ms:.3f} ms ({speed:.2f}x), {rec['size_mb']:.2f} MB, prune "
        f"{cfg.prune.ratio:.2f}, {cfg.distill.epochs} epoch(s), {kernels} layer kernel(s), "
        f"{time.perf_counter() - started:.1f} s{load_note(rec)}"
    )


def _violations(record: dict[str, Any], profile: Profile) -> dict[str, float]:
    """Optuna constraint values of the profile's budgets: > 0 means over budget."""
    b = profile.budgets
    return {
        "latency_budget_ms": record["latency_p50_ms"] - b.latency_ms if b.latency_ms else 0.0,
        "memory_budget_mb": record["peak_memory_mb"] - b.memory_mb if b.memory_mb else 0.0,
    }
