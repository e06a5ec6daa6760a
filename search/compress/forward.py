"""Run a model once and watch chosen layers: the one helper behind every forward-hook pass
(layer MACs and call order for derived groups, the last layer that runs for pruning, layer
shapes for low-rank)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

Hook = Callable[[str, "nn.Module", tuple[Any, ...], Any], None]


def observe(
    model: nn.Module,
    x: torch.Tensor,
    hook: Hook,
    *,
    select: Callable[[str, nn.Module], bool],
) -> None:
    """Run ``model`` once on ``x`` (eval mode, no gradients) with ``hook(name, module, inputs,
    output)`` called after each module ``select(name, module)`` chooses; the hooks are removed
    and the model's training mode restored afterwards, also when the forward pass raises."""
    import torch

    handles = []
    for name, module in model.named_modules():
        if select(name, module):
            handles.append(
                module.register_forward_hook(
                    lambda m, inputs, out, name=name: hook(name, m, inputs, out)
                )
            )
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
