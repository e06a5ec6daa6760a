"""Resume redoes first: a trial interrupted by a crash or Ctrl-C is the next one run, before
the warm-start queue, and carries ``redo_of``; the budget of ``--trials`` stays exact."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from search.distributed.budget import counted, next_trial, slot, start_attempt
from search.distributed.storage import open_storage
from search.study.resume import fail_stale_trials

X = {"x": FloatDistribution(0.0, 1.0)}


def _dead_pid() -> int:
    cmd = [sys.executable, "-c", "import os; print(os.getpid())"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return int(done.stdout)


def _study(tmp_path: Path) -> optuna.Study:
    """Two finished trials, then a trial left behind (filled in by the test) and a warm-start
    queue of two (x = 0.7, 0.8) behind it."""
    storage = open_storage(f"sqlite:///{tmp_path}/s.db", heartbeat_s=60, grace_s=600)
    study = optuna.create_study(study_name="s", storage=storage)
    for x in (0.1, 0.2):
        study.add_trial(optuna.trial.create_trial(params={"x": x}, distributions=X, value=x))
    return study


def _leave(study: optuna.Study, how: str) -> int:
    """Trial 2 on x = 0.5, stopped ``how``: killed (left RUNNING by a dead process) or by
    Ctrl-C (told FAIL, interrupted); then two warm-start trials enqueued (a first run's queue
    holds them already; enqueued after, they have the lower ids a resume must pass)."""
    study.enqueue_trial({"x": 0.5})
    trial = study.ask(X)
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", _dead_pid() if how == "killed" else os.getpid())
    if how == "ctrl-c":
        trial.set_user_attr("fail_reason", "interrupted by the user")
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=TrialState.FAIL)
    for x in (0.7, 0.8):
        study.enqueue_trial({"x": x})
    return trial.number


@pytest.mark.parametrize("how", ["killed", "ctrl-c"])
def test_the_interrupted_trial_runs_before_the_warm_start_queue(how: str, tmp_path: Path) -> None:
    study = _study(tmp_path)
    left = _leave(study, how)
    fail_stale_trials(study)  # what a resume does first
    got = next_trial(study, n_trials=3)  # one more trial allowed
    assert got is not None
    trial, beat = got
    beat.stop()
    assert start_attempt(study, trial) == left
    assert trial.params == {"x": 0.5} and trial.user_attrs["redo_of"] == left
    study.tell(trial, 0.5)
    assert counted(study.get_trials()) == 3
    assert next_trial(study, n_trials=3) is None  # the bound holds: the queue waits
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert sorted(t.system_attrs["fixed_params"]["x"] for t in waiting) == [0.7, 0.8]
    fail_stale_trials(study)  # a second resume does not redo it again
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 2


def test_a_warm_start_copy_of_the_interrupted_trial_runs_once(tmp_path: Path) -> None:
    study = _study(tmp_path)
    left = _leave(study, "ctrl-c")
    study.enqueue_trial({"x": 0.5})  # the queue got the warm-start trial back (references.py)
    fail_stale_trials(study)
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert sorted(t.system_attrs["fixed_params"]["x"] for t in waiting) == [0.5, 0.7, 0.8]
    withdrawn = [t for t in study.get_trials() if t.user_attrs.get("uncounted")]
    assert [t.system_attrs["fixed_params"]["x"] for t in withdrawn] == [0.5]
    assert f"redo of trial {left}" in withdrawn[0].user_attrs["fail_reason"]


def test_a_queued_trial_counts_a_waiting_redo_ahead_of_it(tmp_path: Path) -> None:
    study = _study(tmp_path)
    _leave(study, "ctrl-c")
    fail_stale_trials(study)
    trials = study.get_trials()
    redo = next(t for t in trials if "failed_trial" in t.system_attrs)
    waiting = [t for t in trials if t.state == TrialState.WAITING and t is not redo]
    queued = min(waiting, key=lambda t: t._trial_id)
    # Ahead of the redo: the two finished trials; ahead of the first queued one: those and
    # the redo, so with one trial left the queue's first trial would be uncounted.
    assert slot(redo._trial_id, trials) == 2
    assert slot(queued._trial_id, trials) == 3


@pytest.mark.slow
def test_a_resumed_study_redoes_its_killed_trial_before_the_queue(
    teacher_cache: Path, tiny_space: Path, tiny_profile: Path, tmp_path: Path
) -> None:
    from search.config import load_profile, load_space
    from search.study import StudySpec, run_study

    data = yaml.safe_load(tiny_space.read_text())
    data["search"]["warm_start"] = [0.1, 0.3, 0.4]
    data["distill"]["epochs"] = {"low": 1, "high": 1}
    path = tmp_path / "warm.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = StudySpec(
        task="tests.tiny_task:make_task",
        space=load_space(str(path)),
        profile=load_profile(str(tiny_profile)),
        study_name="redo",
        results_dir=teacher_cache,
    )
    study = run_study(spec, trials=1, progress=False)
    killed = study.ask()  # a second run took the next warm start and was killed
    killed.set_user_attr("host", socket.gethostname())
    killed.set_user_attr("pid", _dead_pid())
    study = run_study(spec, trials=2, progress=False)  # one more trial allowed
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 2 and done[1].user_attrs["redo_of"] == killed.number
    assert done[1].params["prune_ratio"] == 0.3  # the killed trial's, not the queue's next
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"]["prune_ratio"] for t in waiting] == [0.4]
