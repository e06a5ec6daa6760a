"""The front's confirmation widens its intervals by the variation between sessions: each trial's
own measurement (an earlier session) against the confirmation's."""

from __future__ import annotations

import math

import optuna
import pytest

from search.measure.pooled import MIN_SESSION_PAIRS
from search.study.confirm import _widen, summary_lines


def _trial(number: int, relative: float, *, busy: bool = False) -> optuna.trial.FrozenTrial:
    record = {"accuracy": 0.9, "latency_paired_ms": relative, "latency_relative": relative}
    t = optuna.trial.create_trial(
        values=[0.9, relative], user_attrs={"record": {**record, "busy": busy}}
    )
    t.number = number
    return t


def _row(relative: float) -> dict:
    ci = [relative * 0.98, relative * 1.02]
    return {"latency_relative": relative, "relative_ci": ci, "latency_ci_ms": ci, "on_front": True}


def test_a_front_that_moved_between_sessions_gets_intervals_that_cover_the_move():
    # Every trial measured 12 % slower in the study than in the confirmation: a later session
    # may move as far, so the intervals widen to cover about that.
    front = {str(i): _trial(i, 0.5 * 1.12) for i in range(MIN_SESSION_PAIRS)}
    trials = {n: _row(0.5) for n in front}
    info = _widen(trials, front, scale=2.0)
    assert info["pairs"] == MIN_SESSION_PAIRS and info["busy"] is False
    assert info["spread"] == pytest.approx(math.log(1.12))
    for row in trials.values():
        low, high = row["relative_ci"]
        assert row["process_ci"] == [0.49, 0.51]
        assert low < 0.5 / 1.12 and high > 0.5 * 1.12  # the move lands inside
        assert high < 0.5 * 1.3 and row["latency_ci_ms"] == [low * 2.0, high * 2.0]
    lines = "\n".join(summary_lines({"trials": {}, "rounds": 1, "load": {}, "sessions": info}))
    assert "widened by the variation between sessions" in lines and "12 %" in lines


def test_too_few_trials_measured_in_both_sessions_leave_the_intervals_alone():
    front = {str(i): _trial(i, 0.7) for i in range(MIN_SESSION_PAIRS - 1)}
    trials = {n: _row(0.5) for n in front}
    info = _widen(trials, front, scale=1.0)
    assert info["spread"] is None and info["pairs"] == MIN_SESSION_PAIRS - 1
    assert all(
        row["relative_ci"] == [0.49, 0.51] and "process_ci" not in row for row in trials.values()
    )
