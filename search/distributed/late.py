"""A result that arrives after its trial was judged dead: told, not lost, never counted twice.

A worker that sends no heartbeat for ``--grace`` seconds is taken for dead: any live worker
fails its RUNNING trial and enqueues a retry with the same parameters
(:mod:`search.distributed.budget`). A worker that was only slow (a machine far busier than the
grace allowed for) then finishes a trial Optuna no longer lets it write
(``UpdateFinishedTrialError``). Its result is measured and valid, so it is told, as:

- **the retry itself**, when the retry is still queued (WAITING): this worker takes it
  (WAITING -> RUNNING is atomic in the storage, the same step ``ask()`` pops a trial with) and
  tells its result there. The retry held a slot of ``--trials`` already, so the count stays
  exact and nobody redoes the work;
- **a new trial** with the same parameters otherwise (the retry runs on another worker, or
  there is none): created RUNNING, owned by this worker, and counted only if the exact-budget
  slot rule lets it (:func:`search.distributed.budget.slot`), else kept ``uncounted``: on the
  study's front and in its report, but not toward ``--trials``.

Either way the trial told carries ``late_result_of`` (the number of the trial judged dead),
and its record still names the folder the work was written to.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from search.distributed.budget import ATTEMPT_ATTRS, own, slot


@dataclass(frozen=True)
class Adopted:
    """Where a late result goes: ``trial`` (RUNNING, this worker's) and how it got there."""

    trial: optuna.Trial
    how: str  # one line for the console: "told as trial 7 (its queued retry)"


def still_running(study: optuna.Study, trial: optuna.Trial) -> bool:
    """Whether ``trial`` is still RUNNING in the storage (no other worker judged it dead)."""
    storage = study._storage  # noqa: SLF001 - the storage the study was opened with
    return storage.get_trial(trial._trial_id).state == TrialState.RUNNING  # noqa: SLF001


def _queued_retry(study: optuna.Study, number: int) -> FrozenTrial | None:
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if t.system_attrs.get("failed_trial") == number:
            return t
    return None


def _take(study: optuna.Study, t: FrozenTrial) -> bool:
    """WAITING -> RUNNING for this worker; False when another worker popped it first."""
    storage = study._storage  # noqa: SLF001
    try:
        return bool(storage.set_trial_state_values(t._trial_id, TrialState.RUNNING))  # noqa: SLF001
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def _new_running(study: optuna.Study, dead: FrozenTrial) -> int:
    """A RUNNING trial with ``dead``'s parameters; its trial id."""
    template = FrozenTrial(
        number=-1,
        state=TrialState.RUNNING,
        value=None,
        datetime_start=datetime.datetime.now(),
        datetime_complete=None,
        params=dict(dead.params),
        distributions=dict(dead.distributions),
        user_attrs={},
        system_attrs={"late_result_of": dead.number},
        intermediate_values={},
        trial_id=-1,
    )
    storage = study._storage  # noqa: SLF001
    return int(storage.create_new_trial(study._study_id, template_trial=template))  # noqa: SLF001


def adopt_late_result(study: optuna.Study, trial: optuna.Trial, *, n_trials: int) -> Adopted:
    """A RUNNING trial of this worker, with ``trial``'s parameters, to tell ``trial``'s result
    on now that ``trial`` was failed as stale (see the module docstring).

    The user attributes ``trial`` had (its config, student, host) are copied, without the
    marks of a failed attempt; ``late_result_of`` names ``trial``.
    """
    storage = study._storage  # noqa: SLF001
    dead = storage.get_trial(trial._trial_id)  # noqa: SLF001
    retry = _queued_retry(study, dead.number)
    claimed = retry is not None and _take(study, retry)
    if retry is not None and claimed:
        taken = optuna.Trial(study, retry._trial_id)  # noqa: SLF001 - its parameters are set
        how = f"told as trial {retry.number}, its queued retry"
    else:
        taken = optuna.Trial(study, _new_running(study, dead))
        counted = slot(taken._trial_id, study.get_trials(deepcopy=False)) < n_trials  # noqa: SLF001
        how = f"told as trial {taken.number}"
        if not counted:
            taken.set_user_attr("uncounted", True)
            how += ", not counted (other trials hold the rest of --trials)"
    for key, value in dead.user_attrs.items():
        if key not in ATTEMPT_ATTRS and key != "retry_of":
            taken.set_user_attr(key, value)
    if claimed:
        taken.set_user_attr("retry_of", dead.number)
    taken.set_user_attr("late_result_of", dead.number)
    own(taken)
    return Adopted(trial=taken, how=how)
