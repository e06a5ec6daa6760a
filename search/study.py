"""Create or load the Optuna study, measure the baseline, run the missing trials, resume.

Objectives: maximize the task metric of the exported ONNX file, minimize its p50 latency at the
profile's first batch size. Everything else a trial measured is in its user attributes.
"""

from __future__ import annotations

import hashlib
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

OBJECTIVES = ["accuracy", "latency_p50_ms"]
DIRECTIONS = ["maximize", "minimize"]


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

    @property
    def study_dir(self) -> Path:
        return self.results_dir / self.study_name

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.study_dir / 'study.db'}"

    def settings(self) -> dict[str, Any]:
        settings = {
            "task": self.task,
            "space": self.space.name,
            "profile": self.profile.name,
            "seed": self.seed,
        }
        if self.task_options:
            settings["task_options"] = {k: str(v) for k, v in sorted(self.task_options.items())}
        # What the files say, not where they lie: an edited space or profile is another study.
        # Left out: words, the default trial count, and the agent's address (it may move).
        ignore: dict[str, Any] = {"name": True, "path": True, "description": True}
        for key, model, more in (
            ("space_digest", self.space, {"search": {"trials"}}),
            ("profile_digest", self.profile, {"agent": True}),
        ):
            text = model.model_dump_json(exclude={**ignore, **more})
            settings[key] = hashlib.sha256(text.encode()).hexdigest()[:12]
        return settings


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


def open_study(spec: StudySpec, *, create: bool) -> optuna.Study:
    """Load the study, or create it when ``create``; refuse a study made with other settings."""
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
        directions=DIRECTIONS,
        load_if_exists=True,
    )
    if create:
        old = study.user_attrs.get("settings")
        if old is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # set_metric_names is marked experimental
                study.set_metric_names(OBJECTIVES)
            study.set_user_attr("settings", spec.settings())
            # The files themselves, for reproducing; not compared on resume (a path may move).
            study.set_user_attr(
                "sources", {"space": spec.space.path, "profile": spec.profile.path}
            )
        else:
            # Studies made before a setting was recorded are compared on what they recorded.
            new = {
                k: v for k, v in spec.settings().items() if k in old or not k.endswith("_digest")
            }
            changed = [k for k in {**old, **new} if old.get(k) != new.get(k)]
            if changed:
                diff = ", ".join(
                    f"a different {k.removesuffix('_digest')} file's content"
                    if k.endswith("_digest")
                    else f"{k}={old.get(k)!r}"
                    for k in changed
                )
                raise SearchError(
                    f"study {spec.study_name!r} was created with {diff}; resume it with the "
                    "same settings or pick a new name with --study"
                )
    return study


def fail_stale_trials(study: optuna.Study) -> int:
    """Mark RUNNING trials whose process on this host has ended as FAIL ('interrupted')."""
    host = socket.gethostname()
    failed = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") != host or pid is None or _alive(pid):
            continue
        storage, tid = study._storage, t._trial_id  # noqa: SLF001 - no public API for this
        storage.set_trial_user_attr(tid, "fail_reason", f"interrupted (process {pid} ended)")
        storage.set_trial_user_attr(tid, "interrupted", True)
        storage.set_trial_state_values(tid, TrialState.FAIL)
        failed += 1
    return failed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def finished_count(study: optuna.Study) -> int:
    """Trials that count toward the requested number: all ended ones but interrupted ones."""
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        or (t.state == TrialState.FAIL and not t.user_attrs.get("interrupted"))
    )


class _Terminated(KeyboardInterrupt):
    pass


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated(f"signal {signum}")


