"""Per-group prune ratios (AMC-style): which modules a group owns, cutting one group and not
another, the searched scales, and the sensitivity pass with the scales it seeds."""

from __future__ import annotations

import optuna
import pytest
import torch
from torch import nn

from search.compress.prune.groups import group_modules, group_ratios, prunable_groups
from search.compress.prune.sensitivity import group_cutter, prune_sensitivity_pass, seed_scales
from search.compress.prune.step import PruneConfig, PruneSpace, prune_with_report
from search.errors import ConfigError
from search.tasks.models import ResNet

GROUPS = {"stem": ["stem"], "early": ["layers.0"], "late": ["layers.1"], "fc": ["fc"]}


def _model() -> nn.Module:
    torch.manual_seed(0)
    return ResNet(num_classes=10, widths=(16, 32), blocks_per_stage=1).eval()


def _widths(model: nn.Module) -> dict[str, int]:
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def test_group_modules_takes_the_first_matching_group_in_order():
    model = _model()
    owned = group_modules(model, {"a": ["layers.0.conv1"], "b": ["layers*"], "c": ["*"]})
    assert owned["a"] == ["layers.0.conv1"]  # named first, so a owns it, not b
    assert "layers.0.conv2" in owned["b"] and "layers.1.bn1" in owned["b"]
    assert "layers.0.conv1" not in owned["b"]
    assert owned["c"] == ["stem.0", "stem.1", "fc"]  # layers with parameters of their own
    # The output layer is left alone: a group of it alone has nothing to prune.
    assert list(prunable_groups(model, GROUPS, {"fc": "output layer"})) == [
        "stem",
        "early",
        "late",
    ]
    assert group_ratios(0.5, {"a": 0.5, "b": 3.0}, max_layer_ratio=0.9) == {"a": 0.25, "b": 0.9}


def test_a_group_ratio_cuts_that_group_only():
    model, x = _model(), torch.randn(1, 1, 16, 16)
    before = _widths(model)
    late, _ = prune_with_report(
        model,
        ratio=0.0,
        example_input=x,
        ignored_layers=["fc"],
        round_to=None,
        groups={"late": ["layers.1"]},
        group_ratios={"late": 0.5},
    )
    after = _widths(late)
    # The group's channels (layers.1.conv1's, and its output stream's) are ranked among
    # themselves: half of them go, split by magnitude.
    cut = before["layers.1.conv1"] + before["layers.1.conv2"]
    assert after["layers.1.conv1"] + after["layers.1.conv2"] == cut // 2
    assert (
        after["stem.0"] == before["stem.0"] and after["layers.0.conv1"] == before["layers.0.conv1"]
    )
    assert late(x).shape == (1, 10)
    # Every group at the same ratio, each ranked within itself.
    even, _ = prune_with_report(
        model,
        ratio=0.0,
        example_input=x,
        ignored_layers=["fc"],
        round_to=None,
        groups=GROUPS,
        group_ratios={"stem": 0.5, "early": 0.5, "late": 0.5},
    )
    assert all(v < before[k] for k, v in _widths(even).items() if k != "layers.1.conv2")


def test_prune_space_searches_a_scale_per_group_and_keeps_the_global_ratio():
    space = PruneSpace(ratio={"low": 0.1, "high": 0.6}, groups={"a": ["x"], "b": ["y"]})
    trial = optuna.create_study().ask()
    cfg = space.sample(trial)
    assert set(trial.params) == {"prune_ratio", "prune_scale_a", "prune_scale_b"}
    assert set(cfg.group_ratios) == {"a", "b"}
    # Every parameter acted; the importance is named too (a filter over the trial's params).
    assert cfg.active().keys() == trial.params.keys() | {"prune_importance"}
    assert space.hand_pipeline() == {"prune_scale_a": 1.0, "prune_scale_b": 1.0}
    assert space.max_ratio == pytest.approx(min(0.6 * 1.75, 0.9))
    # Nothing pruned: the scales changed nothing, so they are not among the active parameters.
    assert PruneConfig(ratio=0.0, scales={"a": 2.0}).active() == {"prune_ratio": 0.0}
    unresolved = PruneSpace(groups="quantize")
    assert unresolved.group_names == [] and unresolved.hand_pipeline() == {}
    with pytest.raises(ConfigError, match="resolved"):
        unresolved.sample(optuna.create_study().ask())
    assert unresolved.resolved({"g": ["z"]}).group_names == ["g"]
    assert PruneSpace().sample(optuna.create_study().ask()).scales == {}  # global as before
    with pytest.raises(ValueError, match="lists no module pattern"):
        PruneSpace(groups={"a": []})
    with pytest.raises(ConfigError):
        PruneConfig(ratio=0.3, scales={"a": 0.0})


