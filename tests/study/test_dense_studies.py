"""Whole studies of models that are not classifiers returning one tensor (tiny models of our
own, tests/dense_tasks.py): a segmenter returning a dict, a detector with two raw outputs decoded
outside the graph, a transformer on int64 token ids. Each trial prunes and quantizes, and the
task's metric is reported by its name."""

from __future__ import annotations

import math

import pytest

from tests.conftest import DATA
from tests.test_cases import _cli, _records, _study


@pytest.mark.slow
@pytest.mark.parametrize(
    ("factory", "metric", "outputs"),
    [
        ("make_seg_task", "pixel_accuracy", ["out"]),
        ("make_det_task", "mAP", ["heatmap", "boxes"]),
        ("make_ids_task", "token_accuracy", ["output"]),
    ],
)
def test_a_dense_or_sequence_model_compresses_and_reports_its_metric(
    factory, metric, outputs, tmp_path
):
    space = str(DATA / "dense_space.yaml")
    proc = _cli("--task", f"tests.dense_tasks:{factory}", "--space", space, "--trials", "2",
                "--study", "dense", "--no-progress", results=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    study = _study(tmp_path, "dense")
    assert study.user_attrs["metric"] == metric
    read = study.user_attrs["model"]["export"]["outputs"]
    assert list(read["outputs"]) == outputs
    assert math.isfinite(study.user_attrs["baseline"]["accuracy"])
    for rec in _records(study):
        assert rec["sizes"]["prune"]["params"] < rec["sizes"]["base"]["params"]
        assert rec["quantize"]["quantized"] and rec["kernels"]["integer_layers"] >= 1
        assert math.isfinite(rec["accuracy"])
    page = (tmp_path / "dense" / "report.html").read_text()
    assert f'"text":"{metric} (ONNX Runtime, validation split)"' in page
    assert "Exported and measured: " in page and "The metric reads " in page
