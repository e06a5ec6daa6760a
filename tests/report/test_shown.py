"""What the page shows (issue 28): axes within the metric's bounds, only parameters that acted,
the confirmed speedup with its interval, captions for what is there, redos, picks explained.

The study here is hand-built from per-step configs like the trial pipeline records, so every
answer is known: trial 0 has low-rank off and every group quantized but ``head`` had no layer
in the measured graph; trial 1 factorizes and keeps every group float; trial 2 redoes the
interrupted trial 3.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from search.record import PAIRED
from search.report import build_report, collect, write_report
from search.report.axes import UNIT, metric_bounds, padded_range
from search.report.collect import front_table
from search.report.page import page, quantization_words
from search.report.plots import figures, parallel_figure, short_label
from search.report.scatter import objective_figure

GROUPS = ("stem", "head")
DISTS = {
    "prune_ratio": FloatDistribution(0.0, 0.9),
    "lowrank": CategoricalDistribution((True, False)),
    "lowrank_kind": CategoricalDistribution(("channel", "spatial")),
    "lowrank_ratio": FloatDistribution(0.1, 0.9),
    **{f"precision_{g}": CategoricalDistribution(("float", "int8")) for g in GROUPS},
}
BASELINE = {"accuracy": 0.9, "latency_paired_ms": 2.0, "peak_memory_mb": 10.0, "size_mb": 1.0}


def _trial(
    acc: float, lat: float, *, lowrank: bool, precision: str, ran: dict, **attrs: object
) -> optuna.trial.FrozenTrial:
    params = {"prune_ratio": 0.3, "lowrank": lowrank, "lowrank_kind": "spatial",
              "lowrank_ratio": 0.5, **{f"precision_{g}": precision for g in GROUPS}}  # fmt: skip
    config = {
        "prune": {"ratio": 0.3, "scales": {}},
        "lowrank": {"apply": lowrank, "kind": "spatial", "rank_ratio": 0.5, "group_ratios": {}},
        "quantize": {"precision": dict.fromkeys(GROUPS, precision), "calibration": "minmax"},
    }
    quantized = precision != "float"
    record = {"config": config, "accuracy": acc, PAIRED: lat, "latency_p90_ms": lat,
              "peak_memory_mb": 9.0, "size_mb": 0.5, "ran": ran,
              "quantize": {"quantized": quantized}}  # fmt: skip
    return create_trial(
        state=TrialState.COMPLETE,
        values=[acc, lat],
        params=params,
        distributions=DISTS,
        user_attrs={"record": record, **attrs},
    )


def study_of(accuracies: tuple[float, float, float], *, confirmed: bool = True) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # set_metric_names is marked experimental
        study.set_metric_names(["accuracy", PAIRED])
    study.set_user_attr("baseline", BASELINE)
    a0, a1, a2 = accuracies
    study.add_trial(_trial(a0, 1.0, lowrank=False, precision="int8", ran={"stem": "int8"}))
    study.add_trial(_trial(a1, 0.5, lowrank=True, precision="float", ran={}))
    study.add_trial(
        _trial(a2, 0.8, lowrank=False, precision="float", ran={}, redo_of=3)  # a redo
    )
    study.add_trial(
        create_trial(
            state=TrialState.FAIL,
            params={"prune_ratio": 0.5},
            distributions={"prune_ratio": DISTS["prune_ratio"]},
            user_attrs={"fail_reason": "interrupted"},
        )
    )
    if confirmed:
        rows = {
            str(t.number): {
                PAIRED: t.values[1],
                "latency_ci_ms": [0.9, 1.1],
                "latency_relative": t.values[1] / 2.0,
                "relative_ci": [0.4, 0.6],
                "on_front": True,
            }  # fmt: skip
            for t in study.best_trials
        }
        study.set_user_attr("confirmed", {"trials": rows, "rounds": 10, "at": "now"})
    return study


@pytest.mark.parametrize("values", [[0.875], [0.0], [1.0], [0.2, 0.9, 1.0], [0.0, 1.0]])
def test_padded_ranges_stay_within_the_bounds(values: list[float]) -> None:
    low, high = padded_range(values, bounds=UNIT) or (math.nan, math.nan)
    assert 0.0 <= low <= min(values) and max(values) <= high <= 1.0
    assert low < high
    if len(values) == 1 and 0 < values[0] < 1:  # a single value: a small symmetric margin
        assert values[0] - low == pytest.approx(high - values[0])
        assert high - low < 0.2


def test_metric_bounds_are_the_unit_interval_only_when_every_value_lies_in_it() -> None:
    assert metric_bounds([0.3, 1.0, None, float("nan")]) == UNIT
    assert metric_bounds([0.3, 12.5]) == (None, None)


@pytest.mark.parametrize("accuracies", [(1.0, 1.0, 1.0), (0.875, 0.875, 0.875), (0.5, 0.9, 0.7)])
def test_metric_axes_stay_within_zero_and_one(accuracies: tuple[float, float, float]) -> None:
    data = build_report(study_of(accuracies), picks=["knee", "fastest-within:1%"])
    shown = [*accuracies, BASELINE["accuracy"]]
    for x in (PAIRED, "peak_memory_mb", "size_mb"):
        fig = objective_figure(data, x=x, x_title=x)
        assert fig is not None
        low, high = fig.layout.yaxis.range
        assert 0.0 <= low <= min(shown) and max(shown) <= high <= 1.0, (x, low, high)
        assert high - low <= 1.0 and fig.layout.xaxis.range[0] >= 0.0
    parallel = parallel_figure(data)
    assert parallel is not None
    axis = next(d for d in parallel.data[0].dimensions if d.label == "accuracy")
    assert 0.0 <= axis.range[0] <= min(accuracies) and max(accuracies) <= axis.range[1] <= 1.0
    hv = figures(data)["hypervolume"]
    assert hv is not None and hv.layout.yaxis.range[0] >= 0.0


def test_parameters_that_did_not_act_are_absent(tmp_path: Path) -> None:
    study = study_of((0.9, 0.8, 0.85))
    df = collect(study).set_index("trial")
    # Low-rank off in 0 and 2: its kind and ratio are empty there, set where it acted (1).
    assert df.loc[1, "param_lowrank_kind"] == "spatial"
    assert df.loc[[0, 2], "param_lowrank_kind"].isna().all()
    assert df.loc[[0, 2], "param_lowrank_ratio"].isna().all()
    # Trial 0 quantized, but the audit found no layer of "head": its precision did not act.
    assert df.loc[0, "param_precision_stem"] == "int8"
    assert pd.isna(df.loc[0, "param_precision_head"])
    assert json.loads(df.loc[0, "config"])["lowrank"] == {"apply": False}
    assert "head" not in json.loads(df.loc[0, "config"])["quantize"]["precision"]
    paths, _ = write_report(build_report(study), tmp_path)
    csv = pd.read_csv(paths["csv"]).set_index("trial")
    assert csv.loc[[0, 2], "param_lowrank_kind"].isna().all()  # empty cells
    assert '"kind"' not in paths["csv"].read_text().splitlines()[1]


def test_a_parameter_that_acted_in_no_trial_is_not_plotted() -> None:
    study = study_of((0.9, 0.8, 0.85))
    only_off = optuna.create_study(directions=study.directions)
    only_off.set_user_attr("baseline", BASELINE)
    only_off.add_trials([t for t in study.trials if t.number in (0, 2)])
    data = build_report(only_off)
    assert not any(c.startswith("param_lowrank_") for c in data.trials.columns)
    parallel = parallel_figure(data)
    assert parallel is not None
    labels = {d.label for d in parallel.data[0].dimensions}
    assert not {"lowrank_kind", "lowrank_ratio"} & labels
    for imp in data.importances.values():
        assert not {"lowrank_kind", "lowrank_ratio"} & set(imp)


def test_long_group_names_get_short_titles_and_their_full_names_in_a_note() -> None:
    long = "precision_features.3.block.2.fc1"
    assert short_label(long) == "prec …block.2.fc1"
    assert short_label("precision_fc") == "prec fc" and short_label("lowrank_ratio") == (
        "lowrank_ratio"
    )
    assert all(len(short_label(f"prune_scale_{'x' * n}")) <= 20 for n in range(40))


def test_the_confirmed_speedup_is_shown_with_its_interval() -> None:
    data = build_report(study_of((0.9, 0.8, 0.85)))
    columns, rows = front_table(data)
    cell = rows[1][columns.index("confirmed speedup")]
    # Relative latency 0.25 in [0.4, 0.6]: the speedup is its inverse, the interval's ends swap.
    assert cell == "4.00x [1.67, 2.50]"
    assert "confirmed speedup" in page(data, figures(data))
    unconfirmed = build_report(study_of((0.9, 0.8, 0.85), confirmed=False))
    assert "confirmed speedup" not in front_table(unconfirmed)[0]


def test_captions_name_only_the_rows_present() -> None:
    title, caption = quantization_words({"float baseline", "uniform int8"}, "accuracy")
    assert title == "Float and uniform int8" and "mixed-precision trial" not in caption
    title, caption = quantization_words(
        {"float baseline", "uniform int8", "best mixed precision"}, "mIoU"
    )
    assert title == "Float, uniform int8 and mixed precision"
    assert "mixed-precision trial" in caption and "highest mIoU" in caption
    data = build_report(study_of((0.9, 0.8, 0.85)))  # all three on the front
    assert "every completed trial is on the front" in page(data, figures(data))
    data = build_report(study_of((0.9, 0.8, 0.75)))  # 2 is dominated by 1
    html = page(data, figures(data))
    assert "faded points are dominated." in html and "over a budget" not in html


def test_a_redo_says_which_trial_it_redoes() -> None:
    data = build_report(study_of((0.9, 0.8, 0.95)))  # trial 2 (the redo) on the front
    columns, rows = front_table(data)
    notes = {r[0]: r[columns.index("notes")] for r in rows}
    assert notes["2"] == "redo of trial 3" and notes["1"] == ""
    html = page(data, figures(data))
    assert "redo of trial 3 (interrupted)" in html  # the hover
    assert "interrupted; redone as trial 2" in html  # the failed table
    assert build_report(study_of((0.9, 0.8, 0.85))).trials.redo_of.notna().sum() == 1


def test_each_pick_is_explained_with_its_figures() -> None:
    data = build_report(study_of((0.9, 0.8, 0.88)), picks=["knee", "fastest-within:1%"])
    knee, fastest = data.picks
    assert knee.trial == 2 and "accuracy 0.8800 (-2.00% vs baseline)" in knee.detail
    assert "p50 0.800 ms (2.50x the baseline's speed)" in knee.detail
    # Scaled, trial 2 is (0.8, 0.4): 0.2 / sqrt(2) above the line from trial 1 to trial 0.
    assert "the farthest above the straight line from its fastest end (trial 1)" in knee.detail
    assert f"{0.2 / math.sqrt(2):.3f} with both objectives scaled" in knee.detail
    flat = build_report(study_of((0.9, 0.8, 0.85)), picks=["knee"]).picks[0]
    assert "no trial of the front's 3 lies above the straight line" in flat.detail
    assert fastest.trial == 0 and "the fastest of the 1 of 3" in fastest.detail
    assert knee.detail in page(data, figures(data)).replace("&#x27;", "'")
