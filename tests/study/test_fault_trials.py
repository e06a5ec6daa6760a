"""One whole trial per kind of architecture that broke a study (issue 19): the model checks run,
the trial prunes, factorizes, distills, exports, quantizes and is measured, and its record says
what was left alone and why."""

from __future__ import annotations

import optuna
import pytest

from search.config import load_profile, load_space
from search.study.model_checks import check_model
from search.trial.context import Context
from search.trial.pipeline import run_trial
from tests.conftest import DATA, local_measure
from tests.fault_models import random_task

# Every step on every trial: prune 0.3, channel SVD at half rank, one epoch, int8 everywhere.
FAULT_SPACE = {
    "prune": {"ratio": {"low": 0.3, "high": 0.3}},
    "distill": {"epochs": {"low": 1, "high": 1}, "batch_size": 16},
    "lowrank": {"apply": [True], "kind": ["channel"], "rank_ratio": {"low": 0.5, "high": 0.5}},
    "quantize": {"precisions": ["int8"], "calibration": ["entropy"], "sensitivity": False},
}


def _space():
    base = load_space("default")  # its groups fit none of these models: they are derived
    data = base.model_dump()
    for section, values in FAULT_SPACE.items():
        data[section] = {**data[section], **values}
    return type(base).model_validate(data)


def _trial(name: str, tmp_path):
    task = random_task(name)
    checks = check_model(task, _space())
    profile = load_profile(str(DATA / "tiny_cpu.yaml"))
    ctx = Context.build(
        task=task,
        space=checks.space,
        profile=profile,
        seed=0,
        measure=print,  # replaced below, once the context's inputs are known
        prune_plan=checks.prune_plan,
    )
    ctx.measure = local_measure(profile, ctx.eval_inputs)  # validation, then test inputs
    cfg = checks.space.sample(optuna.create_study().ask(), profile)
    return checks, run_trial(cfg, ctx=ctx, out_dir=tmp_path / name).to_json()


def _lstm(checks, rec) -> None:
    """The recurrent model keeps a dynamic batch (traced at 2) and its LSTM is pruned."""
    assert checks.export["trace_batch"] == 2 and set(checks.export["verified"]) == {"1", "3"}


def _upsample(checks, rec) -> None:
    """The Resize fails symbolic shape inference: pre-processing fell back, and says so."""
    assert any("without symbolic shape inference" in n for n in rec["quantize"]["notes"])


def _conv1d(checks, rec) -> None:
    """Conv1d layers are factorized; the default space's groups gave way to derived ones."""
    factorized = [r for r in rec["steps"]["lowrank"]["layers"] if not r["skipped"]]
    assert any(r["layer"] == "Conv1d" for r in factorized)
    assert checks.groups_source == "derived"
    assert set(rec["ran"]) == set(checks.space.quantize.groups)


def _nothing(checks, rec) -> None:
    pass


# Fault kind -> (tiny model, {layer left alone: a word of its reason}, further checks).
KINDS = {
    "splitting or halving op (nn.GLU)": ("glu", {}, _nothing),
    "split with sizes written in the code": ("fixed_split", {"conv1": "split_with"}, _nothing),
    "channel shuffle": ("shuffle", {"stem.0": "shuffle", "branch.5": "shuffle"}, _nothing),
    "one-channel broadcast gate": ("gate_conv", {}, _nothing),
    "hand-written conv parameter": ("hand_param", {"conv1": "written by hand"}, _nothing),
    "recurrent layer": ("lstm", {}, _lstm),
    "upsampling layer": ("upsample", {}, _upsample),
    "Conv1d, no names in common with the default space": ("conv1d", {}, _conv1d),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_the_trial_completes_and_records_what_was_left_alone(kind, tmp_path):
    name, expected, more = KINDS[kind]
    checks, rec = _trial(name, tmp_path)
    alone = rec["steps"]["prune"]["left_alone"]
    head = [k for k, why in alone.items() if why.startswith("output layer")]
    assert head == ["classifier" if name == "conv1d" else "head"]
    others = {k: why for k, why in alone.items() if k not in head}
    assert set(others) == set(expected), others
    for layer, word in expected.items():
        assert word in others[layer]
    assert rec["sizes"]["prune"]["params"] < rec["sizes"]["base"]["params"]
    assert rec["quantize"]["quantized"] and rec["kernels"]["integer_layers"] >= 1
    assert set(rec["ran"]) <= set(checks.space.quantize.groups) | {"(outside groups)"}
    assert "int8" in rec["ran"].values()
    assert 0.0 <= rec["accuracy"] <= 1.0
    more(checks, rec)
