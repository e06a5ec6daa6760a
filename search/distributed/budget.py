"""Exact trial budgets across any number of workers, and dead workers noticed from any host.

Counted trials: COMPLETE, PRUNED, and FAIL with a recorded ``fail_reason`` (a crash the worker
saw), except those marked ``interrupted`` (Ctrl-C, a stopped target) or ``uncounted`` (surplus).
A FAIL without a reason was failed by the heartbeat check: its worker died, and a retry with the
same parameters takes its place. Budget holders: WAITING, RUNNING and counted trials.

Race-free slot rule: Optuna's RDBStorage creates a trial while holding a row lock on the study
(``SELECT ... FOR UPDATE``; SQLite, run with ``BEGIN IMMEDIATE`` by
:mod:`search.distributed.storage`, serialises writers), so when ``ask()`` returns, every trial
with a lower ``trial_id`` is committed and visible. A trial may run only if fewer than N budget
holders have a lower ``trial_id``. If N+1 trials were counted, the one with the highest id saw
the other N below it holding budget when it was asked (no trial goes back from "not holding" to
"holding"), so it never ran.

Heartbeats: ``study.optimize`` records them; an ask/tell loop must. :class:`Heartbeat` beats
right after ``ask()`` (a trial without any heartbeat is never called stale) and then every
``heartbeat_interval`` seconds from a thread; a second thread runs Optuna's stale-trial check as
often, so a dead worker's trial is failed and retried even while every live worker is busy. A
live worker whose trial was failed that way tells its result late
(:mod:`search.distributed.late`).
"""

from __future__ import annotations

import copy
import datetime
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Protocol, cast

import optuna
from optuna.trial import FrozenTrial, TrialState

# What describes one attempt, and its fresh value: a retried trial starts with these.
ATTEMPT_ATTRS = {"fail_reason": "", "interrupted": False, "uncounted": False, "val_history": []}


def is_counted(t: FrozenTrial) -> bool:
    """Whether ``t`` counts toward ``--trials`` (see the module docstring)."""
    if t.user_attrs.get("uncounted") or t.user_attrs.get("interrupted"):
        return False
    if t.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return t.state == TrialState.FAIL and bool(t.user_attrs.get("fail_reason"))


def holds_budget(t: FrozenTrial) -> bool:
    return t.state in (TrialState.WAITING, TrialState.RUNNING) or is_counted(t)


def counted(trials: Iterable[FrozenTrial]) -> int:
    return sum(is_counted(t) for t in trials)


def is_redo(t: FrozenTrial) -> bool:
    """Whether ``t`` redoes an interrupted trial: Optuna's retry callback (and
    :func:`enqueue_redo`) create it with a ``failed_trial`` system attribute, so this never
    changes over a trial's life."""
    return "failed_trial" in t.system_attrs


def slot(trial_id: int, trials: Iterable[FrozenTrial]) -> int:
    """Budget-holding trials ahead of trial ``trial_id``.

    Redos of interrupted trials go first: a trial counts every redo that holds budget, whatever
    its id, and the trials with lower ids; a redo counts the redos with lower ids and the lower-id
    trials that are no longer WAITING (it runs before those still in the queue). Of any two
    trials that both hold budget, one counts the other: a trial that did not see a redo asked
    before the redo was created, so it has the lower id and had left the queue when the redo
    looked (the race-free rule of the module docstring, with redos moved to the front).
    """
    trials = list(trials)
    me = next((t for t in trials if t._trial_id == trial_id), None)  # noqa: SLF001
    if me is not None and is_redo(me):
        ahead = [
            t
            for t in trials
            if t._trial_id < trial_id  # noqa: SLF001
            and (is_redo(t) or t.state != TrialState.WAITING)
        ]
    else:
        ahead = [t for t in trials if t._trial_id < trial_id or is_redo(t)]  # noqa: SLF001
    return sum(holds_budget(t) for t in ahead if t._trial_id != trial_id)  # noqa: SLF001


