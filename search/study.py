"""Create or load the Optuna study, measure the baseline, run the missing trials, resume.

Objectives: maximize the task metric of the exported ONNX file, minimize its p50 latency at the
profile's first batch size. Everything else a trial measured is in its user attributes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from search.config import Profile, Space
from search.errors import AgentError, ProviderError, SearchError
from search.objectives import DIRECTIONS, OBJECTIVES
from search.resume import (
    check_settings,
    content_digests,
    fail_stale_trials,
    finished_count,
    legacy_digests,
)
from search.students import StudentStore, enqueue_plans, replan, same_plan_as


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
    # Where torch trains (auto, cpu, cuda, cuda:N); not a setting: a study may resume elsewhere.
    train_device: str = "auto"

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
        if self.task_options:
            settings["task_options"] = {k: str(v) for k, v in sorted(self.task_options.items())}
        return {**settings, **content_digests(self.space, self.profile)}


def _storage(url: str) -> optuna.storages.BaseStorage:
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
    except Exception as e:  # noqa: BLE001 - any failure to open storage is the user's to fix
        why = str(e).splitlines()[0]
        if "DB access module" in why:
            why = "its database driver is not installed (PostgreSQL: pip install -e '.[postgres]')"
        raise SearchError(f"cannot open storage {url}: {why}") from None


def _engine_kwargs(url: str) -> dict[str, Any]:
    # SQLite under concurrent writers (a second worker, the dashboard) needs a patient lock.
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}


def _sampler(space: Space, seed: int, n_existing: int) -> optuna.samplers.BaseSampler:
    # Resuming with the same seed would replay the first random suggestions; shift it.
    s = seed + n_existing
    settings = space.search
    if settings.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=s)
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=s)
    return optuna.samplers.TPESampler(
        seed=s,
        n_startup_trials=settings.startup_trials,
        multivariate=True,
    )


def open_study(spec: StudySpec, *, create: bool, metric: str | None = None) -> optuna.Study:
    """Load the study, or create it when ``create``; refuse a study made with other settings.

    ``metric`` (the task's metric name, e.g. ``accuracy``) is kept as the study user attribute
    ``metric`` for the report's labels.
    """
    if create and spec.storage is None:
        spec.study_dir.mkdir(parents=True, exist_ok=True)
    storage = _storage(spec.storage_url)
    names = [s.study_name for s in optuna.study.get_all_study_summaries(storage)]
    if spec.study_name not in names and not create:
        raise SearchError(
            f"no study {spec.study_name!r} in {spec.storage_url}; "
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


def run_study(spec: StudySpec, *, trials: int, progress: bool = True) -> optuna.Study:
    """Run trials until the study holds ``trials`` finished ones; returns the study.

    Raises:
        DeviceError: ``spec.train_device`` names a CUDA device torch does not see (before any
            work: no study is created).
    """
    from search.device import resolve, use

    with use(resolve(spec.train_device)):
        return _run_study(spec, trials=trials, progress=progress)


def _run_study(spec: StudySpec, *, trials: int, progress: bool) -> optuna.Study:
    import torch

    from search.context import Context
    from search.measure.target import open_target
    from search.progress import console
    from search.references import ensure_baseline, ensure_quantization
    from search.tasks import load_task

    # Checks providers and architecture where the measurement runs (here or on the agent) before
    # anything is created, so a profile that cannot be measured stops with exit 2 and no study.
    profile = spec.profile
    target = open_target(
        profile.measure_spec(), agent=profile.agent, token_env=profile.agent_token_env
    )
    if spec.storage is not None:
        _storage(spec.storage)  # a bad URL fails now, not after the teacher has trained
    torch.set_num_threads(os.cpu_count() or 1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task = load_task(
        spec.task, seed=spec.seed, cache_dir=spec.results_dir, options=spec.task_options
    )
    study = open_study(spec, create=True, metric=task.metric_name)
    stale = fail_stale_trials(study)
    if stale:
        console.print(f"marked {stale} interrupted trial(s) as failed; they will be rerun")

    latency_input = task.example_input.numpy()  # one fixed array: the same input every trial

    def measure(path: Path) -> Any:
        return target.measure(path, eval_inputs=ctx.eval_inputs, latency_input=latency_input)

    ctx = Context.build(
        task=task, space=spec.space, profile=profile, seed=spec.seed, measure=measure
    )
    references = spec.study_dir / "artifacts" / "baseline"
    baseline = ensure_baseline(study, ctx, references)
    _check_same_device(baseline, target, spec.study_name)
    ensure_quantization(study, ctx, references)
    ctx.students = StudentStore.for_study(spec.study_dir / "students", ctx)
    study.sampler = _sampler(spec.space, spec.seed, len(study.trials))
    _run_trials(study, spec, ctx, trials=trials, progress=progress)
    console.print(f"results: {spec.study_dir} (trials.csv, report.html, artifacts/)")
    return study


def _run_trials(
    study: optuna.Study, spec: StudySpec, ctx: Any, *, trials: int, progress: bool
) -> None:
    """Ask, run and tell until ``trials`` are finished; the report is rewritten after each."""
    from search.progress import console, study_progress
    from search.report import write_outputs

    todo = max(trials - finished_count(study), 0)
    if todo == 0:
        console.print(f"study {spec.study_name!r} already has {trials} finished trials")
    old_handler = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with study_progress(disable=not progress) as bars:
            overall = bars.add_task("trials", total=todo)
            epochs = bars.add_task("distillation", total=None, visible=False)
            for _ in range(todo):
                if finished_count(study) >= trials:  # other workers on a shared storage
                    break
                _one_trial(study, spec, ctx, _Bars(bars, epochs))
                bars.advance(overall)
                write_outputs(study, spec.study_dir, html=False)
    finally:
        signal.signal(signal.SIGTERM, old_handler)
        write_outputs(study, spec.study_dir, html=True)


@dataclass
class _Bars:
    """The progress display and its epoch bar, as one trial updates them."""

    progress: Any
    epochs: Any

    def show(self, number: int, epoch: int, total: int | None = None) -> None:
        update = {"total": total} if total is not None else {}
        self.progress.update(
            self.epochs,
            completed=epoch,
            visible=True,
            description=f"trial {number} epoch {epoch}",
            **update,
        )

    def hide(self) -> None:
        self.progress.update(self.epochs, visible=False)


def _one_trial(study: optuna.Study, spec: StudySpec, ctx: Any, bars: _Bars) -> None:
    """Ask for one trial, run it, and tell Optuna how it ended (failures are recorded)."""
    from search.progress import console
    from search.trial import run_trial

    trial = study.ask()
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    started = time.perf_counter()
    try:
        cfg = spec.space.sample(trial, spec.profile)
        trial.set_user_attr("config", cfg.to_dict())
        _skip_same_plan(study, trial, spec, cfg)
        bars.show(trial.number, 0, total=cfg.distill.epochs)
        out_dir = spec.study_dir / "artifacts" / str(trial.number)
        on_epoch = _early_stop(trial, spec, ctx, bars)
        result = run_trial(cfg, ctx=ctx, out_dir=out_dir, on_epoch=on_epoch, number=trial.number)
    except optuna.TrialPruned as e:
        trial.set_user_attr("fail_reason", f"stopped early: {e}")
        study.tell(trial, state=TrialState.PRUNED)
        console.print(f"trial {trial.number}: stopped early ({e})")
        return
    except (KeyboardInterrupt, AgentError, ProviderError) as e:
        # Interrupted, or the target (not the trial) failed: agent down, provider fallback.
        # Later trials would fail the same way: stop, and let a rerun redo this trial.
        trial.set_user_attr("fail_reason", _stop_reason(e))
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as e:  # noqa: BLE001 - a crashing trial is recorded, the study goes on
        reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        trial.set_user_attr("fail_reason", reason)
        study.tell(trial, state=TrialState.FAIL)
        console.print(f"trial {trial.number}: failed: {reason}")
        return
    finally:
        bars.hide()
    _tell_complete(study, trial, spec, ctx, cfg=cfg, result=result, started=started)
    if result.record.get("student") and not result.record.get("reused_student"):
        enqueue_plans(study, trial, space=spec.space, profile=spec.profile)


def _skip_same_plan(study: optuna.Study, trial: optuna.Trial, spec: StudySpec, cfg: Any) -> None:
    """Stop a trial enqueued for a student whose sampled plan that student has already been
    measured with (it would measure the very same file again); the student gets another try."""
    twin = same_plan_as(study, trial, cfg.quantize.to_dict())
    if twin is not None:
        trial.set_user_attr("same_plan_as", twin)
        replan(study, trial, space=spec.space, profile=spec.profile)
        raise optuna.TrialPruned(f"same precision plan as trial {twin} on the same student")


def _stop_reason(e: BaseException) -> str:
    if isinstance(e, _Terminated):
        return f"interrupted by {e}"
    if isinstance(e, KeyboardInterrupt):
        return "interrupted by the user"
    return f"{type(e).__name__}: {e}"


def _early_stop(trial: optuna.Trial, spec: StudySpec, ctx: Any, bars: _Bars) -> Any:
    """``on_epoch`` of one trial: record its validation metric, stop it when hopeless."""
    stop, base_val = spec.space.early_stop, ctx.baseline_val

    def on_epoch(epoch: int, val: float) -> None:
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
    ctx: Any,
    *,
    cfg: Any,
    result: Any,
    started: float,
) -> None:
    """Store the record and budgets of a finished trial, tell Optuna, print one line."""
    from search.progress import console

    rec = result.record
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
        f"({result.accuracy - baseline['accuracy']:+.4f}), p50 {result.latency_ms:.3f} ms "
        f"({speed:.2f}x), {rec['size_mb']:.2f} MB, prune {cfg.prune.ratio:.2f}, "
        f"{cfg.distill.epochs} epoch(s), {kernels} layer kernel(s), "
        f"{time.perf_counter() - started:.1f} s"
    )


def _check_same_device(baseline: dict[str, Any], target: Any, study_name: str) -> None:
    """Refuse to resume a study on another machine: its numbers would not compare."""
    before = baseline.get("measurement", {}).get("device")
    if before and target.device and before != target.device:
        raise SearchError(
            f"study {study_name!r} was measured on '{before}', but this run measures on "
            f"'{target.device}' ({target.where}): resume it on the same target or start a new "
            "study with --study"
        )


def _violations(record: dict[str, Any], profile: Profile) -> dict[str, float]:
    """Optuna constraint values of the profile's budgets: > 0 means over budget."""
    b = profile.budgets
    return {
        "latency_budget_ms": record["latency_p50_ms"] - b.latency_ms if b.latency_ms else 0.0,
        "memory_budget_mb": record["peak_memory_mb"] - b.memory_mb if b.memory_mb else 0.0,
    }
