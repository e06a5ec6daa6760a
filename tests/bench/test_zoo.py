"""The model-zoo benchmark: one torchvision model through its short trial, children that run
out of time are recorded, not fatal, and the table says what happened."""

from __future__ import annotations

import pytest

from search.bench.zoo import run_child, table


@pytest.mark.slow
def test_one_model_passes_every_step_and_fills_the_table():
    pytest.importorskip("torchvision")
    from search.bench.zoo_trial import one

    rec = one("squeezenet1_1", max_params=100e6)
    assert rec["verdict"] == "PASS", rec
    assert rec["params_pruned"] < rec["params_before"]
    assert set(rec["seconds"]) >= {"plan", "prune", "lowrank", "distill", "export", "quantize"}
    assert rec["export"]["trace_batch"] == 2 and max(rec["export"]["ort_vs_torch"].values()) < 1e-3
    assert rec["integer_layers"] > 0 and "int8" in rec["ran"].values()
    rec["wall_s"] = 1.0
    page = table([rec], mem_gb=10, max_params=100e6)
    assert "**Totals: PASS 1** (1 models)" in page
    assert "| squeezenet1_1 | 64 |" in page


def test_a_model_over_the_parameter_limit_is_skipped_and_listed():
    pytest.importorskip("torchvision")
    from search.bench.zoo_trial import one

    rec = one("resnet18", max_params=1e6)
    assert rec["verdict"] == "SKIP" and "M parameters > limit" in rec["reason"]
    assert "Skipped (over 1 M parameters): resnet18" in table([rec], mem_gb=10, max_params=1e6)


def test_a_child_past_its_time_is_a_failed_row_and_the_sweep_goes_on():
    rec = run_child("resnet18", max_params=100e6, mem_gb=10, timeout_s=0.5)
    assert rec == {
        "model": "resnet18", "verdict": "FAIL", "failed_step": "child",
        "reason": "timeout after 0.5 s",
    }  # fmt: skip


@pytest.mark.slow
def test_one_segmenter_passes_every_step_and_fills_its_table():
    pytest.importorskip("torchvision")
    from search.bench.zoo_dense import dense_table, one

    rec = one("lraspp_mobilenet_v3_large", kind="segmentation", max_params=60e6)
    assert rec["verdict"] == "PASS", rec
    assert rec["params_pruned"] < rec["params_before"] and not rec["left_alone"]
    assert rec["kept"] == ["classifier.low_classifier", "classifier.high_classifier"]
    assert rec["export"]["outputs"] == 1 and max(rec["export"]["ort_vs_torch"].values()) < 1e-3
    assert rec["integer_layers"] > 0 and "classes in the argmax" in rec["decoded"]
    rec["wall_s"] = 1.0
    page = dense_table([rec], kind="segmentation", mem_gb=10, max_params=60e6)
    assert (
        "**Totals: PASS 1** (1 models)" in page and "| lraspp_mobilenet_v3_large | 128 |" in page
    )
