"""The report's data and pick rules on a hand-built study whose answers are known."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from search import plots
from search.cli import main
from search.errors import SearchError
from search.picking import knee, parse_rule, pick
from search.report import (
    _hv2d,
    build_report,
    collect,
    precision_summary,
    write_outputs,
    write_report,
)

BASE = {
    "accuracy": 0.95,
    "latency_p50_ms": 10.0,
    "latency_p90_ms": 11.0,
    "latency_cv": 0.05,
    "peak_memory_mb": 12.0,
    "size_mb": 2.0,
}
LATENCY_BUDGET, MEMORY_BUDGET = 9.0, 20.0
# (accuracy, p50 ms, peak MB): 0-3 form the front, 4 is dominated by 1, 5 is the best of all
# but over the memory budget, so it is infeasible and on no front.
POINTS = [
    (0.96, 8.0, 10.0),
    (0.945, 5.0, 9.0),
    (0.935, 3.0, 8.0),
    (0.90, 2.0, 7.0),
    (0.94, 6.0, 9.5),
    (0.99, 1.0, 30.0),
]
DISTS = {"prune_ratio": FloatDistribution(0.0, 0.9), "epochs": IntDistribution(1, 3)}


def record(acc: float, lat: float, mem: float, ratio: float, **extra: object) -> dict:
    """A record shaped like search.trial.run_trial's."""
    cfg = {
        "prune_ratio": ratio,
        "epochs": 2,
        "temperature": 4.0,
        "alpha": 0.5,
        "lr": 1e-3,
        "batch_size": 32,
        "extra": {},
    }
    return {
        "config": cfg,
        "accuracy": acc,
        "latency_p50_ms": lat,
        "latency_p90_ms": lat * 1.1,
        "latency_cv": 0.03,
        "peak_memory_mb": mem,
        "size_mb": 2.0 * (1 - ratio),
        "measurement": {
            "latency": [{"batch_size": 1, "runs": 100, "p50_ms": lat, "p90_ms": lat * 1.1}],
            "memory": {"inference_mb": mem},
            "size_bytes": 1000,
            "providers": ["CPUExecutionProvider"],
            "onnxruntime": "1.31.1",
            "device": "test CPU",
        },
        "sizes": {
            "base": {"params": 1000, "macs": 9000},
            "prune": {"params": int(1000 * (1 - ratio)), "macs": int(9000 * (1 - ratio))},
        },
        "timings_s": {"prune": 0.1},
        "artifacts": "nowhere",
        "onnx": "nowhere/model.onnx",
        **extra,
    }


def hand_built(storage: str | None = None, name: str = "hand") -> optuna.Study:
    study = optuna.create_study(
        study_name=name, storage=storage, directions=["maximize", "minimize"]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # set_metric_names is marked experimental
        study.set_metric_names(["accuracy", "latency_p50_ms"])
    study.set_user_attr("baseline", BASE)
    study.set_user_attr(
        "settings", {"task": "digits", "space": "default", "profile": "cpu", "seed": 0}
    )
    for i, (acc, lat, mem) in enumerate(POINTS):
        ratio = 0.1 * (i + 1)
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                values=[acc, lat],
                params={"prune_ratio": ratio, "epochs": 1 + i % 3},
                distributions=DISTS,
                user_attrs={"record": record(acc, lat, mem, ratio), "duration_s": 1.0},
                system_attrs={
                    "constraints:latency_budget_ms": lat - LATENCY_BUDGET,
                    "constraints:memory_budget_mb": mem - MEMORY_BUDGET,
                },
            )
        )
    study.add_trial(
        create_trial(
            state=TrialState.FAIL,
            params={"prune_ratio": 0.8, "epochs": 1},
            distributions=DISTS,
            user_attrs={"fail_reason": "RuntimeError: boom"},
        )
    )
    study.add_trial(
        create_trial(
            state=TrialState.PRUNED,
            params={"prune_ratio": 0.85, "epochs": 2},
            distributions=DISTS,
            user_attrs={"fail_reason": "stopped early: validation accuracy 0.1"},
        )
    )
    return study