def fail_stale(study: optuna.Study) -> None:
    """Optuna's check: RUNNING trials whose heartbeat is older than the grace period become
    FAIL, and the storage's callback enqueues a retry with the same parameters. Uses the
    database server's clock only. Then :func:`fail_unowned`, for the trials Optuna's check
    cannot see."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    fail_unowned(study)


def fail_unowned(study: optuna.Study) -> int:
    """Fail and retry RUNNING trials whose worker died between ``ask()`` and marking the trial
    its own (no ``pid`` attribute) once they are older than the grace period.

    Optuna's check never calls a trial without a heartbeat stale, so such a trial would hold a
    slot of ``--trials`` forever. Its age is measured from ``datetime_start`` (the asking
    worker's clock), so hosts' clocks must agree to well within the grace period. Returns how
    many were failed.
    """
    # Optuna wraps an RDBStorage in a cache that does not pass these on: read the storage's.
    storage = getattr(study._storage, "_backend", study._storage)  # noqa: SLF001
    interval = getattr(storage, "heartbeat_interval", None)
    grace = getattr(storage, "grace_period", None) or 2 * (interval or 30)
    now = datetime.datetime.now()
    failed = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if "pid" in t.user_attrs or t.datetime_start is None:
            continue
        if (now - t.datetime_start).total_seconds() <= grace:
            continue
        reason = "interrupted (its worker stopped before the trial started)"
        failed += retry_failed(study, t, reason)
    return failed


def retry_failed(study: optuna.Study, t: optuna.trial.FrozenTrial, reason: str) -> int:
    """Mark the RUNNING trial ``t`` FAIL, interrupted for ``reason``, and enqueue its retry.
    Returns 1, or 0 when another worker finished it first (and retries it)."""
    storage, tid = study._storage, t._trial_id  # noqa: SLF001 - no public API for this
    try:
        storage.set_trial_user_attr(tid, "fail_reason", reason)
        storage.set_trial_user_attr(tid, "interrupted", True)
        storage.set_trial_state_values(tid, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return 0
    _retry(study, t)
    return 1


def _retry(study: optuna.Study, t: optuna.trial.FrozenTrial) -> None:
    """Enqueue ``t`` again through the storage's stale-trial callback, without this attempt's
    failure marks (the callback copies the user attributes it is given)."""
    callback = getattr(study._storage, "get_heartbeat_stale_trial_callback", lambda: None)()  # noqa: SLF001
    if callback is not None:
        clean = copy.deepcopy(t)
        clean.user_attrs = {k: v for k, v in t.user_attrs.items() if k not in ATTEMPT_ATTRS}
        callback(study, clean)


def enqueue_redo(study: optuna.Study, t: FrozenTrial) -> None:
    """Enqueue a redo of the interrupted trial ``t`` (Ctrl-C, a stopped target): its parameters
    and user attributes without this attempt's, marked as Optuna's retry callback marks a retry
    (``failed_trial``, ``retry_history``), so it runs before the waiting queue (:func:`slot`)."""
    system = {"failed_trial": t.number, **t.system_attrs}
    system["retry_history"] = [*system.get("retry_history", []), t.number]
    user = {k: v for k, v in t.user_attrs.items() if k not in ATTEMPT_ATTRS}
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params=t.params,
            distributions=t.distributions,
            user_attrs=user,
            system_attrs=system,
        )
    )


def _claim_redo(study: optuna.Study) -> optuna.Trial | None:
    """The first waiting redo, claimed as Optuna claims a waiting trial (set RUNNING; False or
    an error when another worker took it first), or None."""
    storage = study._storage  # noqa: SLF001
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if not is_redo(t):
            continue
        try:
            if storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):  # noqa: SLF001
                return optuna.Trial(study, t._trial_id)  # noqa: SLF001
        except optuna.exceptions.UpdateFinishedTrialError:
            continue
    return None


class _Heartbeats(Protocol):
    """A storage with heartbeats (RDB); optuna's BaseStorage does not declare them."""

    def record_heartbeat(self, trial_id: int) -> None: ...


class Heartbeat:
    """Records ``trial``'s heartbeat now and every ``heartbeat_interval`` seconds until stopped
    (a no-op for a storage without heartbeats), and checks the study for other workers' stale
    trials as often.

    The two run in threads of their own: the check reads every trial of the study and enqueues
    retries, which on a busy machine takes seconds, and a beat that waited for it would come
    late (live workers' trials were failed as stale on a machine at load 20 on 2 cores with
    ``--heartbeat 5 --grace 15``). Beats keep to their schedule: a late beat is followed by the
    next one an interval after it was due, not after it was sent.
    """

    def __init__(self, study: optuna.Study, trial: optuna.Trial) -> None:
        self._study = study
        # The storage the study was opened with; heartbeats are recorded only when it has an
        # interval, that is when it has heartbeats.
        self._storage = cast(_Heartbeats, study._storage)  # noqa: SLF001
        self._trial_id = trial._trial_id  # noqa: SLF001
        get = getattr(self._storage, "get_heartbeat_interval", lambda: None)
        self._interval = get()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> Heartbeat:
        if self._interval:
            self._storage.record_heartbeat(self._trial_id)
            for name, run in (("heartbeat", self._beat), ("stale-check", self._check)):
                thread = threading.Thread(target=run, daemon=True, name=name)
                thread.start()
                self._threads.append(thread)
        return self

    def _beat(self) -> None:
        interval = float(self._interval or 0)
        due = time.monotonic() + interval
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            try:
                self._storage.record_heartbeat(self._trial_id)
            except Exception:  # noqa: BLE001, S110 - a blip must not kill the trial; the grace covers it
                pass
            due = max(due + interval, time.monotonic())  # behind: beat again at once

    def _check(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                fail_stale(self._study)  # other workers' dead trials, even while all are busy
            except Exception:  # noqa: BLE001, S110 - the next check tries again
                pass

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._threads = []

    def __enter__(self) -> Heartbeat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _ask(study: optuna.Study) -> optuna.Trial:
    with warnings.catch_warnings():
        # Optuna warns that heartbeats are meant for study.optimize; Heartbeat does its part.
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
        return study.ask()


def own(trial: optuna.Trial) -> None:
    """Mark ``trial`` as this process's: its host and pid (see :mod:`search.study.resume`)."""
    trial.set_user_attr("host", socket.gethostname())
    trial.set_user_attr("pid", os.getpid())


def start_attempt(study: optuna.Study, trial: optuna.Trial) -> int | None:
    """Mark ``trial`` as this process's attempt; for a redo of an interrupted trial (Optuna
    copies its user attributes into it) clear the old attempt's, record ``redo_of`` (and
    ``retry_of``, its older name) and return the interrupted trial's number."""
    storage = study._storage  # noqa: SLF001
    system = storage.get_trial_system_attrs(trial._trial_id)  # noqa: SLF001
    history = system.get("retry_history") or []
    if history:
        for key, fresh in ATTEMPT_ATTRS.items():
            if key in trial.user_attrs:
                trial.set_user_attr(key, fresh)
        trial.set_user_attr("retry_of", history[-1])
        trial.set_user_attr("redo_of", history[-1])
    own(trial)
    return history[-1] if history else None


def next_trial(
    study: optuna.Study,
    n_trials: int,
    *,
    poll_s: float = 2.0,
    on_wait: Callable[[int, int], None] | None = None,
) -> tuple[optuna.Trial, Heartbeat] | None:
    """The next trial this worker may run, its heartbeat started; None once the study holds
    ``n_trials`` counted trials.

    While other workers' running trials hold the rest of the budget this waits (polling every
    ``poll_s``; ``on_wait(counted, running)`` is called once): one of them may die, and its
    retry needs a worker.
    """
    told = False
    while True:
        fail_stale(study)
        trials = study.get_trials(deepcopy=False)
        done = counted(trials)
        if done >= n_trials:
            return None
        waiting = any(t.state == TrialState.WAITING for t in trials)
        if sum(holds_budget(t) for t in trials) >= n_trials and not waiting:
            if on_wait is not None and not told:
                on_wait(done, sum(t.state == TrialState.RUNNING for t in trials))
                told = True
            time.sleep(poll_s)
            continue
        trial = _claim_redo(study) or _ask(study)  # an interrupted trial's redo goes first
        beat = Heartbeat(study, trial).start()  # from now on Optuna's check can fail it
        own(trial)  # and from now on the same host's rerun fails it at once (resume.py)
        if slot(trial._trial_id, study.get_trials(deepcopy=False)) < n_trials:  # noqa: SLF001
            return trial, beat
        # Lost the race for the last slot to another worker: end it without counting it.
        trial.set_user_attr("uncounted", True)
        trial.set_user_attr("fail_reason", "not run: other workers took the last of --trials")
        study.tell(trial, state=TrialState.FAIL)
        beat.stop()
