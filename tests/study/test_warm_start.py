"""The warm start: the hand-built recipes are the study's first trials, with what they fix."""

from __future__ import annotations

import pytest
import yaml
from optuna.trial import TrialState

from search.config import load_profile, load_space
from search.errors import ConfigError
from search.study.warm_start import warm_start_params

SEED = {"precision_stem": "int8", "precision_fc": "float"}


def _space(tmp_path, text: str, name: str = "space.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return load_space(str(path))


def test_the_default_space_starts_with_the_sequential_recipes():
    space, profile = load_space("default"), load_profile("cpu")
    params = warm_start_params(space, SEED, space.quantize.choices(profile.precisions))
    ranked = [(p["prune_ratio"], p["prune_importance"]) for p in params]
    # The hand pipeline ranks by L2; the other searched ranking follows at the smallest ratio.
    assert ranked == [(0.3, "l2"), (0.5, "l2"), (0.7, "l2"), (0.3, "lamp")]
    for p in params:
        # The bench's `sequential` recipe: largest epoch budget, KD defaults, no low-rank,
        # the sensitivity plan, MinMax calibration.
        assert "epochs" not in p  # fixed at 5 in the default space: no parameter to set
        assert p["lr"] == pytest.approx((space.distill.lr.low * space.distill.lr.high) ** 0.5)
        assert p["temperature"] == 4.0 and p["alpha"] == 0.5 and p["lowrank"] is False
        assert p["calibration"] == "minmax" and p["precision_stem"] == "int8"


def test_only_searched_parameters_are_fixed_and_ratios_outside_the_range_are_left_out(tmp_path):
    space = _space(
        tmp_path,
        "search: {warm_start: [0.2, 0.6]}\nprune: {ratio: {low: 0.0, high: 0.5}}\n"
        "distill: {epochs: 2, temperature: {low: 6.0, high: 8.0}, alpha: 0.5}\n"
        "lowrank: {apply: false}\n",
    )
    (only,) = warm_start_params(space, SEED)
    assert only == {
        "prune_ratio": 0.2,
        "lr": pytest.approx(only["lr"]),
        "temperature": 6.0,
        **SEED,
    }
    assert "epochs" not in only and "alpha" not in only and "lowrank" not in only


def test_without_ratios_or_a_searched_prune_ratio_the_seed_alone_starts(tmp_path):
    assert warm_start_params(_space(tmp_path, "search: {warm_start: []}\n"), SEED) == [SEED]
    fixed = _space(tmp_path, "search: {warm_start: [0.3]}\nprune: {ratio: 0.4}\n", "f.yaml")
    assert warm_start_params(fixed, SEED) == [SEED]
    assert warm_start_params(fixed, {}) == []


@pytest.mark.parametrize("ratios", ["[1.0]", "[0.3, 0.3]", "[-0.1]"])
def test_a_bad_warm_start_is_one_line_naming_the_key(tmp_path, ratios):
    with pytest.raises(ConfigError, match="warm_start") as e:
        _space(tmp_path, f"search: {{warm_start: {ratios}}}\n")
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_a_study_runs_its_warm_start_first(teacher_cache, tiny_space, tiny_profile, tmp_path):
    from search.study import StudySpec, run_study

    data = yaml.safe_load(tiny_space.read_text())
    data["search"]["warm_start"] = [0.1, 0.4]
    data["distill"]["epochs"] = {"low": 1, "high": 2}
    path = tmp_path / "warm.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = StudySpec(
        task="tests.tiny_task:make_task",
        space=load_space(str(path)),
        profile=load_profile(str(tiny_profile)),
        study_name="warm",
        results_dir=teacher_cache,
    )
    study = run_study(spec, trials=3, progress=False)
    warm = study.user_attrs["warm_start"]
    assert [p["prune_ratio"] for p in warm] == [0.1, 0.4]
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for t, p in zip(trials[:2], warm, strict=True):
        assert t.system_attrs["fixed_params"] == p
        assert t.params["prune_ratio"] == p["prune_ratio"] and t.params["epochs"] == 2
        assert t.user_attrs["record"]["config"]["distill"]["epochs"] == 2
    assert "fixed_params" not in trials[2].system_attrs  # then the sampler's own


def test_a_space_with_one_ranking_gets_no_extra_trial(tmp_path):
    space = _space(tmp_path, "search: {warm_start: [0.3, 0.5, 0.7]}\nprune: {importance: lamp}\n")
    params = warm_start_params(space, SEED)
    assert [p["prune_ratio"] for p in params] == [0.3, 0.5, 0.7]
    assert all("prune_importance" not in p for p in params)
