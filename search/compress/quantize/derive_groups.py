"""Precision groups derived from a model's own structure, for spaces whose groups do not fit it.

Units are module subtrees in execution order. Start from the top-level children that hold a
weighted layer (Conv*, Linear, MultiheadAttention, LSTM/GRU); while there are fewer units than
wanted, replace the costliest unit by its weighted children (descending through wrappers with a
single weighted child: ``encoder`` -> ``encoder.layers`` -> its blocks); while there are more,
merge the adjacent pair with the smallest joint cost, keeping the first unit (the stem) and the
last (the classifier) apart: quantization sensitivity is usually highest there. Cost is MACs at the
example input. Each group is a list of module-name patterns in the syntax of
:mod:`search.compress.quantize.groups` (a pattern matches the module and everything under it),
named after its first and last unit.

Example:
    >>> derive_groups(resnet18, torch.zeros(1, 3, 64, 64), n_groups=5)
    {'conv1': ['conv1'], 'layer1': ['layer1'], 'layer2-layer3': ['layer2', 'layer3'],
     'layer4': ['layer4'], 'fc': ['fc']}
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import torch
from torch import nn

from search.compress.forward import observe

WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear, nn.MultiheadAttention, nn.LSTM, nn.GRU)


@dataclass
class _Unit:
    names: list[str]  # module names (patterns); merged units hold several
    cost: int
    order: int  # position of its first weighted layer in execution order

    @property
    def label(self) -> str:
        return self.names[0] if len(self.names) == 1 else f"{self.names[0]}-{self.names[-1]}"


def _layer_macs(mod: nn.Module, out: torch.Tensor) -> int:
    if isinstance(mod, nn.modules.conv._ConvNd):
        return out.numel() * math.prod(mod.kernel_size) * mod.in_channels // mod.groups
    if isinstance(mod, nn.Linear):
        return out.numel() * mod.in_features
    if isinstance(mod, nn.MultiheadAttention):
        return 4 * (out.numel() // mod.embed_dim) * mod.embed_dim**2
    rnn = cast(nn.RNNBase, mod)  # the rest of WEIGHTED: LSTM and GRU
    gates = 4 if isinstance(mod, nn.LSTM) else 3  # recurrent: gates over input and hidden
    return gates * out.numel() * (rnn.input_size + rnn.hidden_size)


def layer_costs(model: nn.Module, x: torch.Tensor) -> tuple[dict[str, int], dict[str, int]]:
    """Per weighted module that runs at ``x``: its MACs, and the position of its first call."""
    macs: dict[str, int] = {}
    order: dict[str, int] = {}

    def hook(name: str, mod: nn.Module, _inp: tuple, out: object) -> None:
        order.setdefault(name, len(order))
        # A tensor, or (output, state) from recurrent layers and attention.
        o = cast(torch.Tensor, out[0] if isinstance(out, tuple) else out)
        macs[name] = macs.get(name, 0) + _layer_macs(mod, o)

    observe(model, x, hook, select=lambda _n, m: isinstance(m, WEIGHTED))
    return macs, order


def _unit(prefix: str, macs: dict[str, int], order: dict[str, int]) -> _Unit | None:
    inside = [n for n in macs if n == prefix or n.startswith(prefix + ".")]
    if not inside:
        return None
    return _Unit([prefix], sum(macs[n] for n in inside), min(order[n] for n in inside))


def _children(model: nn.Module, prefix: str, macs: dict, order: dict) -> list[_Unit]:
    module = model.get_submodule(prefix) if prefix else model
    units = []
    for name, _ in module.named_children():
        u = _unit(f"{prefix}.{name}" if prefix else name, macs, order)
        if u is not None:
            units.append(u)
    return sorted(units, key=lambda u: u.order)


def _expand(model: nn.Module, u: _Unit, macs: dict, order: dict) -> list[_Unit]:
    """The weighted children of ``u``, through wrappers with one weighted child; [] for a
    leaf."""
    kids = _children(model, u.names[0], macs, order)
    while len(kids) == 1:
        kids = _children(model, kids[0].names[0], macs, order)
    return kids


def derive_groups(
    model: nn.Module, example_input: torch.Tensor, *, n_groups: int = 5
) -> dict[str, list[str]]:
    """Group name -> module-name patterns: about ``n_groups`` groups that together cover every
    weighted layer that runs at ``example_input`` (fewer when the model has fewer units)."""
    macs, order = layer_costs(model, example_input)
    units = _children(model, "", macs, order)
    if not units and macs:  # the model is one weighted layer
        return {"all": ["*"]}
    while len(units) < n_groups:
        parts = {u.label: _expand(model, u, macs, order) for u in units if len(u.names) == 1}
        splittable = [u for u in units if parts.get(u.label)]
        if not splittable:
            break
        big = max(splittable, key=lambda u: u.cost)
        i = units.index(big)
        units[i : i + 1] = parts[big.label]
    while len(units) > max(n_groups, 1):
        keep_ends = len(units) > 3 and n_groups >= 3
        inner = range(1, len(units) - 2) if keep_ends else range(len(units) - 1)
        i = min(inner, key=lambda j: units[j].cost + units[j + 1].cost)
        a, b = units[i], units[i + 1]
        units[i : i + 2] = [_Unit(a.names + b.names, a.cost + b.cost, a.order)]
    return {u.label: list(u.names) for u in units}
