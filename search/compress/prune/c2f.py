"""YOLOv8's C2f block rewritten so torch-pruning can cut it, exactly.

A C2f block (ultralytics ``C2f`` and its subclasses such as ``C3k2``; any module that names
itself so and has ``cv1``, ``cv2``, ``m`` and ``c``) runs ``cv1``, splits its output into two
halves of ``c`` channels, runs the bottlenecks ``m`` one after another on the last part, and
concatenates every part into ``cv2``. torch-pruning 1.6.1 cannot map that split: with
``chunk`` the index mapping runs past the halves (IndexError at importance.py:239), with
``split((c, c))`` the graph cannot be built (IndexError at shape_infer.py:68), and a cut would
make the halves unequal, which ``forward`` cannot take.

:class:`SplitC2f` computes the same function with ``cv1`` as two convolutions, ``cv0`` for the
first half and ``cv1`` for the second (the weights, bias and BatchNorm statistics of
``cv1`` split in two), so each half is an ordinary layer the library prunes on its own. This is
the C2f_v2 rewrite of Torch-Pruning's YOLOv8 example (``examples/yolov8/yolov8_pruning.py``,
from its issue #147), written here for any block of that layout. A block is rewritten only
when the rewritten one gives the same output on the example input (max |diff| <= 1e-5).

Example:
    >>> done = rewrite_c2f(model, x)   # ["backbone.4"]
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

TOLERANCE = 1e-5


class SplitC2f(nn.Module):
    """A C2f block with ``cv1`` split into ``cv0`` and ``cv1`` (see the module docstring)."""

    def __init__(self, block: Any) -> None:  # a C2f block (is_c2f); its attributes untyped
        super().__init__()
        c = int(block.c)
        self.cv0 = _half(block.cv1, range(c))
        self.cv1 = _half(block.cv1, range(c, 2 * c))
        self.m = block.m
        self.cv2 = block.cv2

    def bottlenecks(self) -> list[nn.Module]:
        return list(self.m.children())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv0(x), self.cv1(x)]
        y.extend(m(y[-1]) for m in self.bottlenecks())
        return self.cv2(torch.cat(y, 1))


def _half(producer: nn.Module, keep: range) -> nn.Module:
    """A copy of ``producer`` (a conv, or a conv -> BatchNorm -> activation block) that
    computes only the output channels ``keep``."""
    half = copy.deepcopy(producer)
    convs = [m for m in half.modules() if isinstance(m, nn.Conv2d)]
    norms = [m for m in half.modules() if isinstance(m, nn.BatchNorm2d)]
    if len(convs) != 1 or len(norms) > 1 or convs[0].groups != 1:
        raise ValueError("cv1 is not one convolution (with at most one BatchNorm)")
    drop = [i for i in range(convs[0].out_channels) if i not in keep]
    tp.prune_conv_out_channels(convs[0], drop)
    if norms:
        tp.prune_batchnorm_out_channels(norms[0], drop)
    return half


def is_c2f(module: nn.Module) -> bool:
    """Whether ``module`` has C2f's name (or a base class of that name) and layout."""
    named = any(cls.__name__ == "C2f" for cls in type(module).__mro__)
    parts = all(hasattr(module, a) for a in ("cv1", "cv2", "m", "c"))
    return named and parts and isinstance(getattr(module, "c", None), int)


def rewrite_c2f(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Replace every C2f block of ``model`` by :class:`SplitC2f`, in place, where the result
    is the same function on ``x``; the names of the blocks replaced."""
    blocks = {name: m for name, m in model.named_modules() if name and is_c2f(m)}
    if not blocks:
        return []
    inputs: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_pre_hook(lambda _m, a, n=n: inputs.__setitem__(n, a[0]))
        for n, m in blocks.items()
    ]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    done = []
    for name, block in blocks.items():
        if name not in inputs:
            continue  # not run at this input
        try:
            new = SplitC2f(block).train(block.training)
            with torch.no_grad():
                same = (new.eval()(inputs[name]) - block.eval()(inputs[name])).abs().max()
        except Exception:  # noqa: BLE001 - another layout under the same name: left as it is
            continue
        if float(same) <= TOLERANCE:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, new)
            done.append(name)
    return done
