"""Per-group prune ratios (AMC-style): a share of channels for each group of layers.

A single global ratio ranks every channel of the model against every other, so where the cuts
land follows weight magnitudes, not what a layer costs on the target or what losing it costs in
accuracy. AMC (He et al., "AMC: AutoML for Model Compression and Acceleration on Mobile
Devices", ECCV 2018) searches one sparsity per layer instead. Here the unit is a group of layers
(module-name patterns, by default the study's precision groups,
:mod:`search.compress.quantize.derive_groups`): a handful of searched dimensions rather than one
per layer, and the same groups the precision plan uses, so a group's precision and its width are
searched side by side.

A trial's ratio for group ``g`` is ``min(prune_ratio * prune_scale_g, max_layer_ratio)``: the
global ratio keeps its meaning (the overall level), the scales shape it. torch-pruning ranks the
channels of each group's coupled layers among themselves at that ratio (``MetaPruner``'s
``pruning_ratio_dict`` with a tuple of modules as key: one ranking scope per group,
``torch_pruning/pruner/algorithms/base_pruner.py``); a coupled group of channels (a residual
stream) belongs to the scope of its root layer.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3))
    >>> group_modules(net, {"first": ["0"], "rest": ["*"]})
    {'first': ['0'], 'rest': ['2']}
"""

from __future__ import annotations

from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def _matches(name: str, pattern: str) -> bool:
    """A pattern matches a module and everything under it, as precision groups do."""
    return fnmatchcase(name, pattern) or fnmatchcase(name, pattern + ".*")


def group_modules(model: nn.Module, groups: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """Group -> the names of the modules with parameters of their own it owns: the first group
    (in order) with a pattern that matches the module or a module above it, as
    :func:`search.compress.quantize.groups.assign_groups` assigns ONNX nodes."""
    out: dict[str, list[str]] = {g: [] for g in groups}
    for name, module in model.named_modules():
        if not name or not any(True for _ in module.parameters(recurse=False)):
            continue
        group = next(
            (g for g, pats in groups.items() if any(_matches(name, p) for p in pats)), None
        )
        if group is not None:
            out[group].append(name)
    return out


def prunable_groups(
    model: nn.Module, groups: Mapping[str, list[str]], left_alone: Mapping[str, str]
) -> dict[str, list[str]]:
    """The groups that own a Conv or Linear layer pruning may cut (not in ``left_alone``, the
    plan's layers and the output layer): only those get a ratio of their own."""
    from torch import nn

    layers = {
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.conv._ConvNd | nn.Linear) and name not in left_alone
    }
    owned = group_modules(model, groups)
    return {g: list(groups[g]) for g, names in owned.items() if layers.intersection(names)}


def group_ratios(
    ratio: float, scales: Mapping[str, float], *, max_layer_ratio: float
) -> dict[str, float]:
    """Each group's share of channels removed: ``min(ratio * scale, max_layer_ratio)``."""
    return {g: min(ratio * s, max_layer_ratio) for g, s in scales.items()}


def ratio_scopes(
    model: nn.Module, groups: Mapping[str, list[str]], ratios: Mapping[str, float]
) -> dict[tuple[str, ...], float]:
    """``{(module names of a group): its ratio}``: torch-pruning's ``pruning_ratio_dict`` keyed
    by names (the pruner maps them to the modules of the copy it prunes); groups without a
    ratio or without modules are left out."""
    owned = group_modules(model, {g: groups[g] for g in ratios if g in groups})
    return {tuple(owned[g]): float(r) for g, r in ratios.items() if owned.get(g)}
