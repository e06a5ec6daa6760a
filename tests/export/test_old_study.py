"""A study written before the package layout moved (0.1.0: records keyed ``latency_p50_ms``,
``pruning`` and ``lowrank_layers`` at the top, the old module paths) still opens with ``report``
and ``export``: they read it through the typed record (:mod:`search.record`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import optuna
import pandas as pd

from search.cli.main import main
from search.record import TrialRecord, baseline_of
from tests.conftest import DATA

OLD = DATA / "study-v0.1.0"


def _copy(tmp_path: Path) -> Path:
    results = tmp_path / "results"
    shutil.copytree(OLD, results / "old-v010")
    return results


def test_the_old_records_read_as_typed_records(tmp_path):
    results = _copy(tmp_path)
    storage = f"sqlite:///{results / 'old-v010' / 'study.db'}"
    study = optuna.load_study(study_name="old-v010", storage=storage)
    base = baseline_of(study)
    assert base is not None and base.latency_paired_ms > 0 and base.latency_scale_ms
    done = [r for t in study.trials if (r := TrialRecord.of(t)) is not None]
    assert done and all(r.latency_paired_ms > 0 for r in done)
    for t, r in zip(study.trials, done, strict=False):
        assert r.latency_paired_ms == t.user_attrs["record"]["latency_p50_ms"]
        assert "left_alone" in r.steps["prune"]  # from the old top-level "pruning"


def test_report_and_export_open_it(tmp_path, capsys):
    results = _copy(tmp_path)
    where = ["--study", "old-v010", "--results-dir", str(results)]
    assert main(["report", "--no-png", "--pick", "knee", *where]) == 0
    trials = pd.read_csv(results / "old-v010" / "trials.csv")
    assert (trials[trials.state == "COMPLETE"].latency_paired_ms > 0).all()
    out = tmp_path / "export"
    assert main(["export", "--trial", "2", "--out", str(out), *where]) == 0
    info = json.loads((out / "trial.json").read_text())
    assert info["trial"] == 2 and info["measurements"]["latency_paired_ms"] > 0
    measured = results / "old-v010" / "artifacts" / "2" / info["measured_file"]
    assert (out / info["measured_file"]).read_bytes() == measured.read_bytes()
    assert "| latency p50 (paired)" in (out / "README.md").read_text()