def test_seeded_scales_follow_latency_saved_per_accuracy_lost():
    sens = {
        "groups": {
            "cheap": {"saved": 0.3, "drop": 0.005},  # below the floor: counts as 0.01
            "costly": {"saved": 0.3, "drop": 0.06},
            "useless": {"saved": -0.02, "drop": 0.0},  # cutting it saved nothing on this target
        }
    }
    seed = seed_scales(sens, low=0.25, high=1.75)
    # Efficiencies 30 and 5 per point; saved-weighted mean 1: 30 * 0.6 / 10.5, 5 * 0.6 / 10.5.
    assert seed["prune_scale_cheap"] == pytest.approx(1.7143, abs=1e-4)
    assert seed["prune_scale_costly"] == pytest.approx(0.2857, abs=1e-4)
    assert seed["prune_scale_useless"] == 0.25  # the lowest scale
    assert seed_scales(sens, low=0.5, high=1.5)["prune_scale_costly"] == 0.5  # clipped
    # No cut saved anything measurable: nothing to allocate by, every group at the global ratio.
    flat = {"groups": {"a": {"saved": 0.004, "drop": 0.0}, "b": {"saved": -0.01, "drop": 0.1}}}
    assert seed_scales(flat, low=0.25, high=1.75) == {"prune_scale_a": 1.0, "prune_scale_b": 1.0}
    # Equal efficiency: every group at the global ratio.
    even = {"groups": {"a": {"saved": 0.2, "drop": 0.02}, "b": {"saved": 0.1, "drop": 0.01}}}
    assert seed_scales(even, low=0.1, high=10) == {"prune_scale_a": 1.0, "prune_scale_b": 1.0}


def test_sensitivity_pass_cuts_each_group_alone_and_records_what_it_cost():
    model, x = _model(), torch.randn(1, 1, 16, 16)
    seen: list[tuple[str, dict[str, int]]] = []

    def latency(cut: nn.Module, group: str) -> float:
        seen.append((group, _widths(cut)))
        return {"stem": 0.95, "early": 0.8, "late": 0.7}[group]

    groups = {g: GROUPS[g] for g in ("stem", "early", "late")}
    cut = group_cutter(
        model, groups, example_input=x, ignored_layers=["fc"], round_to=None, plan=None
    )
    sens = prune_sensitivity_pass(
        model,
        groups=groups,
        probe_ratio=0.5,
        cut=cut,
        recover=lambda m: m,
        evaluate=lambda m: 0.9 - 0.01 * sum(1 for _ in m.parameters()) / 100,
        latency=latency,
        base_metric=0.9,
    )
    assert [g for g, _ in seen] == ["stem", "early", "late"]
    before = _widths(model)
    late_cut = dict(seen)["late"]
    assert late_cut["layers.1.conv1"] < before["layers.1.conv1"]
    assert late_cut["layers.0.conv1"] == before["layers.0.conv1"]  # the other groups stay whole
    assert sens["groups"]["late"]["saved"] == pytest.approx(0.3)
    assert sens["groups"]["late"]["params_removed"] > 0
    assert sens["patterns"]["late"] == ["layers.1"] and sens["probe_ratio"] == 0.5
    assert _widths(model) == before  # the model itself is untouched
