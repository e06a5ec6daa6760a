"""Structured pruning with torch-pruning's dependency graph: channels are really removed.

Coupled layers (a residual add, the BatchNorm after a conv) are pruned together, so the pruned
model is a smaller dense model and the exported ONNX graph shrinks with it.

Example:
    >>> import torch
    >>> from search.models import ResNet
    >>> model = ResNet(num_classes=10, widths=(16, 32, 64))
    >>> small = prune(model, ratio=0.5, example_input=torch.zeros(1, 1, 32, 32),
    ...               ignored_layers=["fc"], round_to=8)
    >>> count_params(small) < count_params(model)
    True
"""

from __future__ import annotations

import copy

import torch
import torch_pruning as tp
from torch import nn

from search.errors import ConfigError

_IMPORTANCE = {"l1": 1, "l2": 2}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass at ``example_input``'s shape (torch-pruning)."""
    was_training = model.training
    macs, _ = tp.utils.count_ops_and_params(model.eval(), example_input)
    model.train(was_training)
    return int(macs)


def _modules(model: nn.Module, names: list[str]) -> list[nn.Module]:
    found = dict(model.named_modules())
    missing = [n for n in names if n not in found]
    if missing:
        raise ConfigError(
            f"ignored layer(s) {', '.join(missing)} not found in the model; "
            f"module names look like {', '.join(list(found)[1:4])}"
        )
    return [found[n] for n in names]


def default_ignored(model: nn.Module) -> list[str]:
    """The last Linear layer: a classifier head must keep its output size."""
    last = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return last[-1:]


def prune(
    model: nn.Module,
    *,
    ratio: float,
    example_input: torch.Tensor,
    ignored_layers: list[str] | None = None,
    round_to: int | None = 8,
    importance: str = "l2",
    max_layer_ratio: float = 0.9,
) -> nn.Module:
    """Return a pruned copy of ``model`` with about ``ratio`` of its channels removed.

    Channels are ranked globally by group magnitude (L1 or L2 over every coupled layer).
    ``round_to`` keeps channel counts multiples of the target's preferred vector width:
    unaligned counts can run slower than the unpruned model.
    """
    if not 0.0 <= ratio < 1.0:
        raise ConfigError(f"prune ratio must lie in [0, 1), but got {ratio}")
    pruned = copy.deepcopy(model).eval()
    if ratio == 0.0:
        return pruned
    names = default_ignored(pruned) if ignored_layers is None else ignored_layers
    pruner = tp.pruner.MetaPruner(
        pruned,
        example_input,
        importance=tp.importance.GroupMagnitudeImportance(p=_IMPORTANCE[importance]),
        pruning_ratio=ratio,
        max_pruning_ratio=max_layer_ratio,
        global_pruning=True,
        ignored_layers=_modules(pruned, names),
        round_to=round_to,
    )
    pruner.step()
    return pruned
