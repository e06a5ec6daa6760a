"""A result that arrives after its trial was judged dead (``shared/cases/pg-live-worker-crash-
after-stale``): told on the queued retry, else on a new trial with the same parameters, counted
only where the exact budget allows; never an ``UpdateFinishedTrialError`` traceback.

The stale verdict is given here the way another worker's check gives it (FAIL, then Optuna's
retry callback), on real SQLite and PostgreSQL storages.
"""

from __future__ import annotations

import copy

import optuna
import pytest
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from search.distributed import budget
from search.distributed.storage import open_storage
from search.study.outcome import tell, tell_ended


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/study.db"
    return request.getfixturevalue("pg_url")


def _study(url: str) -> optuna.Study:
    storage = open_storage(url, heartbeat_s=2, grace_s=30)
    return optuna.create_study(study_name="s", storage=storage, directions=["maximize"])


def _running(study: optuna.Study, n: int) -> optuna.Trial:
    got = budget.next_trial(study, n)
    assert got is not None
    trial, beat = got
    beat.stop()  # the heartbeat is not what these tests are about
    budget.start_attempt(study, trial)
    trial.suggest_float("x", 0.0, 1.0)
    trial.set_user_attr("config", {"x": trial.params["x"]})
    return trial


def _judge_dead(study: optuna.Study, trial: optuna.Trial) -> None:
    """What another worker's stale check does: FAIL without a reason, then a queued retry."""
    storage = study._storage
    storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    callback = storage.get_heartbeat_stale_trial_callback()
    callback(study, copy.deepcopy(storage.get_trial(trial._trial_id)))


def _write(study: optuna.Study, value: float):
    def write(t: optuna.Trial) -> None:
        t.set_user_attr("record", {"accuracy": value})
        try:
            study.tell(t, [value])
        except ValueError:  # as search.study.outcome._tell says it
            raise UpdateFinishedTrialError("finished elsewhere") from None

    return write


def test_a_live_trial_is_told_as_it_is(url):
    study = _study(url)
    trial = _running(study, 2)
    told = tell(study, trial, _write(study, 0.7), n_trials=2)
    assert told.number == trial.number
    assert study.trials[trial.number].state == TrialState.COMPLETE


def test_a_late_result_takes_the_queued_retry(url):
    study = _study(url)
    trial = _running(study, 2)
    _judge_dead(study, trial)
    with pytest.raises(UpdateFinishedTrialError):
        trial.set_user_attr("record", {})  # what crashed the worker before
    told = tell(study, trial, _write(study, 0.7), n_trials=2)
    trials = study.get_trials(deepcopy=False)
    retry = trials[told.number]
    assert retry.system_attrs["failed_trial"] == trial.number  # the retry, not a new trial
    assert retry.state == TrialState.COMPLETE and retry.values == [0.7]
    assert retry.params == trials[trial.number].params
    assert retry.user_attrs["late_result_of"] == trial.number
    assert retry.user_attrs["retry_of"] == trial.number
    assert retry.user_attrs["config"] == {"x": trial.params["x"]}
    assert budget.counted(trials) == 1  # the dead attempt is not counted, its result is
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]


def test_a_late_result_whose_retry_runs_elsewhere_is_kept_within_the_budget(url):
    study = _study(url)
    trial = _running(study, 1)
    _judge_dead(study, trial)
    retry = _running(study, 1)  # another worker took the retry: it holds the only slot
    assert study.trials[retry.number].system_attrs["failed_trial"] == trial.number
    told = tell(study, trial, _write(study, 0.7), n_trials=1)
    assert told.number not in (trial.number, retry.number)
    late = study.get_trials(deepcopy=False)[told.number]
    assert late.state == TrialState.COMPLETE and late.values == [0.7]
    assert late.params == study.trials[trial.number].params
    assert late.user_attrs["uncounted"] is True
    assert late.user_attrs["late_result_of"] == trial.number
    study.tell(retry, [0.6])
    assert budget.counted(study.get_trials(deepcopy=False)) == 1  # exactly --trials


def test_a_late_result_with_room_in_the_budget_counts(url):
    study = _study(url)
    trial = _running(study, 3)
    _judge_dead(study, trial)
    _running(study, 3)  # the retry runs elsewhere, and a third slot is still free
    told = tell(study, trial, _write(study, 0.7), n_trials=3)
    late = study.get_trials(deepcopy=False)[told.number]
    assert late.state == TrialState.COMPLETE and not late.user_attrs.get("uncounted")
    assert budget.is_counted(late)


def test_a_late_failure_is_told_once_on_the_retry(url):
    study = _study(url)
    trial = _running(study, 2)
    _judge_dead(study, trial)
    told = tell_ended(
        study, trial, state=TrialState.FAIL, reason="boom", n_trials=2, history=[0.1]
    )
    t = study.get_trials(deepcopy=False)[told.number]
    assert t.state == TrialState.FAIL and t.user_attrs["fail_reason"] == "boom"
    assert t.user_attrs["val_history"] == [0.1] and budget.is_counted(t)
    assert budget.counted(study.get_trials(deepcopy=False)) == 1