@pytest.fixture
def study() -> optuna.Study:
    return hand_built()


def test_pareto_set_is_optunas_best_trials(study: optuna.Study) -> None:
    df = collect(study)
    front = set(df[df.pareto].trial)
    assert front == {t.number for t in study.best_trials}
    assert front == {0, 1, 2, 3}  # 4 is dominated, 5 is over the memory budget
    assert list(df[~df.feasible].trial) == [5]


def test_changes_from_baseline_and_failures(study: optuna.Study) -> None:
    df = collect(study).set_index("trial")
    assert df.loc[1, "accuracy_change"] == pytest.approx(0.945 - 0.95)
    assert df.loc[1, "speedup"] == pytest.approx(10.0 / 5.0)
    assert df.loc[2, "params_prune"] == 700 and df.loc[2, "macs_base"] == 9000
    assert json.loads(df.loc[0, "config"])["prune_ratio"] == pytest.approx(0.1)
    assert df.loc[6, "state"] == "FAIL" and df.loc[6, "fail_reason"] == "RuntimeError: boom"
    assert math.isnan(df.loc[7, "accuracy"])


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
def test_pick_rules(study: optuna.Study, rule: str, trial: int) -> None:
    assert pick(collect(study), rule, baseline=BASE).trial == trial


def test_pick_without_a_qualifying_trial_says_why(study: optuna.Study) -> None:
    chosen = pick(collect(study), "accurate-within:0.5ms", baseline=BASE)
    assert chosen.trial is None and "fastest: 2.000 ms" in chosen.reason
    # Trial 5 runs in 1 ms but is over the memory budget, so no rule ever picks it.
    assert pick(collect(study), "accurate-within:1ms", baseline=BASE).trial is None


def test_knee_of_short_fronts() -> None:
    import pandas as pd

    one = pd.DataFrame({"trial": [4], "accuracy": [0.9], "latency_p50_ms": [1.0]})
    assert knee(one) == 4
    # Two points: the one nearer the ideal corner in scaled space (both are 1 away) -> lower id.
    two = pd.DataFrame({"trial": [7, 3], "accuracy": [0.9, 0.8], "latency_p50_ms": [2.0, 1.0]})
    assert knee(two) == 3


@pytest.mark.parametrize("bad", ["fastest-within:abc", "slowest", "fastest-within:150%", ""])
def test_bad_rules_are_user_errors(bad: str) -> None:
    with pytest.raises(SearchError, match="rule"):
        parse_rule(bad)


def test_budgets_hypervolume_and_importances(study: optuna.Study) -> None:
    data = build_report(study, picks=["knee"])
    assert data.budgets == {"latency_budget_ms": LATENCY_BUDGET, "memory_budget_mb": MEMORY_BUDGET}
    hv = list(data.hypervolume.hypervolume)
    assert hv == sorted(hv) and hv[-1] > 0
    assert list(data.hypervolume.trial) == [0, 1, 2, 3, 4]  # completed, within budget
    assert set(data.importances) == {"accuracy", "latency_p50_ms"}
    assert set(data.importances["accuracy"]) == {"prune_ratio", "epochs"}
    assert sum(data.importances["accuracy"].values()) == pytest.approx(1.0)


def test_hypervolume_of_two_points() -> None:
    # 0.9 * (11 - 2) + (0.96 - 0.9) * (11 - 8)
    assert _hv2d([(0.96, 8.0), (0.9, 2.0)], (0.0, 11.0)) == pytest.approx(8.28)
    assert _hv2d([(0.9, 2.0), (0.8, 3.0)], (0.0, 11.0)) == pytest.approx(0.9 * 9)


