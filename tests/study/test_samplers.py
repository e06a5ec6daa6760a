"""The study's samplers: each name builds its sampler; GP runs a small study in the space."""

from __future__ import annotations

import math

import optuna
import pytest

from search.config import SearchSettings, load_profile
from search.study.samplers import SAMPLERS, build_sampler
from tests.conftest import digits_default_space


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("tpe", optuna.samplers.TPESampler),
        ("gp", optuna.samplers.GPSampler),
        ("nsga2", optuna.samplers.NSGAIISampler),
        ("random", optuna.samplers.RandomSampler),
    ],
)
def test_each_sampler_name_builds_its_sampler(name, cls):
    assert name in SAMPLERS
    assert type(build_sampler(SearchSettings(sampler=name), seed=1, n_existing=2)) is cls


def test_the_space_rejects_an_unknown_sampler_with_one_line(tmp_path):
    from search.config import load_space as load
    from search.errors import ConfigError

    path = tmp_path / "s.yaml"
    path.write_text("search: {sampler: auto}\n")
    with pytest.raises(ConfigError, match="sampler"):
        load(str(path))


def _objectives(cfg) -> tuple[float, float]:
    """A cheap stand-in for a trial's (accuracy, latency): pruning and int8 groups make the
    model faster and less accurate. No training: the test is about the sampler in the space."""
    int8 = sum(p == "int8" for p in cfg.quantize.precision.values())
    accuracy = 0.95 - 0.2 * cfg.prune.ratio**2 - 0.004 * int8 - 0.01 * cfg.distill.alpha
    latency = 1.0 * (1 - cfg.prune.ratio) * (1 - 0.1 * int8) + 0.01 * cfg.distill.epochs
    return accuracy, latency


@pytest.mark.parametrize("encoding", ["categorical", "ordinal"])
def test_a_tiny_gp_study_completes_and_stays_in_the_space(encoding):
    space = digits_default_space()
    profile = load_profile("cpu")
    space = space.model_copy(
        update={
            "search": SearchSettings(sampler="gp", startup_trials=3),
            "quantize": space.quantize.model_copy(update={"encoding": encoding}),
        }
    )
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.sampler = build_sampler(space.search, seed=0, n_existing=0)
    study.set_user_attr("sensitivity", {"order": ["stem", "fc", "stage1", "stage2", "stage3"]})
    for _ in range(5):
        trial = study.ask()
        cfg = space.sample(trial, profile)
        p, d = space.prune.ratio, space.distill.epochs
        assert p.low <= cfg.prune.ratio <= p.high and d.low <= cfg.distill.epochs <= d.high
        assert set(cfg.quantize.precision) == set(space.quantize.groups)
        assert set(cfg.quantize.precision.values()) <= set(profile.precisions.layer)
        trial.set_constraint("latency_budget_ms", 0.0)
        study.tell(trial, list(_objectives(cfg)))
    done = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(done) == 5 and all(math.isfinite(t.values[1]) for t in done)
    # After the random start the GP proposed the trials' shared parameters itself.
    gp_made = [t for t in done[3:] if any(k.startswith("gp:") for k in t.system_attrs)]
    assert gp_made, [t.system_attrs for t in done]
    names = set().union(*(t.params for t in done))
    if encoding == "ordinal":
        assert "quantized_groups" in names and not any(n.startswith("precision_") for n in names)
    else:
        assert "quantized_groups" not in names and "precision_stem" in names
