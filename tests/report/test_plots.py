"""The figures and their one registry: what each draws from the collected data."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from search.report import build_report
from search.report.plots import FIGURES, figures
from tests.report.conftest import BASE, LATENCY_BUDGET, copy_study
from tests.report.tiny_study import METRIC


def test_registry_has_one_entry_with_words_for_each_figure() -> None:
    keys = [f.key for f in FIGURES]
    assert len(keys) == len(set(keys))
    for f in FIGURES:
        assert f.title and f.caption.endswith(".") and f.missing and callable(f.draw)
    assert [f.key for f in FIGURES if f.png] == ["pareto", "memory", "size", "hypervolume"]
    assert [f.key for f in FIGURES if f.optional] == ["sensitivity"]


def test_figures_follows_the_registry(hand: optuna.Study) -> None:
    assert list(figures(build_report(hand))) == [f.key for f in FIGURES]


def test_pareto_figure_data(hand: optuna.Study) -> None:
    data = build_report(hand, picks=["knee", "fastest-within:1%"])
    fig = figures(data)["pareto"]
    traces = {t.name.split(" (")[0]: t for t in fig.data}
    assert list(traces["Pareto front"].x) == [2.0, 3.0, 5.0, 8.0]
    assert traces["dominated"].opacity < 1 and list(traces["dominated"].x) == [6.0]
    assert list(traces["over budget"].x) == [1.0]
    assert list(traces["baseline"].x) == [BASE["latency_p50_ms"]]
    assert "prune_ratio" in traces["Pareto front"].text[0]  # hover shows the configuration
    assert [s.x0 for s in fig.layout.shapes if s.line.dash == "dash"] == [LATENCY_BUDGET]
    labels = {a.text for a in fig.layout.annotations}
    assert "trial 2: knee" in labels and "trial 1: fastest-within:1%" in labels


def test_sensitivity_figure_draws_the_real_pass(real: optuna.Study) -> None:
    """The study's real ``sensitivity`` attribute: one bar a group, the drop, in its order."""
    sens = real.user_attrs["sensitivity"]
    fig = figures(build_report(real))["sensitivity"]
    (bars,) = fig.data
    assert list(bars.x) == sens["order"] and set(bars.x) == set(sens["groups"])
    assert list(bars.y) == [sens["groups"][g]["drop"] for g in sens["order"]]
    assert "float_accuracy" not in bars.x
    assert f"at {sens['precision']}" in fig.layout.title.text


def test_no_sensitivity_pass_no_figure(hand: optuna.Study) -> None:
    assert figures(build_report(hand))["sensitivity"] is None


def test_every_label_names_the_studys_metric(real: optuna.Study) -> None:
    data = build_report(real, picks=["knee"])
    figs = figures(data)
    for key in ("pareto", "memory", "size"):
        layout = figs[key].layout
        assert layout.title.text.startswith(f"{METRIC} vs")
        assert layout.yaxis.title.text.startswith(METRIC)
    front = next(t for t in figs["pareto"].data if t.name.startswith("Pareto front"))
    assert f"{METRIC} " in front.text[0]
    assert METRIC in figs["hypervolume"].layout.yaxis.title.text
    assert METRIC in figs["sensitivity"].layout.yaxis.title.text
    assert [d.label for d in figs["parallel"].data[0].dimensions][-2] == METRIC
    assert {t.name for t in figs["importance"].data} == {METRIC, "p50 latency (ms)"}
    for f in FIGURES:
        title, caption = f.words(data)
        assert "{metric}" not in title + caption
        assert "accuracy against" not in title.lower().replace(METRIC, "")
    pareto_title, _ = FIGURES[0].words(data)
    assert pareto_title == f"Pareto front: {METRIC} against latency"


def test_a_study_without_a_metric_says_accuracy(real: optuna.Study) -> None:
    study = copy_study(real)
    study.set_user_attr("metric", None)
    fig = figures(build_report(study))["pareto"]
    assert fig.layout.yaxis.title.text.startswith("accuracy")


@pytest.mark.parametrize("states", [(), (TrialState.FAIL,)])
def test_studies_without_completed_trials_draw_nothing(states) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("baseline", BASE)
    for state in states:
        study.add_trial(create_trial(state=state, user_attrs={"fail_reason": "boom"}))
    data = build_report(study, picks=["knee", "fastest-within:1%"])
    assert [p.trial for p in data.picks] == [None, None]
    assert all(fig is None for fig in figures(data).values())


@pytest.mark.parametrize("which", ["hand", "real"])
def test_the_objective_axis_names_the_split_the_study_selected_on(which, request) -> None:
    """Studies with a test figure beside the objective selected on the validation split; older
    ones (no ``test_accuracy``) on the test split: the axis says which."""
    study = request.getfixturevalue(which)
    data = build_report(study)
    split = "test" if data.baseline.scored_on_test else "validation"
    fig = figures(data)["pareto"]
    assert f"({'ONNX Runtime'}, {split} split)" in fig.layout.yaxis.title.text
