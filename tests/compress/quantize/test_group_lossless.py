"""Every group torch-pruning builds (under our guards and repairs) removes exactly the channels
it should, on whole models: a generic, function-preserving check.

For a sample of groups: make two of the root's channels dead (zero every conv/linear weight that
reads them, the right filters of a grouped conv), prune exactly those channels through the
group, and compare the model's output before and after. A correct group removes only channels
nobody reads any more, so the output must not change. Groups through LayerNorm/GroupNorm,
attention or an LSTM are skipped: normalising over channels makes any cut an approximation.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch_pruning as tp
from torch import nn

from search.compress.prune.graph import ROOTS
from search.compress.prune.modules import rewrite_for_pruning
from search.compress.prune.patches import guarded_torch_pruning
from search.compress.prune.plan import build_pruner, plan_pruning
from search.compress.prune.step import default_ignored
from tests.fault_models import example

IN_FNS = (tp.prune_conv_in_channels, tp.prune_linear_in_channels)
SKIP = (nn.LayerNorm, nn.GroupNorm, nn.MultiheadAttention, nn.LSTM)


def _kill_inputs(group) -> None:
    """Zero every weight that reads the group's channels."""
    with torch.no_grad():
        for item in group:
            layer = item.dep.target.module
            if item.dep.handler not in IN_FNS:
                continue
            g = getattr(layer, "groups", 1)
            if g == 1:
                layer.weight[:, item.idxs] = 0
                continue
            per_in, per_out = layer.in_channels // g, layer.out_channels // g
            for c in item.idxs:  # a grouped conv reads channel c in group c // per_in
                gi = c // per_in
                layer.weight[gi * per_out : (gi + 1) * per_out, c % per_in] = 0


def _check_root(model, x, name: str, ignored: list[str]) -> float | None:
    """Relative max |output change| after pruning two dead channels of ``name``'s group."""
    work = copy.deepcopy(model)
    rewrite_for_pruning(work)
    pruner = build_pruner(work, x, ratio=0.5, ignored=ignored)
    layer = work.get_submodule(name)
    fn = pruner.DG.get_pruner_of_module(layer).prune_out_channels
    n = pruner.DG.get_out_channels(layer)
    full = pruner.DG.get_pruning_group(layer, fn, list(range(n)))
    k = pruner._get_channel_groups(full)  # chunks, grouped convs, heads: every part alike
    if n // k < 4:  # a gate's one channel: nothing to cut
        return None
    pick = sorted({i + part * (n // k) for i in (0, n // (2 * k)) for part in range(k)})
    group = pruner.DG.get_pruning_group(layer, fn, pick)
    if any(isinstance(item.dep.target.module, SKIP) for item in group):
        return None
    _kill_inputs(group)
    with torch.no_grad():
        ref = work.eval()(x)
    group.prune()
    with torch.no_grad():
        out = work(x)
    return (out - ref).abs().max().item() / max(1.0, ref.abs().max().item())


def check_model(model, x, *, max_groups: int = 8) -> dict[str, float | None]:
    """Root layer -> relative error (None: skipped) for a sample of ``max_groups`` groups."""
    head = default_ignored(model, x)
    plan = plan_pruning(model, x, ignored_layers=head)
    ignored = list(plan.left_alone)
    with guarded_torch_pruning():
        probe = copy.deepcopy(model)
        rewrite_for_pruning(probe)
        pruner = build_pruner(probe, x, ratio=0.5, ignored=ignored)
        names = {m: n for n, m in probe.named_modules()}
        roots = [
            names[g[0].dep.target.module]
            for g in pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                              root_module_types=ROOTS)
        ]  # fmt: skip
        step = max(1, len(roots) // max_groups)
        return {r: _check_root(model, x, r, ignored) for r in roots[::step][:max_groups]}


def _assert_lossless(results: dict[str, float | None]) -> None:
    checked = {r: e for r, e in results.items() if e is not None}
    assert len(checked) >= 2, results
    assert max(checked.values()) < 1e-5, checked


@pytest.mark.parametrize("name", ["glu", "split", "shuffle", "gate_conv", "pos_bias", "conv1d"])
def test_tiny_fault_models_are_pruned_losslessly(name):
    model, x = example(name, batch=2)
    _assert_lossless(check_model(model, x))


TORCHVISION = {"resnet18": 32, "mobilenet_v2": 32, "shufflenet_v2_x0_5": 64}
SLOW = pytest.mark.slow  # 10-25 s each on 2 cores


@pytest.mark.parametrize(
    "name", [n if n == "resnet18" else pytest.param(n, marks=SLOW) for n in sorted(TORCHVISION)]
)
def test_torchvision_models_are_pruned_losslessly(name):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10).eval()
    size = TORCHVISION[name]
    _assert_lossless(check_model(model, torch.randn(2, 3, size, size), max_groups=6))
