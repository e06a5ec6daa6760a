"""One contract for every compression step: its space section and its part of a trial's config.

The steps are the registry's (:data:`search.compress.steps.STEPS`), so a new step is checked
here as soon as it is registered, and the tables below fail until they say how to break it.
"""

from __future__ import annotations

import json
import re

import optuna
import pytest

from search.compress.steps import STEPS as REGISTRY
from search.compress.steps import SampleEnv, step
from search.config import Space, TrialConfig, load_space, plan_of
from search.errors import ConfigError
from tests.conftest import digits_default_space

STEPS = [s.name for s in REGISTRY]
PARTS = {s.name: s.config for s in REGISTRY}

# The Optuna parameters each step's default section searches: today's names, which existing
# studies were recorded with (tests/test_resume.py replays one made by older code).
PARAMS = {
    "prune": {"prune_ratio"},
    "lowrank": {"lowrank", "lowrank_kind", "lowrank_ratio"},
    "distill": {"epochs", "temperature", "alpha", "lr"},
    "quantize": {"precision_all"},
}
# A section value out of its range, as a space file would give it.
BAD_SECTION = {
    "prune": "prune: {ratio: {low: 0.2, high: 1.0}}",
    "lowrank": "lowrank: {rank_ratio: {low: 0.0, high: 0.5}}",
    "distill": "distill: {alpha: {low: 0.5, high: 1.5}}",
    "quantize": "quantize: {tolerance: 2}",
}
# A part value out of its range, as code building a config by hand would give it.
BAD_PART = {
    "prune": {"ratio": 1.0},
    "lowrank": {"rank_ratio": 0.0},
    "distill": {"epochs": 0},
    "quantize": {"precision": {"all": "int3"}},
}


def _section(name: str):
    return Space.model_fields[name].annotation()


def _sampled(name: str):
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    return trial, step(name).sample(_section(name), trial, SampleEnv())


def test_every_step_has_a_section_a_part_and_a_row_in_each_table():
    assert STEPS == ["prune", "lowrank", "distill", "quantize"]  # pipeline order
    for table in (PARAMS, BAD_SECTION, BAD_PART):
        assert set(table) == set(STEPS)
    assert set(STEPS) <= set(Space.model_fields)


@pytest.mark.parametrize("name", STEPS)
def test_the_section_validates_its_defaults(name):
    section = _section(name)
    assert type(section).model_validate(section.model_dump()) == section


@pytest.mark.parametrize("name", STEPS)
def test_the_section_samples_its_part_under_todays_parameter_names(name):
    trial, part = _sampled(name)
    assert isinstance(part, PARTS[name])
    assert set(trial.params) == PARAMS[name]


@pytest.mark.parametrize("name", STEPS)
def test_the_part_round_trips_through_json(name):
    _, part = _sampled(name)
    for p in (part, PARTS[name]()):
        data = json.loads(json.dumps(p.to_dict()))
        assert PARTS[name](**data) == p


@pytest.mark.parametrize("name", STEPS)
def test_a_section_out_of_range_is_one_line(name, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(BAD_SECTION[name] + "\n")
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: {name}[.:]") as err:
        load_space(str(path))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", STEPS)
def test_a_part_out_of_range_is_one_line(name):
    with pytest.raises(ConfigError) as err:
        PARTS[name](**{**PARTS[name]().to_dict(), **BAD_PART[name]})
    assert "\n" not in str(err.value)


def test_a_trial_config_is_its_parts_and_reads_back():
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()
    cfg = digits_default_space().sample(trial)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert list(data) == STEPS
    assert TrialConfig.from_dict(data) == cfg
    assert TrialConfig.from_dict({}) == TrialConfig()


def test_plan_of_reads_records_old_and_new():
    plan = {"stem": "int8", "fc": "float"}
    assert plan_of(TrialConfig.from_dict({"quantize": {"precision": plan}}).to_dict()) == plan
    assert plan_of({"prune_ratio": 0.3, "precision": plan}) == plan  # records before the parts
    assert plan_of(None) == plan_of({}) == plan_of({"quantize": {}}) == {}