def run_study(spec: StudySpec, *, trials: int, progress: bool = True) -> optuna.Study:
    """Run trials until the study holds ``trials`` finished ones; returns the study."""
    import torch

    from search.measure import open_target
    from search.progress import console, study_progress
    from search.report import write_outputs
    from search.tasks import load_task
    from search.trial import Context, run_trial

    # Checks providers and architecture where the measurement runs (here or on the agent) before
    # anything is created, so a profile that cannot be measured stops with exit 2 and no study.
    target = open_target(spec.profile)
    if spec.storage is not None:
        _storage(spec.storage)  # a bad URL fails now, not after the teacher has trained
    torch.set_num_threads(os.cpu_count() or 1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task = load_task(
        spec.task, seed=spec.seed, cache_dir=spec.results_dir, options=spec.task_options
    )
    study = open_study(spec, create=True)
    stale = fail_stale_trials(study)
    if stale:
        console.print(f"marked {stale} interrupted trial(s) as failed; they will be rerun")

    latency_input = task.example_input.numpy()  # one fixed array: the same input every trial

    def measure(path: Path):
        return target.measure(path, eval_inputs=ctx.eval_inputs, latency_input=latency_input)

    ctx = Context.build(
        task=task, space=spec.space, profile=spec.profile, seed=spec.seed, measure=measure
    )
    artifacts = spec.study_dir / "artifacts"
    if "baseline" not in study.user_attrs:
        from search.measure.export import export_onnx
        from search.trial import measurement_record, score

        with console.status("measuring the uncompressed baseline"):
            path = artifacts / "baseline" / "model.onnx"
            export_onnx(task.model, task.example_input, path)
            metric, m = score(path, ctx)
        baseline = {**measurement_record(metric, m), "val_accuracy": ctx.baseline_val}
        study.set_user_attr("baseline", baseline)
        console.print(
            f"baseline: {task.metric_name} {metric:.4f}, p50 {m.latency[0].p50_ms:.3f} ms "
            f"(cv {m.latency[0].cv:.1%}), {m.size_bytes / 1e6:.2f} MB, on {', '.join(m.providers)}"
        )
    baseline = study.user_attrs["baseline"]
    _check_same_device(baseline, target, spec.study_name)
    _quantize_references(study, task, ctx, artifacts / "baseline")
    study.sampler = _sampler(spec.space, spec.seed, len(study.trials))

    todo = trials - finished_count(study)
    if todo <= 0:
        console.print(f"study {spec.study_name!r} already has {trials} finished trials")
    old_handler = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with study_progress() if progress else _Null() as bars:
            overall = bars.add_task("trials", total=max(todo, 0))
            epochs = bars.add_task("distillation", total=None, visible=False)
            for _ in range(max(todo, 0)):
                if finished_count(study) >= trials:  # other workers on a shared storage
                    break
                _one_trial(study, spec, ctx, artifacts, baseline, bars, epochs, run_trial)
                bars.advance(overall)
                write_outputs(study, spec.study_dir, html=False)
    finally:
        signal.signal(signal.SIGTERM, old_handler)
        write_outputs(study, spec.study_dir, html=True)
    console.print(f"results: {spec.study_dir} (trials.csv, report.html, artifacts/)")
    return study


def _one_trial(study, spec, ctx, artifacts, baseline, bars, epoch_bar, run_trial) -> None:
    from search.progress import console

    trial = study.ask()
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())
    started = time.perf_counter()
    stop = spec.space.early_stop
    base_val = ctx.baseline_val

    def on_epoch(epoch: int, val: float) -> None:
        trial.set_user_attr("val_history", [*trial.user_attrs.get("val_history", []), val])
        bars.update(epoch_bar, completed=epoch, description=f"trial {trial.number} epoch {epoch}")
        if epoch >= stop.min_epochs and val < base_val - stop.max_accuracy_drop:
            raise optuna.TrialPruned(
                f"validation {ctx.task.metric_name} {val:.4f} after epoch {epoch} is more than "
                f"{stop.max_accuracy_drop} below the baseline's {base_val:.4f}"
            )

    try:
        cfg = spec.space.sample(trial, spec.profile)
        trial.set_user_attr("config", cfg.to_dict())
        bars.update(
            epoch_bar,
            total=cfg.epochs,
            completed=0,
            visible=True,
            description=f"trial {trial.number} epoch 0",
        )
        result = run_trial(cfg, ctx=ctx, out_dir=artifacts / str(trial.number), on_epoch=on_epoch)
    except optuna.TrialPruned as e:
        trial.set_user_attr("fail_reason", f"stopped early: {e}")
        study.tell(trial, state=TrialState.PRUNED)
        console.print(f"trial {trial.number}: stopped early ({e})")
        return
    except KeyboardInterrupt as e:
        reason = "interrupted" + (f" by {e}" if isinstance(e, _Terminated) else " by the user")
        trial.set_user_attr("fail_reason", reason)
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=TrialState.FAIL)
        raise
    except (AgentError, ProviderError) as e:
        # The target, not the trial, failed (agent down, provider fallback): later trials would
        # fail the same way. Stop, and let a rerun redo this trial.
        trial.set_user_attr("fail_reason", f"{type(e).__name__}: {e}")
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
        bars.update(epoch_bar, visible=False)
    rec = result.record
    trial.set_user_attr("record", json.loads(json.dumps(rec, default=str)))
    for key, value in _violations(rec, spec.profile).items():
        trial.set_constraint(key, value)  # samplers treat > 0 as infeasible
    trial.set_user_attr("duration_s", round(time.perf_counter() - started, 2))
    study.tell(trial, [result.accuracy, result.latency_ms])
    kernels = f"{rec['kernels'].get('integer_layers', '?')} integer"
    if "fp16" in cfg.precision.values():  # did the provider keep them in float16?
        kernels += f", {rec['kernels'].get('fp16_layers', '?')} fp16"
    speed = baseline["latency_p50_ms"] / result.latency_ms if result.latency_ms else float("nan")
    console.print(
        f"trial {trial.number}: {ctx.task.metric_name} {result.accuracy:.4f} "
        f"({result.accuracy - baseline['accuracy']:+.4f}), p50 {result.latency_ms:.3f} ms "
        f"({speed:.2f}x), {rec['size_mb']:.2f} MB, prune {cfg.prune_ratio:.2f}, "
        f"{cfg.epochs} epoch(s), {kernels} layer kernel(s), "
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


def _quantize_references(study, task, ctx, out_dir: Path) -> None:
    """Sensitivity pass and uniform int8 of the baseline, once per study; seeds one trial."""
    from search.compress.sensitivity import study_references
    from search.measure.export import export_onnx
    from search.progress import console

    seed = study.user_attrs.get("quantize_seed")
    if seed is not None:
        # Enqueue the seeded trial again if an interruption (not a real failure) lost it.
        if seed and not any(
            t.system_attrs.get("fixed_params") == seed and not t.user_attrs.get("interrupted")
            for t in study.get_trials(deepcopy=False)
        ):
            study.enqueue_trial(seed)
        return
    path = out_dir / "model.onnx"
    with console.status("quantization references: per-layer sensitivity, uniform int8"):
        if not path.is_file():
            export_onnx(task.model, task.example_input, path)
        refs = study_references(path, ctx=ctx, out_dir=out_dir)
    study.set_user_attr("sensitivity", refs["sensitivity"])
    study.set_user_attr("baseline_int8", json.loads(json.dumps(refs["int8"], default=str)))
    study.set_user_attr("quantize_seed", refs["seed"])
    if refs["seed"]:
        study.enqueue_trial(refs["seed"])
    if refs["int8"]:
        i8 = refs["int8"]
        console.print(
            f"uniform int8: {task.metric_name} {i8['accuracy']:.4f}, "
            f"p50 {i8['latency_p50_ms']:.3f} ms, {i8['size_mb']:.2f} MB, "
            f"{i8['kernels'].get('integer_layers', '?')} integer layer kernel(s)"
        )
    if refs["sensitivity"]:
        order = ", ".join(
            f"{g} {refs['sensitivity']['groups'][g]['drop']:+.4f}"
            for g in refs["sensitivity"]["order"]
        )
        console.print(f"sensitivity (accuracy drop, {refs['sensitivity']['precision']}): {order}")


def _violations(record: dict[str, Any], profile: Profile) -> dict[str, float]:
    """Optuna constraint values of the profile's budgets: > 0 means over budget."""
    b = profile.budgets
    return {
        "latency_budget_ms": record["latency_p50_ms"] - b.latency_ms if b.latency_ms else 0.0,
        "memory_budget_mb": record["peak_memory_mb"] - b.memory_mb if b.memory_mb else 0.0,
    }


class _Null:
    """Stands in for the progress display when it is off."""

    def __enter__(self) -> _Null:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *a: Any, **k: Any) -> int:
        return 0

    def update(self, *a: Any, **k: Any) -> None:
        return None

    def advance(self, *a: Any, **k: Any) -> None:
        return None
