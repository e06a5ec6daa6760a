"""The ordinal precision encoding: one count, groups quantized least sensitive first."""

from __future__ import annotations

import optuna
import pytest

from search.compress.quantize.encoding import (
    ORDINAL_PARAM,
    least_sensitive_first,
    ordinal_plan,
    ordinal_seed,
)
from search.compress.quantize.qdq import PrecisionSupport, QuantizeSpace
from search.compress.quantize.sensitivity import seed_params

GROUPS = {"stem": ["stem"], "stage1": ["layers.0"], "stage2": ["layers.1"], "fc": ["fc"]}
ORDER = ["fc", "stem", "stage2", "stage1"]  # most sensitive first, as the pass writes it


def test_the_plan_of_a_count_quantizes_the_least_sensitive_groups_first():
    plans = [ordinal_plan(k, groups=list(GROUPS), order=ORDER, precision="int8") for k in range(5)]
    quantized = [{g for g, p in plan.items() if p == "int8"} for plan in plans]
    assert quantized == [
        set(),
        {"stage1"},
        {"stage1", "stage2"},
        {"stage1", "stage2", "stem"},
        set(GROUPS),
    ]
    assert all(set(plan) == set(GROUPS) for plan in plans)
    with pytest.raises(ValueError, match="count"):
        ordinal_plan(5, groups=list(GROUPS), order=ORDER, precision="int8")


def test_without_a_sensitivity_order_the_space_order_is_used():
    assert least_sensitive_first(list(GROUPS), None) == list(GROUPS)
    # A group the pass did not see (a space edited since) counts as most sensitive.
    assert least_sensitive_first(list(GROUPS), ["fc", "stem"]) == [
        "stem",
        "fc",
        "stage1",
        "stage2",
    ]


def test_ordinal_space_samples_one_integer_and_follows_the_order():
    space = QuantizeSpace(groups=GROUPS, precisions=["float", "int8"], encoding="ordinal")
    trial = optuna.trial.FixedTrial({ORDINAL_PARAM: 2, "calibration": "entropy"})
    cfg = space.sample(trial, PrecisionSupport(), order=ORDER)
    assert cfg.precision == {"stem": "float", "stage1": "int8", "stage2": "int8", "fc": "float"}
    assert cfg.calibration == "minmax"  # the space searches one calibration only

    study = optuna.create_study()
    t = study.ask()
    space.sample(t, PrecisionSupport(), order=ORDER)
    dist = t.distributions[ORDINAL_PARAM]
    assert (dist.low, dist.high) == (0, len(GROUPS)) and len(t.params) == 1


def test_ordinal_uses_the_profiles_lowest_precision_and_nothing_when_only_float():
    space = QuantizeSpace(groups=GROUPS, precisions=["float", "int8", "int16"], encoding="ordinal")
    trial = optuna.trial.FixedTrial({ORDINAL_PARAM: 1})
    support = PrecisionSupport(layer=["float", "int8", "int16"])
    assert set(space.sample(trial, support, order=ORDER).precision.values()) == {"int8", "float"}
    only_float = space.sample(optuna.trial.FixedTrial({}), PrecisionSupport(layer=["float"]))
    assert set(only_float.precision.values()) == {"float"}


def test_space_sample_reads_the_order_from_the_study():
    from search.config import load_profile
    from tests.conftest import digits_default_space

    space = digits_default_space()
    space = space.model_copy(
        update={"quantize": space.quantize.model_copy(update={"encoding": "ordinal"})}
    )
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("sensitivity", {"order": ["stem", "fc", "stage3", "stage2", "stage1"]})
    study.enqueue_trial({ORDINAL_PARAM: 2})
    cfg = space.sample(study.ask(), load_profile("cpu"))
    assert cfg.quantize.precision == {
        "stem": "float",
        "stage1": "int8",
        "stage2": "int8",
        "stage3": "float",
        "fc": "float",
    }


def test_seeded_trial_under_the_ordinal_encoding_counts_the_tolerant_groups():
    sensitivity = {
        "precision": "int8",
        "groups": {g: {"drop": d} for g, d in zip(GROUPS, [0.05, 0.0, 0.005, 0.2], strict=True)},
    }
    assert ordinal_seed(sensitivity, tolerance=0.01) == {ORDINAL_PARAM: 2}
    choices = {f"precision_{g}": ["float", "int8"] for g in GROUPS}
    assert seed_params(sensitivity, choices=choices, tolerance=0.01, encoding="ordinal") == {
        ORDINAL_PARAM: 2
    }
    # The categorical seed quantizes the same two groups.
    categorical = seed_params(sensitivity, choices=choices, tolerance=0.01)
    assert {g for g, p in categorical.items() if p == "int8"} == {
        "precision_stage1",
        "precision_stage2",
    }
