"""The report's plain data: one row a trial, the front, budgets, importances, tables."""

from __future__ import annotations

import json
import math

import optuna
import pytest
from optuna.trial import TrialState, create_trial

from search.config import plan_of
from search.report import build_report, collect, precision_summary, quantization_summary
from search.report.collect import front_table
from search.report.quantization import sensitivity_rows
from tests.conftest import trial_record
from tests.report.conftest import BASE, LATENCY_BUDGET, MEMORY_BUDGET, copy_study
from tests.report.tiny_study import METRIC


def test_pareto_set_is_optunas_best_trials(hand: optuna.Study) -> None:
    df = collect(hand)
    front = set(df[df.pareto].trial)
    assert front == {t.number for t in hand.best_trials}
    assert front == {0, 1, 2, 3}  # 4 is dominated, 5 is over the memory budget
    assert list(df[~df.feasible].trial) == [5]


def test_changes_from_baseline_and_failures(hand: optuna.Study) -> None:
    df = collect(hand).set_index("trial")
    assert df.loc[1, "accuracy_change"] == pytest.approx(0.945 - 0.95)
    assert df.loc[1, "speedup"] == pytest.approx(10.0 / 5.0)
    assert df.loc[2, "params_prune"] == 700 and df.loc[2, "macs_base"] == 9000
    assert json.loads(df.loc[0, "config"])["prune_ratio"] == pytest.approx(0.1)
    assert df.loc[6, "state"] == "FAIL" and df.loc[6, "fail_reason"] == "RuntimeError: boom"
    assert math.isnan(df.loc[7, "accuracy"])


def test_budgets_hypervolume_and_importances(hand: optuna.Study) -> None:
    data = build_report(hand, picks=["knee"])
    assert data.budgets == {"latency_budget_ms": LATENCY_BUDGET, "memory_budget_mb": MEMORY_BUDGET}
    hv = list(data.hypervolume.hypervolume)
    assert hv == sorted(hv) and hv[-1] > 0
    assert list(data.hypervolume.trial) == [0, 1, 2, 3, 4]  # completed, within budget
    assert set(data.importances) == {"accuracy", "latency_p50_ms"}
    assert set(data.importances["accuracy"]) == {"prune_ratio", "epochs"}
    assert sum(data.importances["accuracy"].values()) == pytest.approx(1.0)


def test_plan_of_reads_the_flat_and_the_per_step_config() -> None:
    plan = {"stem": "int8", "fc": "float"}
    assert plan_of({"precision": plan, "prune_ratio": 0.2}) == plan
    assert plan_of({"prune": {"ratio": 0.2}, "quantize": {"precision": plan}}) == plan
    assert plan_of({"prune_ratio": 0.2}) == {} and plan_of(None) == {}


@pytest.mark.parametrize(
    "config",
    [
        {"precision": {"conv1": "int8", "conv2": "int8", "fc": "float"}},
        {"quantize": {"precision": {"conv1": "int8", "conv2": "int8", "fc": "float"}}},
    ],
)
def test_precision_summary(config: dict) -> None:
    assert precision_summary(trial_record(onnx="a/model.onnx")) == "float32"
    kernels = {"integer_layers": 2, "float_layers_after_dequantize": 5}
    rec = trial_record(config=config, kernels=kernels)
    want = "float x1, int8 x2; 2 int kernels, 5 float after DequantizeLinear"
    assert precision_summary(rec) == want


def test_the_real_studys_metric_sensitivity_and_quantization(real: optuna.Study) -> None:
    data = build_report(real)
    assert data.metric == METRIC
    sens = real.user_attrs["sensitivity"]
    assert list(data.sensitivity["group"]) == sens["order"]
    assert list(data.sensitivity["drop"]) == [sens["groups"][g]["drop"] for g in sens["order"]]
    assert set(data.sensitivity["precision"]) == {"int8"}
    models = list(data.quantization.model)
    assert models[:2] == ["float baseline", "uniform int8"]
    assert data.quantization.accuracy.iloc[1] == real.user_attrs["baseline_int8"]["accuracy"]


def test_no_sensitivity_pass_is_an_empty_table() -> None:
    assert sensitivity_rows(None).empty and sensitivity_rows({}).empty


def test_best_mixed_precision_reads_the_per_step_config() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("baseline", {"accuracy": 0.99, "latency_p50_ms": 1.0})
    for i, plan in enumerate(({"a": "int8", "b": "int8"}, {"a": "int8", "b": "float"})):
        rec = {"accuracy": 0.9 + i / 100, "latency_p50_ms": 0.5, "config": {"quantize": {}}}
        rec["config"]["quantize"]["precision"] = plan
        study.add_trial(
            create_trial(state=TrialState.COMPLETE, values=[0.9, 0.5], user_attrs={"record": rec})
        )
    summary = quantization_summary(study)
    assert list(summary.model) == ["float baseline", "best mixed precision"]
    assert summary.trial.iloc[1] == 1


def test_front_table_names_the_metric_and_the_picks(real: optuna.Study, hand) -> None:
    columns, rows = front_table(build_report(hand, picks=["knee"]))
    assert columns[1] == "accuracy"
    assert rows[0][:2] == ["baseline", f"{BASE['accuracy']:.4f}"]
    assert [r[0] for r in rows[1:]] == ["3", "2", "1", "0"]  # fastest first
    assert rows[2][-1] == "knee" and rows[2][4] == "3.33x"
    columns, _ = front_table(build_report(copy_study(real)))
    assert columns[1] == METRIC
