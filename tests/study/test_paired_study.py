"""Numbers a user can trust (issue 15): select on validation and record test, paired latency in
a study, a busy machine named, the front confirmed, old studies refused."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import optuna
import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

from search.cli.main import main
from search.compress.distill import DistillConfig
from search.config import TrialConfig, load_profile, load_space
from search.errors import SearchError
from search.report import build_report
from search.study import StudySpec, open_study, run_study
from search.study.references import measure_baseline, pair_with_baseline
from search.trial.context import Context
from search.trial.pipeline import run_trial
from tests.conftest import DATA, cores_loaded, quick_profile
from tests.tiny_task import make_random_task


def _split_task(tmp_path: Path):
    """The random tiny task, relabelled: validation labels are the model's own predictions
    (its validation accuracy is 1), test labels the next class (its test accuracy is 0)."""
    task = make_random_task(seed=0, cache_dir=tmp_path)
    with torch.no_grad():
        x_val, x_test = task.val.tensors[0], task.test.tensors[0]
        pred_val, pred_test = task.model(x_val).argmax(1), task.model(x_test).argmax(1)
    task.val = TensorDataset(x_val, pred_val)
    task.test = TensorDataset(x_test, (pred_test + 1) % 4)
    task.train = TensorDataset(task.train.tensors[0], task.model(task.train.tensors[0]).argmax(1))
    return task


def _context(task, profile) -> Context:
    """A study's context measuring here, paired with the baseline once it is set (as
    run_study's is)."""
    from search.measure.target import LocalTarget

    target = LocalTarget(profile.measure_spec())
    ctx = Context.build(
        task=task, space=load_space("default"), profile=profile, seed=0, measure=print
    )
    x = ctx.eval_inputs[:1]
    ctx.measure = lambda path: target.measure(
        path, eval_inputs=ctx.eval_inputs, latency_input=x, reference=ctx.reference
    )
    return ctx


def test_the_objective_is_the_validation_metric_and_the_test_metric_is_recorded(tmp_path):
    task = _split_task(tmp_path)
    profile = quick_profile("cpu")
    ctx = _context(task, profile)
    baseline = measure_baseline(ctx, _export(ctx, tmp_path))
    assert baseline.accuracy == 1.0 and baseline.test_accuracy == 0.0
    pair_with_baseline(ctx, baseline, tmp_path / "base")
    # (BatchNorm statistics still move in training, so the student's answers drift a little.)
    cfg = TrialConfig(distill=DistillConfig(epochs=1, lr=1e-8))
    rec = run_trial(cfg, ctx=ctx, out_dir=tmp_path / "t").to_json()
    # The objective and the test figure, checked against the measured file itself.
    session = ort.InferenceSession(rec["measured_onnx"], providers=["CPUExecutionProvider"])
    for split, key in ((task.val, "accuracy"), (task.test, "test_accuracy")):
        x, y = split.tensors
        out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert rec[key] == pytest.approx(float((out.argmax(1) == y.numpy()).mean()))
    assert rec["accuracy"] != rec["test_accuracy"]
    # Paired with the baseline: relative latency and its interval, the objective scaled by it.
    lo, hi = rec["latency_relative_ci"]
    assert lo <= rec["latency_relative"] <= hi
    assert rec["latency_paired_ms"] == pytest.approx(
        rec["latency_relative"] * baseline.latency_scale_ms
    )
    assert rec["measurement"]["paired"]["clock"] == "cpu"  # one intra-op thread on the CPU EP
    assert isinstance(rec["busy"], bool) and isinstance(rec["noisy"], bool)


def _export(ctx: Context, tmp_path: Path) -> Path:
    from search.study.references import export_float

    return export_float(ctx, tmp_path / "base")


def test_a_task_without_a_test_split_says_so(tmp_path):
    task = make_random_task(seed=0, cache_dir=tmp_path)
    task.test = task.val
    ctx = _context(task, quick_profile("cpu"))
    baseline = measure_baseline(ctx, _export(ctx, tmp_path))
    assert baseline.test_accuracy is None and ctx.test_labels is None
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("baseline", baseline.to_json())
    notes = " ".join(build_report(study).notes)
    assert "no separate test split" in notes


