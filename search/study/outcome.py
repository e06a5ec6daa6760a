"""Telling Optuna how a trial ended, also when another worker judged it dead meanwhile.

A worker whose heartbeats came late on a busy machine may find its trial failed as stale by
another worker when it is done (``UpdateFinishedTrialError`` on any write, ``ValueError`` from
``study.tell``). :func:`tell` then hands the result to the trial that
:func:`search.distributed.late.adopt_late_result` picks (the queued retry, else a new trial with
the same parameters) and writes it there: one line on the console, no traceback, no result lost,
``--trials`` still exact.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from search.config import Profile
from search.core.formatting import fmt
from search.distributed.budget import Heartbeat
from search.distributed.late import adopt_late_result, still_running
from search.record import TrialRecord, baseline_of

if TYPE_CHECKING:
    from search.config import TrialConfig
    from search.study.setup import Joined


def _tell(study: optuna.Study, trial: optuna.Trial, **kwargs: object) -> None:
    """``study.tell``, raising ``UpdateFinishedTrialError`` when another worker finished the
    trial (Optuna says ``ValueError: Cannot tell a FAIL trial``)."""
    try:
        study.tell(trial, **kwargs)  # type: ignore[arg-type]
    except ValueError:
        if still_running(study, trial):
            raise
        raise UpdateFinishedTrialError(f"trial {trial.number} was finished elsewhere") from None


def tell(
    study: optuna.Study,
    trial: optuna.Trial,
    write: Callable[[optuna.Trial], None],
    *,
    n_trials: int,
) -> optuna.Trial:
    """``write(trial)`` (its attributes, files and ``study.tell``); when ``trial`` was judged
    dead meanwhile, ``write`` again on the trial that adopts the late result (see the module
    docstring). Returns the trial that was told."""
    from search.core.progress import console

    try:
        if still_running(study, trial):
            write(trial)
            return trial
    except UpdateFinishedTrialError:
        pass
    adopted = adopt_late_result(study, trial, n_trials=n_trials)
    console.print(
        f"trial {trial.number}: finished after another worker judged it dead (no heartbeat "
        f"within --grace); {adopted.how}"
    )
    with Heartbeat(study, adopted.trial).start():
        write(adopted.trial)
    return adopted.trial


def tell_ended(
    study: optuna.Study,
    trial: optuna.Trial,
    *,
    state: TrialState,
    reason: str,
    n_trials: int,
    history: list[float],
) -> optuna.Trial:
    """Tell a trial that was stopped early (PRUNED) or failed (FAIL) with ``reason``."""

    def write(t: optuna.Trial) -> None:
        if t is not trial:
            t.set_user_attr("val_history", history)
        t.set_user_attr("fail_reason", reason)
        _tell(study, t, state=state)

    return tell(study, trial, write, n_trials=n_trials)


def tell_complete(
    study: optuna.Study,
    trial: optuna.Trial,
    joined: Joined,
    *,
    cfg: TrialConfig,
    record: TrialRecord,
    started: float,
    n_trials: int,
    history: list[float],
) -> optuna.Trial:
    """Store the record, files and budgets of a finished trial, tell Optuna, print one line;
    returns the trial told (``trial``, or the one that adopted its late result)."""
    from search.core.progress import console
    from search.distributed.artifacts import ArtifactError, upload_trial
    from search.report.console import load_note, test_note

    ctx = joined.ctx

    def write(t: optuna.Trial) -> None:
        try:
            upload_trial(t, joined.store, Path(record.artifacts))  # before tell: attrs freeze
        except UpdateFinishedTrialError:
            raise
        except Exception as e:
            # The store is gone (unmounted, full, unreachable): later trials would fail the
            # same way. Stop; a rerun redoes this trial.
            t.set_user_attr("fail_reason", f"upload to the artifact store: {e}")
            t.set_user_attr("interrupted", True)
            _tell(study, t, state=TrialState.FAIL)
            raise ArtifactError(f"trial {t.number}: cannot upload its files: {e}") from None
        if t is not trial:
            t.set_user_attr("val_history", history)
        t.set_user_attr("record", record.to_json())
        for key, value in _violations(record, ctx.profile).items():
            t.set_constraint(key, value)  # samplers treat > 0 as infeasible
        t.set_user_attr("duration_s", round(time.perf_counter() - started, 2))
        _tell(study, t, values=list(record.objectives()))

    told = tell(study, trial, write, n_trials=n_trials)
    baseline = baseline_of(study)
    base_acc = baseline.accuracy if baseline else float("nan")
    speed = baseline.speedup(record.latency_paired_ms) if baseline else None
    kernels = f"{record.kernels.get('integer_layers', '?')} integer"
    if "fp16" in cfg.quantize.precision.values():  # did the provider keep them in float16?
        kernels += f", {record.kernels.get('fp16_layers', '?')} fp16"
    console.print(
        f"trial {told.number}: {ctx.task.metric_name} {record.accuracy:.4f} "
        f"({record.accuracy - base_acc:+.4f}){test_note(record)}, p50 "
        f"{record.latency_paired_ms:.3f} ms ({fmt(speed, '.2f')}x), "
        f"{fmt(record.size_mb, '.2f')} MB, prune {cfg.prune.ratio:.2f}, "
        f"{cfg.distill.epochs} epoch(s), {kernels} layer kernel(s), "
        f"{time.perf_counter() - started:.1f} s{load_note(record)}"
    )
    return told


def _violations(record: TrialRecord, profile: Profile) -> dict[str, float]:
    """Optuna constraint values of the profile's budgets: > 0 means over budget."""
    b, memory = profile.budgets, record.peak_memory_mb
    return {
        "latency_budget_ms": record.latency_paired_ms - b.latency_ms if b.latency_ms else 0.0,
        "memory_budget_mb": memory - b.memory_mb if b.memory_mb and memory is not None else 0.0,
    }
