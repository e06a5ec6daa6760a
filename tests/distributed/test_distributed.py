"""Claims, exact budgets and heartbeats with real processes on SQLite and PostgreSQL.

The trials here are plain functions (no model): what is tested is who runs what, how often,
and what the storage holds afterwards. The studies of the real pipeline are in
``test_workers.py``.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
import warnings

import optuna
import pytest
from optuna.trial import TrialState

from search.distributed import budget as distributed
from search.distributed import claims
from search.distributed.storage import open_storage

FORK = mp.get_context("fork")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/study.db"
    return request.getfixturevalue("pg_url")


def _claimer(url, barrier, q, log, kill_first):
    storage = open_storage(url)
    study = optuna.load_study(study_name="s", storage=storage)
    barrier.wait()

    def setup():
        with open(log, "a") as f:  # not the queue: a killed writer could leave its lock held
            f.write(f"{os.getpid()}\n")
        time.sleep(60 if kill_first and not os.path.exists(log + ".killed") else 0.3)
        study.set_user_attr("baseline", os.getpid())

    out = claims.run_once(storage, "s", "setup", setup, heartbeat_s=0.3, grace_s=2, poll_s=0.1)
    q.put((os.getpid(), out.won, study.user_attrs["baseline"]))


@pytest.mark.parametrize("kill_first", [False, True], ids=["race", "claimer-killed"])
def test_setup_runs_once_per_study(url, tmp_path, kill_first):
    optuna.create_study(study_name="s", storage=open_storage(url))
    log = str(tmp_path / "setup.log")
    b, q = FORK.Barrier(3), FORK.Queue()
    ps = [FORK.Process(target=_claimer, args=(url, b, q, log, kill_first)) for _ in range(3)]
    for p in ps:
        p.start()
    if kill_first:  # SIGKILL the worker doing the setup: a waiter takes over after the grace
        while not (os.path.exists(log) and open(log).read().strip()):
            time.sleep(0.05)
        open(log + ".killed", "w").close()
        os.kill(int(open(log).read().split()[0]), signal.SIGKILL)
    done = [q.get(timeout=120) for _ in range(2 if kill_first else 3)]
    for p in ps:
        p.join()
    winners = [d for d in done if d[1]]
    assert len(winners) == 1
    assert {d[2] for d in done} == {winners[0][0]}  # everyone uses the winner's result
    assert len(open(log).read().split()) == (2 if kill_first else 1)
    names = optuna.get_all_study_names(url)
    assert all(claims.is_claim_study(n) for n in names if n != "s")


def test_a_failed_setup_stops_its_waiters_and_a_later_worker_retries(tmp_path):
    storage = open_storage(f"sqlite:///{tmp_path}/s.db")

    def boom():
        raise ValueError("no data")

    with pytest.raises(ValueError):
        claims.run_once(storage, "s", "setup", boom, heartbeat_s=0.2, grace_s=1)
    out = claims.run_once(storage, "s", "setup", lambda: None, heartbeat_s=0.2, grace_s=1)
    assert out.won and out.generation == 1


def _budget_worker(url, n, barrier, seed):
    rng = random.Random(seed)
    study = optuna.load_study(study_name="s", storage=open_storage(url, heartbeat_s=1, grace_s=3))
    barrier.wait()
    while (got := distributed.next_trial(study, n, poll_s=0.1)) is not None:
        trial, beat = got
        with beat:
            distributed.start_attempt(study, trial)
            trial.suggest_float("x", 0, 1)
            time.sleep(rng.uniform(0.01, 0.1))
            if rng.random() < 0.2:
                trial.set_user_attr("fail_reason", "RuntimeError: boom")
                study.tell(trial, state=TrialState.FAIL)
            else:
                study.tell(trial, 1.0)


def test_the_budget_is_exact_across_workers(url):
    """Counting finished trials before each ask gave 14 trials for --trials 12 with 3 workers."""
    study = optuna.create_study(study_name="s", storage=open_storage(url))
    study.enqueue_trial({"x": 0.5})  # a seeded trial runs once, not once per worker
    b = FORK.Barrier(3)
    ps = [FORK.Process(target=_budget_worker, args=(url, 9, b, i)) for i in range(3)]
    for p in ps:
        p.start()
    for p in ps:
        p.join(timeout=180)
    trials = study.get_trials(deepcopy=False)
    assert distributed.counted(trials) == 9
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert sum(t.params.get("x") == 0.5 for t in trials) == 1


def _dying_worker(url, started):
    study = optuna.load_study(study_name="s", storage=open_storage(url, heartbeat_s=1, grace_s=3))
    trial, _beat = distributed.next_trial(study, 2)
    distributed.start_attempt(study, trial)
    trial.suggest_float("x", 0, 1)
    trial.set_user_attr("val_history", [0.1])
    started.set()
    time.sleep(600)  # killed here


def test_a_dead_workers_trial_is_failed_by_another_and_retried_with_its_parameters(url):
    study = optuna.create_study(
        study_name="s", storage=open_storage(url, heartbeat_s=1, grace_s=3)
    )
    started = FORK.Event()
    p = FORK.Process(target=_dying_worker, args=(url, started))
    p.start()
    assert started.wait(60)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    killed_at = time.monotonic()
    dead = study.trials[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while (got := distributed.next_trial(study, 2, poll_s=0.2)) is not None:
            trial, beat = got
            with beat:
                retry_of = distributed.start_attempt(study, trial)
                trial.suggest_float("x", 0, 1)
                study.tell(trial, 1.0)
    assert time.monotonic() - killed_at < 3 + 2 + 2  # grace, a heartbeat, slack
    trials = study.trials
    assert trials[0].state == TrialState.FAIL and not trials[0].user_attrs.get("fail_reason")
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.params == dead.params and retry.state == TrialState.COMPLETE
    assert retry.user_attrs["pid"] == os.getpid() and retry.user_attrs["val_history"] == []
    assert retry.user_attrs["retry_of"] == 0 and retry_of is not None
    assert distributed.counted(trials) == 2


def test_a_trial_whose_worker_died_before_owning_it_is_retried_after_the_grace(url):
    """A worker killed between ``ask()`` and its first heartbeat leaves a RUNNING trial that
    Optuna's heartbeat check never calls stale; without this it would hold a slot forever."""
    study = optuna.create_study(
        study_name="s", storage=open_storage(url, heartbeat_s=1, grace_s=2)
    )
    enq = {"x": 0.25}
    study.enqueue_trial(enq)
    orphan = study.ask()  # as a worker killed right after ask() leaves it: no heartbeat, no pid
    assert distributed.fail_unowned(study) == 0  # within the grace: it may be starting
    time.sleep(2.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while (got := distributed.next_trial(study, 1, poll_s=0.2)) is not None:
            trial, beat = got
            with beat:
                distributed.start_attempt(study, trial)
                trial.suggest_float("x", 0, 1)
                study.tell(trial, 1.0)
    trials = study.trials
    dead = trials[orphan.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["interrupted"] is True
    assert "before the trial started" in dead.user_attrs["fail_reason"]
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == orphan.number)
    assert retry.state == TrialState.COMPLETE and retry.params == enq  # its fixed parameters
    assert distributed.counted(trials) == 1
