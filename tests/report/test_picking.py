"""Pick rules on the hand-built study, whose answers are worked out by hand."""

from __future__ import annotations

import optuna
import pandas as pd
import pytest

from search.errors import SearchError
from search.record import PAIRED
from search.report import collect, parse_rule, pick
from search.report.picking import knee
from tests.report.conftest import BASE


@pytest.mark.parametrize(
    ("rule", "trial"),
    [
        ("fastest-within:1%", 1),  # 0.945 and 0.94 are within 1 point of 0.95; 1 is faster
        ("fastest-within:0.01", 1),
        ("fastest-within:2%", 2),
        ("fastest-within:0%", 0),
        ("accurate-within:5ms", 1),
        ("accurate-within:4ms", 2),
        ("accurate-within:2.5", 3),
        ("knee", 2),  # farthest above the line from trial 3 to trial 0 (worked out by hand)
    ],
)
def test_pick_rules(hand: optuna.Study, rule: str, trial: int) -> None:
    assert pick(collect(hand), rule, baseline_accuracy=BASE["accuracy"]).trial == trial


def test_pick_without_a_qualifying_trial_says_why(hand: optuna.Study) -> None:
    chosen = pick(collect(hand), "accurate-within:0.5ms", baseline_accuracy=BASE["accuracy"])
    assert chosen.trial is None and "fastest: 2.000 ms" in chosen.reason
    # Trial 5 runs in 1 ms but is over the memory budget, so no rule ever picks it.
    assert (
        pick(collect(hand), "accurate-within:1ms", baseline_accuracy=BASE["accuracy"]).trial
        is None
    )


def test_reasons_name_the_tasks_metric(hand: optuna.Study) -> None:
    df = collect(hand)
    fastest = pick(
        df, "fastest-within:1%", baseline_accuracy=BASE["accuracy"], metric="top-5 accuracy"
    )
    assert fastest.reason.startswith("fastest trial with top-5 accuracy >= 0.9400")
    best = pick(df, "accurate-within:5ms", baseline_accuracy=BASE["accuracy"], metric="mIoU")
    assert best.reason == "highest mIoU at <= 5 ms p50"
    with pytest.raises(SearchError, match="baseline mIoU"):
        pick(df, "fastest-within:1%", baseline_accuracy=None, metric="mIoU")


def test_knee_of_short_fronts() -> None:
    one = pd.DataFrame({"trial": [4], "accuracy": [0.9], PAIRED: [1.0]})
    assert knee(one) == 4
    # Two points: the one nearer the ideal corner in scaled space (both are 1 away) -> lower id.
    two = pd.DataFrame({"trial": [7, 3], "accuracy": [0.9, 0.8], PAIRED: [2.0, 1.0]})
    assert knee(two) == 3


@pytest.mark.parametrize("bad", ["fastest-within:abc", "slowest", "fastest-within:150%", ""])
def test_bad_rules_are_user_errors(bad: str) -> None:
    with pytest.raises(SearchError, match="rule"):
        parse_rule(bad)
