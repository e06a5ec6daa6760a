"""Pruning every kind of architecture torch-pruning gets wrong: nothing crashes, what cannot be
cut is left alone with a reason that names the layer and the op, and what is cut is cut right.

"Cut right" is checked without trusting the library: make some input channels of a consumer
dead (zero their weights), prune exactly those through the repaired group, and compare the
model's output before and after. A correct group removes only channels nobody reads any more,
so the output must not change; a wrong mapping changes it even when the shapes still fit.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch_pruning as tp

from search.compress.prune.modules import LSTMPruner, rewrite_for_pruning
from search.compress.prune.patches import guarded_torch_pruning
from search.compress.prune.plan import PruneError, PrunePlan, plan_pruning, prune_with_plan
from search.compress.prune.step import count_params, prune_with_report
from tests.fault_models import ALL, example

# Model -> {layer: a word its reason must contain}; every other layer besides the head is cut.
LEFT_ALONE = {
    "fixed_split": {"conv1": "split_with_sizes"},
    "shuffle": {"stem.0": "channel shuffle", "branch.5": "channel shuffle"},
    "hand_param": {"conv1": "written by hand"},
}


@pytest.mark.parametrize("name", sorted(ALL))
def test_every_fault_kind_prunes_without_crashing_and_says_what_it_left_alone(name):
    model, x = example(name)
    small, report = prune_with_report(model, ratio=0.3, example_input=x, round_to=None)
    assert count_params(small) < count_params(model)
    batch = torch.randn(3, *x.shape[1:])
    with torch.no_grad():
        assert small(batch).shape == model(batch).shape
    head = [k for k, why in report.left_alone.items() if "output layer" in why]
    assert len(head) == 1
    others = {k: why for k, why in report.left_alone.items() if k not in head}
    expected = LEFT_ALONE.get(name, {})
    assert set(others) == set(expected), others
    for layer, word in expected.items():
        assert word in others[layer]
        # A layer left alone keeps its output channels (its inputs may shrink with a producer).
        kept = small.get_submodule(layer).weight.shape[0]
        assert kept == model.get_submodule(layer).weight.shape[0]


@pytest.mark.parametrize("name", sorted(LEFT_ALONE))
def test_a_dry_run_for_a_deep_search_still_finds_what_shallow_ratios_break(name):
    """A search up to a high ratio (0.9: per-group scales) dry-runs at 0.5 too: at 0.8
    torch-pruning leaves a [8, 16] channel split whole, so the deep run alone found nothing and
    every trial below 0.75 would have crashed at the split."""
    model, x = example(name)
    plan = plan_pruning(model, x, ignored_layers=["head"], ratio=0.9)
    for layer, word in LEFT_ALONE[name].items():
        assert word in plan.left_alone.get(layer, ""), plan.left_alone
    pruned = prune_with_plan(model, x, ratio=0.5, plan=plan)
    with torch.no_grad():
        assert pruned(x).shape == model(x).shape


# Model: (consumer, dead input channels of it). spatial_gate is not lossless by nature (the gate
# averages over channels), so it is not here.
DEAD = {
    "glu": ("conv2", [1, 5, 9]),  # both GLU halves lose matching channels
    "chunk_gate": ("conv2", [0, 7]),
    "gate_conv": ("conv2", [2, 3]),  # the one-channel gate is not coupled to conv1's channels
    "scale": ("conv2", [4]),
    "split": ("right", [3]),  # the second half of the split: conv1's channel 12 + 3
    "pos_bias": ("conv2", [2, 9]),  # a (1, C, T) bias pruned along C, not T
    "spatial_map": ("conv2", [2, 9]),  # a (1, 1, H, W) map is never pruned
}


def _prune_dead(model, x, consumer: str, dead: list[int]):
    with torch.no_grad():
        getattr(model, consumer).weight[:, dead] = 0
        ref = model(x)
    work = copy.deepcopy(model)
    with guarded_torch_pruning():
        rewrite_for_pruning(work)
        graph = tp.DependencyGraph().build_dependency(work, x, verbose=False)
        layer = work.get_submodule(consumer)
        graph.get_pruning_group(layer, tp.prune_conv_in_channels, dead).prune()
    with torch.no_grad():
        return ref, work(x), work


@pytest.mark.parametrize("name", sorted(DEAD))
def test_repaired_groups_remove_exactly_the_dead_channels(name):
    model, x = example(name, batch=2)
    consumer, dead = DEAD[name]
    ref, out, work = _prune_dead(model, x, consumer, dead)
    before = model.get_submodule(consumer).in_channels
    assert work.get_submodule(consumer).in_channels == before - len(dead)
    assert (out - ref).abs().max().item() < 1e-5


def test_without_the_split_repair_the_mapping_is_silently_wrong():
    """The reason the split repair exists: the library pairs parts with consumers in trace
    order, so pruning ``right``'s input 3 removes conv1's channel 3 instead of 15."""
    model, x = example("split", batch=2)
    with torch.no_grad():
        model.right.weight[:, [3]] = 0
        ref = model(x)
    graph = tp.DependencyGraph().build_dependency(model, x, verbose=False)
    graph.get_pruning_group(model.right, tp.prune_conv_in_channels, [3]).prune()
    with torch.no_grad():
        assert (model(x) - ref).abs().max().item() > 1e-4


def test_lstm_hidden_units_are_pruned_losslessly():
    model, x = example("lstm", batch=3)
    dead = [3, 10, 11, 40]
    with torch.no_grad():
        model.head.weight[:, dead] = 0
        model.rnn.weight_hh_l0[:, dead] = 0  # dead units feed neither the head nor the recurrence
        ref = model(x)
    graph = tp.DependencyGraph().build_dependency(
        model, x, customized_pruners={torch.nn.LSTM: LSTMPruner()}, verbose=False
    )
    pruner = graph.get_pruner_of_module(model.rnn)
    graph.get_pruning_group(model.rnn, pruner.prune_out_channels, dead).prune()
    assert model.rnn.hidden_size == 44 and model.head.in_features == 44
    with torch.no_grad():
        assert (model(x) - ref).abs().max().item() < 1e-6


def test_transformer_heads_and_mlp_widths_are_pruned_not_left_alone():
    model, x = example("tiny_vit")  # torchvision's EncoderBlock layout around MultiheadAttention
    small, report = prune_with_report(model, ratio=0.4, example_input=x, round_to=None)
    assert set(report.left_alone) == {"heads"}
    blocks = list(small.encoder.layers)
    assert all(b.self_attention.embed_dim % b.self_attention.num_heads == 0 for b in blocks)
    widths = [b.mlp[0].out_features for b in blocks]
    assert min(widths) < 64 or small.conv_proj.out_channels < 32


def test_a_model_whose_graph_cannot_be_built_is_left_whole_with_the_reason():
    class Weird(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3)
            self.fc = torch.nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(self.conv(x).mean(dim=(2, 3)))

    plan = PrunePlan(left_alone={"fc": "output layer"}, error="pruning dry run: timeout after 1 s")
    model, x = Weird().eval(), torch.randn(1, 3, 8, 8)
    small, report = prune_with_report(model, ratio=0.5, example_input=x, plan=plan)
    assert count_params(small) == count_params(model)
    assert report.left_alone["fc"] == "output layer"


def test_a_cut_that_fails_in_a_trial_names_its_layers():
    model, x = example("fixed_split")
    plan = plan_pruning(model, x, ignored_layers=["head"])
    assert "conv1" in plan.left_alone
    forgetful = PrunePlan(left_alone={"head": "output layer"})  # as if the dry run missed it
    with pytest.raises((PruneError, RuntimeError)) as err:
        small = prune_with_plan(model, x, ratio=0.5, plan=forgetful, round_to=None)
        small(x)
    assert "conv1" in str(err.value) or "split_with_sizes" in str(err.value)
