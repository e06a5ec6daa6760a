"""Once-per-study references: measured once, kept with the study, shared with the benchmark."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from search.config import Space
from search.study.references import (
    ensure_baseline,
    ensure_quantization,
    export_float,
    measure_baseline,
    quantization_references,
    store,
)
from search.trial.context import Context
from tests.conftest import local_measure, quick_profile
from tests.tiny_task import make_random_task

SPACE = Space.model_validate(
    {"quantize": {"groups": {"stem": ["stem"], "rest": ["*"]}, "calibration_samples": 16}}
)


@pytest.fixture(scope="module")
def ctx(tmp_path_factory) -> Context:
    task = make_random_task(seed=0, cache_dir=tmp_path_factory.mktemp("cache"))
    profile = quick_profile("cpu")
    ctx = Context.build(task=task, space=SPACE, profile=profile, seed=0, measure=print)
    # Validation then test inputs, as a study measures them (the context splits the outputs).
    ctx.measure = local_measure(profile, ctx.eval_inputs)
    return ctx


def test_quantization_references_are_plain_data_a_study_keeps(ctx, tmp_path: Path):
    path = export_float(ctx, tmp_path)
    assert export_float(ctx, tmp_path) == path  # exported once
    refs = quantization_references(ctx, path, tmp_path)
    sens = refs.sensitivity
    assert set(sens) == {
        "precision",
        "calibration",
        "activations",
        "weights",
        "float_accuracy",
        "groups",
        "order",
    }
    assert sens["precision"] == "int8" and sorted(sens["order"]) == ["rest", "stem"]
    assert set(sens["groups"]["stem"]) == {"accuracy", "drop", "layers", "layer_types"}
    assert set(refs.seed) <= {"precision_stem", "precision_rest"}
    int8 = refs.int8
    assert Path(int8.measured_onnx).is_file() and int8.latency_paired_ms > 0
    assert int8.kernels["integer_layers"] > 0  # the CPU provider fused the int8 convs
    assert set(int8.quantize["layer_types"].values()) == {"int8"}

    study = optuna.create_study(directions=["maximize", "minimize"])
    baseline = measure_baseline(ctx, path)
    store(study, baseline=baseline, quantization=refs)
    assert study.user_attrs["baseline"]["accuracy"] == baseline.accuracy
    assert study.user_attrs["sensitivity"]["order"] == sens["order"]
    assert study.user_attrs["baseline_int8"]["measured_onnx"] == int8.measured_onnx
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == (1 if refs.seed else 0)
    # A study that has them measures nothing again (no context is even needed).
    assert ensure_baseline(study, None, tmp_path) == baseline
    ensure_quantization(study, None, tmp_path)
    assert len(study.trials) == len(waiting)


def test_a_profile_without_int8_gets_no_int8_reference_unless_asked(ctx, tmp_path: Path):
    precisions = ctx.profile.precisions.model_copy(update={"layer": ["float"]})
    profile = ctx.profile.model_copy(update={"precisions": precisions})
    float_only = Context(**{**ctx.__dict__, "profile": profile})
    path = export_float(float_only, tmp_path)
    refs = quantization_references(float_only, path, tmp_path)
    assert refs.int8 is None and refs.sensitivity is None and refs.seed == {}
    # The benchmark compares with uniform int8 on every profile.
    assert quantization_references(float_only, path, tmp_path, int8=True).int8 is not None


def test_each_setup_step_says_what_it_does_in_plain_lines(ctx, tmp_path, capsys, monkeypatch):
    """Issue 28: a log file shows each step as it starts, each group of the sensitivity pass,
    and a heartbeat while a step runs on; no spinner, no escape codes."""
    import re

    from search.core import progress

    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.05)
    study = optuna.create_study(directions=["maximize", "minimize"])
    ensure_baseline(study, ctx, tmp_path)
    ensure_quantization(study, ctx, tmp_path)
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if not line.startswith("  ... ")]
    expected = [
        "measuring the uncompressed baseline (export, validation metric, latency) ...",
        "  scoring model.onnx (validation metric) and timing it",
        "measuring the uncompressed baseline (export, validation metric, latency): done in",
        "quantization references: per-layer sensitivity, uniform int8 ...",
        "  calibrating model.onnx (MinMax, 16 inputs)",
        "  sensitivity pass: the float model on the validation split (its reference)",
        "  sensitivity pass: group stem (1/2) at int8",
        "  sensitivity pass: group rest (2/2) at int8",
        "  uniform int8: quantizing every group, scoring and timing it like a trial",
        "quantization references: per-layer sensitivity, uniform int8: done in",
    ]
    starts = [next(i for i, line in enumerate(said) if line.startswith(e)) for e in expected]
    assert starts == sorted(starts), said
    assert re.search(r"^  \.\.\. \d+\.\d s elapsed: ", err, flags=re.M)  # heartbeats
    assert not re.search(r"\x1b\[|[\u2800-\u28ff]", err)