def test_pareto_figure_data(study: optuna.Study) -> None:
    data = build_report(study, picks=["knee", "fastest-within:1%"])
    fig = plots.figures(data)["pareto"]
    traces = {t.name.split(" (")[0]: t for t in fig.data}
    assert list(traces["Pareto front"].x) == [2.0, 3.0, 5.0, 8.0]
    assert traces["dominated"].opacity < 1 and list(traces["dominated"].x) == [6.0]
    assert list(traces["over budget"].x) == [1.0]
    assert list(traces["baseline"].x) == [BASE["latency_p50_ms"]]
    assert "prune_ratio" in traces["Pareto front"].text[0]  # hover shows the configuration
    assert [s.x0 for s in fig.layout.shapes if s.line.dash == "dash"] == [LATENCY_BUDGET]
    labels = {a.text for a in fig.layout.annotations}
    assert "trial 2: knee" in labels and "trial 1: fastest-within:1%" in labels


def test_precision_summary() -> None:
    assert precision_summary({"onnx": "a/model.onnx"}) == "float32"
    rec = {
        "precision": {"conv1": "int8", "conv2": "int8", "fc": "float"},
        "kernels": {"integer_layers": 2, "float_layers_after_dequantize": 5},
    }
    want = "float x1, int8 x2; 2 int kernels, 5 float after DequantizeLinear"
    assert precision_summary(rec) == want


def test_written_files(study: optuna.Study, tmp_path: Path) -> None:
    paths, notes = write_report(build_report(study, picks=["knee"]), tmp_path, png=False)
    import pandas as pd

    assert len(pd.read_csv(paths["csv"])) == 8
    assert set(pd.read_csv(paths["pareto_csv"]).trial) == {t.number for t in study.best_trials}
    html = paths["html"].read_text()
    assert html.count("plotly.js v") <= 2 and "Plotly.newPlot" in html  # inlined once
    assert 'src="http' not in html  # works offline
    assert "RuntimeError: boom" in html and "<b>trial 2</b>" in html
    assert notes == []
    # The cheap per-trial call study.py makes still works and writes no HTML.
    out = write_outputs(study, tmp_path / "cheap", html=False)
    assert "html" not in out and out["csv"].is_file()


def test_cli_report_prints_front_and_picks(tmp_path: Path, capsys) -> None:
    (tmp_path / "hand").mkdir()
    hand_built(f"sqlite:///{tmp_path / 'hand' / 'study.db'}")
    code = main(
        [
            "report",
            "--study",
            "hand",
            "--results-dir",
            str(tmp_path),
            "--pick",
            "knee",
            "--pick",
            "fastest-within:2%",
            "--no-png",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "knee: trial 2" in out and "fastest-within:2%: trial 2" in out
    assert "+2.00x" not in out and "2.00x" in out  # trial 1's speedup in the table
    assert (tmp_path / "hand" / "report.html").is_file()
    assert (
        main(["report", "--study", "hand", "--results-dir", str(tmp_path), "--pick", "fastest"])
        == 2
    )


def test_report_of_a_study_without_completed_trials(tmp_path: Path) -> None:
    empty = optuna.create_study(directions=["maximize", "minimize"])
    failed = optuna.create_study(directions=["maximize", "minimize"])
    failed.set_user_attr("baseline", BASE)
    failed.add_trial(create_trial(state=TrialState.FAIL, user_attrs={"fail_reason": "boom"}))
    for i, st in enumerate((empty, failed)):
        data = build_report(st, picks=["knee", "fastest-within:1%"])
        assert [p.trial for p in data.picks] == [None, None]
        assert plots.figures(data)["pareto"] is None
        paths, _ = write_report(data, tmp_path / str(i))
        assert "Not shown" in paths["html"].read_text()


def test_sensitivity_is_drawn_when_the_study_has_it(study: optuna.Study) -> None:
    assert plots.figures(build_report(study))["sensitivity"] is None
    study.set_user_attr("sensitivity", {"conv1": {"0.5": 0.01, "0.25": 0.05}, "fc": {"0.5": 0.0}})
    fig = plots.figures(build_report(study))["sensitivity"]
    assert {t.name: list(t.x) for t in fig.data} == {"0.5": ["conv1", "fc"], "0.25": ["conv1"]}
