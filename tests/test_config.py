from __future__ import annotations

import pytest
from pydantic import ValidationError

from search.config import load_profile, load_space
from search.errors import ConfigError


def _write(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


def test_default_space_and_cpu_profile_load():
    space, profile = load_space("default"), load_profile("cpu")
    assert 0.0 <= space.prune.ratio.low < space.prune.ratio.high < 1.0
    assert profile.provider_names == ["CPUExecutionProvider"]
    with pytest.raises(ValidationError):  # frozen: a loaded config cannot be changed by accident
        space.prune = None  # type: ignore[misc]


def test_plain_number_fixes_a_value(tmp_path):
    space = load_space(str(_write(tmp_path, "distill: {epochs: 2}\n")))
    assert space.distill.epochs.low == space.distill.epochs.high == 2


def test_unknown_key_names_file_key_and_allowed_keys(tmp_path):
    path = _write(tmp_path, "prune:\n  ratoi: {low: 0.1, high: 0.5}\n")
    with pytest.raises(ConfigError) as err:
        load_space(str(path))
    msg = str(err.value)
    assert str(path) in msg and "prune.ratoi" in msg and "ratio" in msg
    assert "\n" not in msg


def test_wrong_type_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"distill\.epochs\.low"):
        load_space(str(_write(tmp_path, "distill: {epochs: {low: many, high: 3}}\n")))


@pytest.mark.parametrize("high", [1.0, 1.5])
def test_prune_ratio_must_lie_below_one(tmp_path, high):
    with pytest.raises(ConfigError, match=r"ratio must lie in \[0.0, 1.0\)"):
        load_space(str(_write(tmp_path, f"prune: {{ratio: {{low: 0.1, high: {high}}}}}\n")))


def test_unknown_literal_lists_allowed_values(tmp_path):
    with pytest.raises(ConfigError, match="'tpe', 'gp', 'nsga2' or 'random'"):
        load_space(str(_write(tmp_path, "search: {sampler: grid}\n")))


def test_unknown_profile_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown hardware profile 'nope'.*cpu"):
        load_profile("nope")


def test_invalid_yaml_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_space(str(_write(tmp_path, "prune: {ratio: [0.1,\n")))
