"""The ask/tell loop: set the study up (or join it), run the missing trials, tell Optuna how
each ended, write the report after each, confirm the front at the end.

A trial that raises is recorded FAIL with its step and reason and the study goes on; Ctrl-C,
a full disk or a failing target stop the run and leave the trial to be redone on resume.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, cast

import optuna
from optuna.trial import TrialState

from search.config import Profile
from search.core import interrupts
from search.core.checks import disk_problem
from search.core.device import on_spec_device
from search.core.formatting import fmt
from search.distributed.budget import counted, next_trial, start_attempt
from search.distributed.storage import open_storage
from search.errors import AgentError, ProviderError
from search.record import TrialRecord, baseline_of
from search.study.plans import after_trial, skip_same_plan
from search.study.preflight import preflight
from search.study.resume import fail_stale_trials
from search.study.samplers import build_sampler
from search.study.spec import StudySpec, open_study

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from search.config import TrialConfig
    from search.core.progress import TrialBars
    from search.distributed.host_locks import CpuLock, Items
    from search.measure.target import Target
    from search.study.setup import Joined
    from search.trial.context import Context


@on_spec_device  # trains on spec.train_device; a missing CUDA device fails before any work
def run_study(spec: StudySpec, *, trials: int, progress: bool = True) -> optuna.Study:
    """Run trials until the study holds ``trials`` counted ones, with any number of workers on
    the same storage (:mod:`search.distributed.budget`); returns the study."""
    from search.distributed.host_locks import CpuLock
    from search.measure.target import close_target, open_target

    preflight(spec)  # folder, free space, space vs profile: before anything is created
    # Checks providers and architecture where the measurement runs (here or on the agent) before
    # anything is created, so a profile that cannot be measured stops with exit 2 and no study.
    profile, cpu = spec.profile, CpuLock()
    target = open_target(
        profile.measure_spec(),
        agent=profile.agent,
        runtime=profile.runtime,  # a runtime of its own: an agent started here, stopped below
        token_env=profile.agent_token_env,
        timing=cpu.timing,  # latency timed here is noise while another worker here trains
    )
    try:
        return _run_opened(spec, target=target, cpu=cpu, trials=trials, progress=progress)
    finally:
        close_target(target)


def _run_opened(
    spec: StudySpec, *, target: Target, cpu: CpuLock, trials: int, progress: bool
) -> optuna.Study:
    """:func:`run_study` once its target is open."""
    from search.core.progress import console
    from search.core.threads import apply_threads, resolve_threads
    from search.distributed.host_locks import Paced, WorkerRegistry
    from search.distributed.storage import storage_exists
    from search.study.confirm import confirm_after_run
    from search.study.setup import join_study

    profile = spec.profile
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
        # Training yields to latency timing of any worker on this host between batches. A task's
        # train split is map-style (torch's Dataset type declares no __len__), and so is Paced.
        train = cast("Items", joined.ctx.task.train)
        joined.ctx.task.train = cast("Dataset", Paced(train, cpu))
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
    from search.core.progress import console

    intra = profile.threads.intra_op
    if not profile.agent and (intra == 0 or intra > threads):
        console.print(
            f"note: latency is timed with the profile's ONNX Runtime threads "
            f"({intra or 'all cores'}), more than this worker's --threads {threads}; no worker "
            "on this machine trains while a model is timed"
        )


def _run_trials(
    study: optuna.Study, spec: StudySpec, joined: Joined, *, trials: int, progress: bool
) -> None:
    """Ask, run and tell until ``trials`` are counted; the report is rewritten after each."""
    from search.core.progress import TrialBars, console, study_progress

    todo = max(trials - counted(study.get_trials(deepcopy=False)), 0)
    if todo == 0:
        console.print(f"study {spec.study_name!r} already has {trials} finished trials")

    def waiting(done: int, running: int) -> None:
        console.print(
            f"{done} of {trials} trials counted, {running} running on other workers: waiting "
            f"(a dead worker's trial is retried after {spec.worker.grace_s} s)"
        )

    try:
        with interrupts.terminate_as_interrupt(), study_progress(disable=not progress) as bars:
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
        _write_outputs(study, spec.study_dir, html=True)


def _write_outputs(study: optuna.Study, study_dir: Path, *, html: bool) -> None:
    """The report files, written by one worker of this host at a time (they may share them)."""
    from search.distributed.host_locks import host_lock
    from search.report import write_outputs

    with host_lock("report", str(Path(study_dir).resolve())):
        write_outputs(study, study_dir, html=html)


def _one_trial(
    study: optuna.Study, trial: optuna.Trial, spec: StudySpec, joined: Joined, bars: TrialBars
) -> None:
    """Run one asked trial and tell Optuna how it ended (failures are recorded)."""
    from search.core.progress import console
    from search.trial.pipeline import failure_reason, run_trial

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
        out_dir = spec.paths.trial_dir(trial.number)
        on_epoch = _early_stop(trial, spec, ctx, bars, cpu=joined.cpu)
        record = run_trial(cfg, ctx=ctx, out_dir=out_dir, on_epoch=on_epoch, number=trial.number)
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
        trial.set_user_attr("fail_reason", interrupts.stop_reason(e))
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
    _tell_complete(study, trial, spec, joined, cfg=cfg, record=record, started=started)
    after_trial(study, trial, record, space=spec.space, profile=spec.profile)


def _stop_for_disk(study: optuna.Study, trial: optuna.Trial, e: BaseException) -> None:
    """Mark ``trial`` interrupted (by a full disk or Ctrl-C), if the storage can still be
    written; if not, the next run finds it RUNNING with its process gone and marks it so."""
    try:
        trial.set_user_attr("fail_reason", f"stopped: {disk_problem(e) or 'interrupted'}")
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=TrialState.FAIL)
    except Exception:  # noqa: BLE001, S110 - the storage is on the full disk too
        pass


def _early_stop(
    trial: optuna.Trial, spec: StudySpec, ctx: Context, bars: TrialBars, *, cpu: CpuLock
) -> Callable[[int, float], None]:
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
    joined: Joined,
    *,
    cfg: TrialConfig,
    record: TrialRecord,
    started: float,
) -> None:
    """Store the record, files and budgets of a finished trial, tell Optuna, print one line."""
    from search.core.progress import console
    from search.distributed.artifacts import ArtifactError, upload_trial
    from search.report.console import load_note, test_note

    ctx = joined.ctx
    try:
        upload_trial(trial, joined.store, Path(record.artifacts))  # before tell: attrs freeze
    except Exception as e:
        # The store is gone (unmounted, full, unreachable): later trials would fail the same
        # way. Stop; a rerun redoes this trial.
        trial.set_user_attr("fail_reason", f"upload to the artifact store: {e}")
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=TrialState.FAIL)
        raise ArtifactError(f"trial {trial.number}: cannot upload its files: {e}") from None
    trial.set_user_attr("record", record.to_json())
    for key, value in _violations(record, spec.profile).items():
        trial.set_constraint(key, value)  # samplers treat > 0 as infeasible
    trial.set_user_attr("duration_s", round(time.perf_counter() - started, 2))
    study.tell(trial, list(record.objectives()))
    baseline = baseline_of(study)
    base_acc = baseline.accuracy if baseline else float("nan")
    speed = baseline.speedup(record.latency_paired_ms) if baseline else None
    kernels = f"{record.kernels.get('integer_layers', '?')} integer"
    if "fp16" in cfg.quantize.precision.values():  # did the provider keep them in float16?
        kernels += f", {record.kernels.get('fp16_layers', '?')} fp16"
    console.print(
        f"trial {trial.number}: {ctx.task.metric_name} {record.accuracy:.4f} "
        f"({record.accuracy - base_acc:+.4f}){test_note(record)}, p50 "
        f"{record.latency_paired_ms:.3f} ms ({fmt(speed, '.2f')}x), "
        f"{fmt(record.size_mb, '.2f')} MB, prune {cfg.prune.ratio:.2f}, "
        f"{cfg.distill.epochs} epoch(s), {kernels} layer kernel(s), "
        f"{time.perf_counter() - started:.1f} s{load_note(record)}"
    )


def _violations(record: TrialRecord, profile: Profile) -> dict[str, float]:
    """Optuna constraint values of the profile's budgets: > 0 means over budget."""
    b, memory = profile.budgets, record.peak_memory_mb
    return {
        "latency_budget_ms": record.latency_paired_ms - b.latency_ms if b.latency_ms else 0.0,
        "memory_budget_mb": memory - b.memory_mb if b.memory_mb and memory is not None else 0.0,
    }
