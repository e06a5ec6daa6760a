"""The ask/tell loop: set the study up (or join it), run the missing trials, tell Optuna how
each ended, write the report after each, confirm the front at the end.

A trial that raises is recorded FAIL with its step and reason and the study goes on; Ctrl-C,
a full disk or a failing target stop the run and leave the trial to be redone on resume.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from search.config import Profile
from search.core import interrupts
from search.core.checks import disk_problem
from search.distributed.budget import counted, next_trial, start_attempt
from search.distributed.storage import open_storage
from search.errors import AgentError, ProviderError
from search.study.outcome import tell_complete, tell_ended
from search.study.plans import after_trial, skip_same_plan
from search.study.preflight import preflight
from search.study.resume import fail_stale_trials
from search.study.samplers import build_sampler
from search.study.spec import StudySpec, open_study

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

    from search.core.progress import TrialBars
    from search.distributed.host_locks import CpuLock, Items
    from search.measure.target import Target
    from search.study.setup import Joined
    from search.trial.context import Context


@dataclasses.dataclass
class Checked:
    """What :func:`check_study` found: the training device, where trials are measured, and the
    notes to print once the task has passed its checks too (nothing is said before)."""

    device: torch.device
    target: Target
    notes: list[str]


def check_study(
    spec: StudySpec, *, timing: Callable[[], AbstractContextManager] | None = None
) -> Checked:
    """Check every input of ``spec`` that can be checked before its task is loaded, creating
    nothing and printing nothing: the training device, the results folder (writable, with room),
    the space against the profile, the profile's providers where it is measured (here or on
    its agent), and the storage URL (its folder, its driver, its server). ``run --workers N``
    calls it before any worker starts; :func:`run_study` before anything is created. Close
    the returned target with :func:`~search.measure.target.close_target` (a profile's
    ``runtime`` starts an agent here).

    Raises:
        SearchError: one line naming the input and the fix.
    """
    from search.core.device import resolve
    from search.distributed.storage import check_storage
    from search.measure.target import close_target, open_target

    notes: list[str] = []
    device = resolve(spec.train_device, say=notes.append)
    preflight(spec)  # folder, free space, space vs profile
    profile = spec.profile
    target = open_target(
        profile.measure_spec(), agent=profile.agent, token_env=profile.agent_token_env,
        runtime=profile.runtime,  # a runtime of its own: an agent started here
        timing=timing,
    )  # fmt: skip
    try:
        check_storage(spec.storage_url, default=spec.storage is None)
    except BaseException:
        close_target(target)
        raise
    return Checked(device=device, target=target, notes=notes)


def run_study(
    spec: StudySpec,
    *,
    trials: int,
    progress: bool = True,
    enqueue: Sequence[dict[str, Any]] = (),
) -> optuna.Study:
    """Run trials until the study holds ``trials`` counted ones, with any number of workers on
    the same storage (:mod:`search.distributed.budget`); returns the study.

    Every input is checked before anything is created (:func:`check_study`, then the task and
    its model), and notes are printed only after that: bad input is one line.

    ``enqueue``: Optuna params of trials to run first, enqueued once the study exists and has
    loaded its task (a task that fails to load leaves no study), and only into a study without
    trials of its own (a resumed rerun does not enqueue them again).
    """
    from search.core.device import use
    from search.distributed.host_locks import CpuLock
    from search.measure.target import close_target

    cpu = CpuLock()
    # Latency timed here is noise while another worker here trains: timing holds the lock.
    checked = check_study(spec, timing=cpu.timing)
    try:
        with use(checked.device):
            return _run_checked(
                spec, checked, cpu=cpu, trials=trials, progress=progress, enqueue=enqueue
            )
    finally:
        close_target(checked.target)


def _run_checked(
    spec: StudySpec,
    checked: Checked,
    *,
    cpu: CpuLock,
    trials: int,
    progress: bool,
    enqueue: Sequence[dict[str, Any]],
) -> optuna.Study:
    from search.core.progress import console
    from search.core.threads import apply_threads, choose_threads
    from search.distributed.host_locks import Paced, WorkerRegistry
    from search.distributed.storage import storage_exists
    from search.study.confirm import confirm_after_run
    from search.study.setup import join_study

    profile, target, settings = spec.profile, checked.target, spec.worker
    storage = None
    if storage_exists(spec.storage_url, default=spec.storage is None):
        storage = open_storage(
            spec.storage_url, heartbeat_s=settings.heartbeat_s, grace_s=settings.grace_s
        )
    choice = choose_threads(settings.threads)
    threads = choice.threads
    apply_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with WorkerRegistry(threads=threads, study=spec.study_key) as registry:

        def say_notes() -> None:  # once the task and its model passed their checks
            for line in checked.notes:
                print(line, flush=True)
            if not settings.threads:
                console.print(f"threads: {threads} ({choice.why}); --threads N overrides")
            if note := registry.sharing_note():
                console.print(note)
            _note_timing_threads(profile, threads)

        opener = functools.partial(open_study, scored=True)  # refuses old-scored studies
        joined = join_study(
            spec, storage=storage, target=target, cpu=cpu, threads=threads, opener=opener,
            on_checked=say_notes,
        )  # fmt: skip
        study = joined.study
        spec = dataclasses.replace(spec, space=joined.ctx.space)  # groups fitted to the model
        _enqueue_and_fail_stale(study, enqueue)
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


def _enqueue_and_fail_stale(study: optuna.Study, enqueue: Sequence[dict[str, Any]]) -> None:
    """Enqueue ``enqueue`` into a study without finished trials, and mark the trials a stopped
    worker left running as failed (their configurations are rerun)."""
    from search.core.progress import console

    if enqueue and not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        for params in enqueue:
            study.enqueue_trial(dict(params), skip_if_exists=True)
    stale = fail_stale_trials(study)
    if stale:
        console.print(f"marked {stale} interrupted trial(s) as failed; they will be rerun")


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
                    _said_trial(
                        study, trial, spec, joined, TrialBars(bars, epochs), n_trials=trials,
                        lines=not progress,
                    )  # fmt: skip
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


def _said_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    spec: StudySpec,
    joined: Joined,
    bars: TrialBars,
    *,
    n_trials: int,
    lines: bool,
) -> None:
    """:func:`_one_trial`; with ``lines`` (no bars: a log file or ``--no-progress``) said as a
    step of lines: a line per epoch and one at least every 10 s (issue 28)."""
    import sys

    from search.core.progress import Ticker

    if not lines:
        _one_trial(study, trial, spec, joined, bars, n_trials=n_trials)
        return
    with Ticker(f"trial {trial.number}", stream=sys.stderr) as ticker:
        bars.ticker = ticker
        _one_trial(study, trial, spec, joined, bars, n_trials=n_trials)


def _one_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    spec: StudySpec,
    joined: Joined,
    bars: TrialBars,
    *,
    n_trials: int,
) -> None:
    """Run one asked trial and tell Optuna how it ended (failures are recorded); a trial that
    another worker judged dead meanwhile is told by :mod:`search.study.outcome`."""
    from search.core.progress import console
    from search.trial.pipeline import failure_reason, run_trial

    ctx, history = joined.ctx, list[float]()
    started = time.perf_counter()
    ended = functools.partial(tell_ended, study, trial, n_trials=n_trials, history=history)
    try:
        retry_of = start_attempt(study, trial)
        if retry_of is not None:
            console.print(f"trial {trial.number}: redo of interrupted trial {retry_of}")
        cfg = spec.space.sample(trial, spec.profile)
        trial.set_user_attr("config", cfg.to_dict())
        skip_same_plan(study, trial, space=spec.space, profile=spec.profile, cfg=cfg)
        bars.show(trial.number, 0, total=cfg.distill.epochs)
        out_dir = spec.paths.trial_dir(trial.number)
        on_epoch = _early_stop(trial, spec, ctx, bars, cpu=joined.cpu, history=history)
        record = run_trial(cfg, ctx=ctx, out_dir=out_dir, on_epoch=on_epoch, number=trial.number)
    except optuna.TrialPruned as e:
        told = ended(state=TrialState.PRUNED, reason=f"stopped early: {e}")
        console.print(f"trial {told.number}: stopped early ({e})")
        return
    except UpdateFinishedTrialError:  # judged dead before its work began: its retry does it
        console.print(
            f"trial {trial.number}: another worker judged it dead (no heartbeat within "
            "--grace) as it started; its retry runs it"
        )
        return
    except (KeyboardInterrupt, AgentError, ProviderError) as e:
        # Interrupted, or the target (not the trial) failed: agent down, provider fallback.
        # Later trials would fail the same way: stop, and let a rerun redo this trial.
        _mark_interrupted(study, trial, e)
        raise
    except Exception as e:  # noqa: BLE001 - a crashing trial is recorded, the study goes on
        if disk_problem(e) or interrupts.requested():  # a full disk or a converted Ctrl-C:
            _stop_for_disk(study, trial, e)  # stop, and redo this trial on the rerun
            raise
        reason = failure_reason(e)  # the step, and the layer or file:line
        told = ended(state=TrialState.FAIL, reason=reason)
        console.print(f"trial {told.number}: failed: {reason}")
        return
    finally:
        bars.hide()
    told = tell_complete(
        study, trial, joined, cfg=cfg, record=record, started=started, n_trials=n_trials,
        history=history,
    )  # fmt: skip
    after_trial(study, told, record, space=spec.space, profile=spec.profile)


def _mark_interrupted(study: optuna.Study, trial: optuna.Trial, e: BaseException) -> None:
    """Mark ``trial`` interrupted, to be redone by a rerun (a trial another worker judged dead
    meanwhile has its retry already)."""
    if isinstance(e, KeyboardInterrupt):
        interrupts.handled()  # seen: the way out is known, no need to deliver it again
    with contextlib.suppress(UpdateFinishedTrialError, ValueError):
        trial.set_user_attr("fail_reason", interrupts.stop_reason(e))
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=TrialState.FAIL)


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
    trial: optuna.Trial,
    spec: StudySpec,
    ctx: Context,
    bars: TrialBars,
    *,
    cpu: CpuLock,
    history: list[float],
) -> Callable[[int, float], None]:
    """``on_epoch`` of one trial: record its validation metric (in ``history`` too), stop it
    when hopeless. A trial another worker judged dead meanwhile goes on: its result is told
    late (:mod:`search.study.outcome`)."""
    stop, base_val = spec.space.early_stop, ctx.baseline_val

    def on_epoch(epoch: int, val: float) -> None:
        cpu.release()  # training paused: another worker here may time (the next batch waits)
        history.append(val)
        with contextlib.suppress(UpdateFinishedTrialError):
            trial.set_user_attr("val_history", list(history))
        bars.epoch_done(trial.number, epoch, f"{ctx.task.metric_name} {val:.4f}")
        if epoch >= stop.min_epochs and val < base_val - stop.max_accuracy_drop:
            raise optuna.TrialPruned(
                f"validation {ctx.task.metric_name} {val:.4f} after epoch {epoch} is more than "
                f"{stop.max_accuracy_drop} below the baseline's {base_val:.4f}"
            )

    return on_epoch
