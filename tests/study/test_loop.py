"""End-to-end studies on the tiny task: results on disk, failures recorded, kills resumed."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from search.config import load_profile, load_space
from search.errors import SearchError
from search.study import StudySpec, run_study
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _spec(results, tiny_space, tiny_profile, task="tests.tiny_task:make_task", name="s"):
    return StudySpec(
        task=task,
        space=load_space(str(tiny_space)),
        profile=load_profile(str(tiny_profile)),
        study_name=name,
        results_dir=results,
    )


def test_study_writes_results_and_a_rerun_adds_no_trials(
    teacher_cache, tiny_space, tiny_profile, capfd
):
    tmp_path = teacher_cache
    spec = _spec(tmp_path, tiny_space, tiny_profile)
    study = run_study(spec, trials=2, progress=False)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    # Without bars (a log file), each trial is said in lines: its start, a line per epoch of
    # distillation with the validation metric, its end; no spinner or escape code.
    err = capfd.readouterr().err
    epochs = study.trials[0].user_attrs["config"]["distill"]["epochs"]
    assert "trial 0 ..." in err and f"epoch {epochs}/{epochs}: validation accuracy" in err
    assert "trial 1: done in" in err and "\x1b" not in err
    base = study.user_attrs["baseline"]
    assert study.user_attrs["metric"] == "accuracy"  # the report labels axes with it
    assert base["accuracy"] > 0.5 and base["latency_paired_ms"] > 0
    for t in study.trials:
        rec = t.user_attrs["record"]
        assert list(rec["config"]) == ["prune", "lowrank", "distill", "quantize"]
        assert rec["config"]["prune"]["ratio"] == t.params["prune_ratio"]
        assert rec["measurement"]["providers"] == ["CPUExecutionProvider"]
        # p90 as measured in the trial's window; the objective p50 is paired with the baseline.
        assert rec["measurement"]["latency"][0]["p90_ms"] >= rec["latency_measured_p50_ms"] > 0
        assert rec["latency_paired_ms"] > 0 and rec["latency_relative"] > 0
        assert rec["size_mb"] > 0 and rec["peak_memory_mb"] >= 0
        assert set(rec["timings_s"]) >= {"prune", "distill", "export", "measure"}
        assert (tmp_path / "s" / "artifacts" / str(t.number) / "model.onnx").is_file()
        # The objective is what ONNX Runtime measured on the exported file.
        assert t.values[0] == pytest.approx(rec["accuracy"])
    for name in ("study.db", "trials.csv", "report.html"):
        assert (tmp_path / "s" / name).is_file()
    csv = pd.read_csv(tmp_path / "s" / "trials.csv")
    assert list(csv.trial) == [0, 1] and "param_prune_ratio" in csv.columns

    again = run_study(spec, trials=2, progress=False)
    assert len(again.trials) == 2

    # The same space name with other content is another study: refused, nothing added.
    quantize = spec.space.quantize.model_copy(update={"tolerance": 0.5})
    edited = dataclasses.replace(spec, space=spec.space.model_copy(update={"quantize": quantize}))
    with pytest.raises(SearchError, match="different space file's content"):
        run_study(edited, trials=3, progress=False)
    assert len(optuna.load_study(study_name="s", storage=spec.storage_url).trials) == 2


def test_a_failing_trial_is_recorded_and_the_study_goes_on(
    teacher_cache, tiny_space, tiny_profile
):
    tmp_path = teacher_cache
    spec = _spec(
        tmp_path, tiny_space, tiny_profile, task="tests.tiny_task:make_failing_task", name="f"
    )
    study = run_study(spec, trials=2, progress=False)
    first, second = study.trials
    assert first.state == TrialState.FAIL
    assert "boom: training data exploded on purpose" in first.user_attrs["fail_reason"]
    assert first.user_attrs["fail_reason"].startswith("distill: RuntimeError: boom")  # the step
    assert "tiny_task.py:" in first.user_attrs["fail_reason"]  # and where it was raised
    assert second.state == TrialState.COMPLETE
    csv = pd.read_csv(tmp_path / "f" / "trials.csv")
    assert "boom" in csv.loc[csv.trial == 0, "fail_reason"].item()


def test_killed_study_keeps_finished_trials_and_resumes(teacher_cache, tiny_space, tiny_profile):
    tmp_path = teacher_cache
    cmd = [
        sys.executable, "-m", "search", "run", "--task", "tests.tiny_task:make_task",
        "--space", str(tiny_space), "--hw", str(tiny_profile), "--study", "k",
        "--results-dir", str(tmp_path), "--no-progress",
    ]  # fmt: skip
    storage = f"sqlite:///{tmp_path / 'k' / 'study.db'}"
    proc = subprocess.Popen(
        [*cmd, "--trials", "4"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 240
    killed_at = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            try:
                trials = optuna.load_study(study_name="k", storage=storage).trials
            except Exception:  # noqa: BLE001 - the study may not exist yet
                continue
            # A trial its worker has made its own (an owner-less one is another test's case).
            owned = [t for t in trials if "pid" in t.user_attrs]
            running = [t for t in owned if t.state == TrialState.RUNNING]
            if running and running[0].number >= 1:
                os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up: like a power cut
                killed_at = running[0].number
                break
    finally:
        proc.wait(timeout=30)
    assert killed_at is not None, "the study finished before it could be killed"

    study = optuna.load_study(study_name="k", storage=storage)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == killed_at  # finished trials survived the kill

    rerun = subprocess.run([*cmd, "--trials", "4"], cwd=REPO, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    study = optuna.load_study(study_name="k", storage=storage)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 4
    interrupted = study.trials[killed_at]
    assert interrupted.state == TrialState.FAIL
    assert "interrupted" in interrupted.user_attrs["fail_reason"]
    # Redone with the same parameters (those it had drawn before the kill).
    (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed_at]
    assert retry.state == TrialState.COMPLETE
    # (a kill mid-sampling leaves some drawn: those are kept, the rest drawn again)
    assert interrupted.params.items() <= retry.params.items()
