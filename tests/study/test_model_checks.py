"""The checks of a user's model before a study exists: one-line errors for what cannot work,
groups that fit the model, and the pruning dry run printed once."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from search.config import Space, load_space
from search.errors import ConfigError
from search.study import model_checks
from search.study.model_checks import ModelError, check_model
from search.trial.context import MetricError
from tests.fault_models import random_task


def _space(**sections) -> Space:
    base = load_space("default")
    update = {}
    for name, values in sections.items():
        update[name] = getattr(base, name).model_copy(update=values)
    return base.model_copy(update=update)


def test_a_model_sharing_no_names_with_the_default_space_gets_derived_groups(capsys):
    task = random_task("conv1d")  # features.0..6, classifier: nothing like stem/layers.N/fc
    checks = check_model(task, load_space("default"))
    assert checks.groups_source == "derived"
    groups = checks.space.quantize.groups
    assert 2 <= len(groups) <= 5 and list(groups)[-1] == "classifier"
    assert checks.record()["groups"] == groups
    err = capsys.readouterr().err
    assert "stem, stage1, stage2, stage3, fc match no layer" in err
    # Sampling now searches a precision per derived group.
    import optuna

    trial = optuna.create_study().ask()
    cfg = checks.space.sample(trial)
    assert set(cfg.quantize.precision) == set(groups)


def test_the_default_space_keeps_its_own_groups_on_the_digits_resnet():
    from search.tasks.models import ResNet

    task = random_task("conv1d")
    task.model = ResNet(num_classes=10, widths=(8, 8, 8), blocks_per_stage=2).eval()
    task.example_input = torch.randn(1, 1, 16, 16)
    task.val = torch.utils.data.TensorDataset(torch.randn(8, 1, 16, 16), torch.zeros(8).long())
    task.train = task.val
    checks = check_model(task, load_space("default"))
    assert checks.groups_source == "space"
    assert checks.space.quantize.groups == load_space("default").quantize.groups


def test_a_group_that_matches_no_layer_is_one_line_with_the_models_modules():
    task = random_task("conv1d")
    groups = {"front": ["features"], "ghost": ["no_such_layer.*"]}
    space = _space(quantize={"groups": groups, "unmatched_groups": "error"})
    with pytest.raises(ConfigError) as err:
        check_model(task, space)
    message = str(err.value)
    assert "'ghost'" in message and "no_such_layer.*" in message
    assert "top-level modules are: features, classifier" in message and "\n" not in message


def test_a_low_rank_pattern_that_matches_no_layer_is_one_line():
    task = random_task("conv1d")
    space = _space(lowrank={"apply": [True], "layers": ["no_such_layer.*"]})
    with pytest.raises(ConfigError, match=r"lowrank.layers: pattern 'no_such_layer\.\*'"):
        check_model(task, space)


def test_a_metric_that_is_not_a_number_stops_before_the_study():
    task = random_task("conv1d")
    task.metric, task.metric_name = (lambda outputs, labels: math.nan), "mean_recall"
    with pytest.raises(MetricError, match="'mean_recall' returned nan on the validation split"):
        check_model(task, load_space("default"))


class BatchAsConstant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(40, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)) * torch.ones(int(x.shape[0]), 1)


def test_a_model_that_cannot_be_exported_with_a_dynamic_batch_stops_before_the_study():
    task = random_task("conv1d")
    task.model = BatchAsConstant().eval()
    with pytest.raises(ModelError, match="cannot be exported to ONNX with a dynamic batch"):
        check_model(task, load_space("default"))


def test_layers_left_alone_are_printed_once_and_recorded(capsys):
    checks = check_model(random_task("fixed_split"), load_space("default"))
    assert "split_with_sizes" in checks.prune_plan.left_alone["conv1"]
    assert checks.record()["pruning"]["left_alone"]["conv1"].startswith("dry run:")
    err = capsys.readouterr().err
    assert err.count("pruning leaves 1 layer(s) alone") == 1 and "conv1:" in err


def test_when_nothing_can_be_pruned_the_ratio_is_fixed_at_zero(monkeypatch, capsys):
    monkeypatch.setattr(model_checks, "DRY_RUN_TIMEOUT_S", 0.001)
    checks = check_model(random_task("glu"), load_space("default"))
    assert checks.prune_plan.error.startswith("pruning dry run: timeout")
    assert checks.space.prune.ratio.low == checks.space.prune.ratio.high == 0.0
    assert "nothing of this model can be pruned" in capsys.readouterr().err