def test_a_study_scored_the_old_way_is_refused_before_anything_is_written(tmp_path):
    spec = StudySpec(
        task="tests.tiny_task:make_random_task",
        space=load_space(str(DATA / "tiny_space.yaml")),
        profile=load_profile(str(DATA / "tiny_cpu.yaml")),
        study_name="old",
        results_dir=tmp_path,
    )
    study = open_study(spec, create=True)
    assert study.user_attrs["scoring"]["version"] == 2  # a new study is scored the new way
    # A study the older code made and measured: a baseline, no scoring recorded.
    older = dataclasses.replace(spec, study_name="older")
    older.study_dir.mkdir()
    old = optuna.create_study(
        study_name="older", storage=older.storage_url, directions=["maximize", "minimize"]
    )
    old.set_user_attr("baseline", {"accuracy": 0.9, "latency_p50_ms": 1.0})
    with pytest.raises(SearchError, match="scored before paired latency"):
        open_study(older, create=True, scored=True)
    kept = optuna.load_study(study_name="older", storage=older.storage_url).user_attrs
    assert "settings" not in kept and "scoring" not in kept  # refused: nothing written
    open_study(older, create=True)  # reading it (report, export) still works


# ------------------------------------------------------------- a real study on a busy machine


@pytest.fixture(scope="module")
def loaded_study(tmp_path_factory):
    """Two trials of the random tiny task run while two busy processes load the cores."""
    from search.core.progress import console

    results = tmp_path_factory.mktemp("results")
    spec = StudySpec(
        task="tests.tiny_task:make_random_task",
        space=load_space(str(DATA / "tiny_space.yaml")),
        profile=load_profile(str(DATA / "tiny_cpu.yaml")),
        study_name="busy",
        results_dir=results,
    )
    with cores_loaded(2), console.capture() as out:
        study = run_study(spec, trials=2, progress=False)
    return spec, study, out.get()


@pytest.mark.slow
def test_a_study_under_load_warns_and_its_report_marks_the_trials(loaded_study):
    spec, study, printed = loaded_study
    assert "warning: the machine was busy" in printed
    assert "[busy: load average" in printed  # the trial lines say it too
    trials = pd.read_csv(spec.study_dir / "trials.csv")
    done = trials[trials.state == "COMPLETE"]
    assert len(done) and done.busy.all()
    page = (spec.study_dir / "report.html").read_text()
    assert "measured while other processes used the cores (marked busy)" in page
    assert "<td class='l'>busy" in page  # the front table's notes column
    assert study.user_attrs["baseline"]["measurement"]["load"]["busy"] is True


@pytest.mark.slow
def test_report_confirm_writes_confirmed_figures_to_pareto_csv_and_trial_json(
    loaded_study, tmp_path
):
    spec, study, printed = loaded_study
    assert "confirmed the front" in printed  # the end of run confirms already
    study.set_user_attr("confirmed", None)  # forget it: report --confirm must measure again
    where = ["--study", spec.study_name, "--results-dir", str(spec.results_dir)]
    assert main(["report", "--confirm", "--no-png", *where]) == 0
    front = pd.read_csv(spec.study_dir / "pareto.csv")
    assert len(front) and (front.confirmed_p50_ms > 0).all()
    assert (front.confirmed_ci_low_ms <= front.confirmed_p50_ms).all()
    assert (front.confirmed_p50_ms <= front.confirmed_ci_high_ms).all()
    assert front.confirmed_front.notna().all()
    number = int(front.trial.iloc[0])
    assert main(["export", "--trial", str(number), "--out", str(tmp_path / "x"), *where]) == 0
    info = json.loads((tmp_path / "x" / "trial.json").read_text())
    confirmed = info["confirmed"]
    assert confirmed["latency_paired_ms"] == pytest.approx(float(front.confirmed_p50_ms.iloc[0]))
    assert confirmed["rounds"] >= 20 and isinstance(confirmed["on_front"], bool)
    assert info["measurements"]["test_accuracy"] is not None
    assert np.isfinite(info["measurements"]["latency_relative"])


def test_a_front_that_cannot_be_confirmed_ends_run_with_a_line_not_an_error(tmp_path, capsys):
    """The trials are done: a confirmation without files says why and leaves the study be."""
    from search.core.progress import console
    from search.measure.target import LocalTarget
    from search.study.confirm import confirm_after_run

    profile = load_profile(str(DATA / "tiny_cpu.yaml"))
    target = LocalTarget(profile.measure_spec())
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr(
        "baseline", {"measurement": {"device": target.device}, "latency_scale_ms": 1.0}
    )
    study.add_trial(optuna.trial.create_trial(values=[0.9, 0.5]))
    with console.capture() as out:
        confirm_after_run(study, profile=profile, study_dir=tmp_path, target=target)
    assert "front not confirmed: no baseline file" in out.get()
    assert "confirmed" not in study.user_attrs
    (tmp_path / "artifacts" / "baseline").mkdir(parents=True)
    (tmp_path / "artifacts" / "baseline" / "model.onnx").write_bytes(b"")
    with console.capture() as out:
        confirm_after_run(study, profile=profile, study_dir=tmp_path, target=target)
    assert "none of the 1 Pareto trials' files" in out.get()
