"""What torch-pruning must be told about particular modules: exact rewrites, a correct LSTM
pruner, attention heads, and attributes to update after a cut.

Checked against torch-pruning 1.6.0/1.6.1 (see :mod:`search.compress.prune.patches`):

* ``nn.GLU`` is traced as element-wise (graph.py: unknown grad_fns map channel i to channel i),
  so a cut indexes past the halved tensor (IndexError at importance.py:229). It is rewritten to
  the exact equivalent ``a * sigmoid(b)`` with ``a, b = x.chunk(2)``, which the library maps as
  a split (both halves lose matching channels), and put back after pruning.
* The library's ``LSTMPruner`` (function.py:396-420) cuts ``weight_hh`` rows with un-expanded
  indices and ``weight_ih`` along its input dim: any hidden-size cut raises. :class:`LSTMPruner`
  cuts rows j, H+j, 2H+j, 3H+j (gates i, f, g, o) and column j of ``weight_hh``.
* ``nn.MultiheadAttention`` goes to ``out_channel_groups`` (its pruner cuts embed_dim evenly
  per head); listed in ``num_heads`` the residual stream is silently never pruned
  (base_pruner.py:411-426). q/k/v Linear layers of a module that carries ``num_heads``
  (timm/Hugging Face layout) go to ``num_heads``: head widths shrink evenly.
"""

from __future__ import annotations

from typing import Protocol, cast

import torch
import torch_pruning as tp
from torch import nn

# Linear layers that project queries, keys and values, by the names common implementations use.
QKV_NAMES = ("qkv", "in_proj", "query", "key", "value", "q_proj", "k_proj", "v_proj")


# Plain int attributes some models keep beside their layers (torch's stubs type every Module
# attribute as a Tensor or Module, so these say what default_fixups reads and writes).
class _HiddenDim(Protocol):
    hidden_dim: int


class _Heads(Protocol):
    num_heads: int
    head_dim: int


class ChunkGLU(nn.Module):
    """``nn.GLU`` as ``a * sigmoid(b)`` with ``a, b = x.chunk(2, dim)``: the same function."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=self.dim)
        return a * torch.sigmoid(b)


def rewrite_for_pruning(model: nn.Module, x: torch.Tensor | None = None) -> list[str]:
    """Replace modules the library mis-maps by exact equivalents, in place; what was done.

    ``nn.GLU`` has no parameters, so state_dict keys do not change; :func:`undo_rewrites` puts
    the original type back after pruning. With ``x``, YOLOv8's C2f blocks become
    :class:`~search.compress.prune.c2f.SplitC2f` (checked equal on ``x``), for good: a pruned
    C2f has halves of unequal width, which only the rewritten block computes.
    """
    from search.compress.prune.c2f import rewrite_c2f

    done = []
    for name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if type(child) is nn.GLU:
                setattr(parent, child_name, ChunkGLU(child.dim))
                done.append(f"{name}.{child_name}" if name else child_name)
    if x is not None:
        done += [f"{n} (C2f -> SplitC2f: cv1 as two convs)" for n in rewrite_c2f(model, x)]
    return done


def undo_rewrites(model: nn.Module) -> None:
    for parent in model.modules():
        for child_name, child in list(parent.named_children()):
            if type(child) is ChunkGLU:
                setattr(parent, child_name, nn.GLU(child.dim))


class LSTMPruner(tp.pruner.function.BasePruningFunc):
    """Hidden units of a single-layer, one-way ``nn.LSTM`` without projection; any other LSTM
    raises (the plan's dry run then leaves it alone with that reason)."""

    TARGET_MODULES = nn.LSTM

    def check(self, layer: nn.LSTM, idxs: list[int], to_output: bool) -> None:
        if layer.num_layers != 1 or layer.proj_size or layer.bidirectional:
            raise ValueError("only single-layer, one-way LSTMs without projection are pruned")

    @staticmethod
    def _keep(n: int, idxs: list[int]) -> torch.Tensor:
        return torch.tensor(sorted(set(range(n)) - set(idxs)), dtype=torch.long)

    @staticmethod
    def _select(layer: nn.LSTM, name: str, keep: torch.Tensor, dim: int) -> None:
        w = getattr(layer, name)
        setattr(layer, name, nn.Parameter(torch.index_select(w.data, dim, keep.to(w.device))))

    def prune_out_channels(self, layer: nn.LSTM, idxs: list) -> nn.LSTM:
        self.check(layer, idxs, True)
        h = layer.hidden_size
        keep = self._keep(h, idxs)
        rows = torch.cat([keep + g * h for g in range(4)])
        self._select(layer, "weight_ih_l0", rows, 0)
        self._select(layer, "weight_hh_l0", rows, 0)
        self._select(layer, "weight_hh_l0", keep, 1)
        if layer.bias:
            self._select(layer, "bias_ih_l0", rows, 0)
            self._select(layer, "bias_hh_l0", rows, 0)
        layer.hidden_size = len(keep)
        layer._init_flat_weights()
        return layer

    def prune_in_channels(self, layer: nn.LSTM, idxs: list) -> nn.LSTM:
        self.check(layer, idxs, False)
        keep = self._keep(layer.input_size, idxs)
        self._select(layer, "weight_ih_l0", keep, 1)
        layer.input_size = len(keep)
        layer._init_flat_weights()
        return layer

    def get_out_channels(self, layer: nn.LSTM) -> int:
        return layer.hidden_size * (2 if layer.bidirectional else 1)  # the output's width

    def get_in_channels(self, layer: nn.LSTM) -> int:
        return layer.input_size


def attention_heads(
    model: nn.Module,
) -> tuple[dict[nn.Module, int], dict[nn.Module, int], dict[str, str]]:
    """``(num_heads, out_channel_groups, unrecognised)`` for the library.

    A module whose attention lives in a child (torchvision's ``EncoderBlock`` carries
    ``num_heads`` beside its ``self_attention``) is covered by that child. A module that carries
    ``num_heads`` with neither q/k/v Linear children nor an ``nn.MultiheadAttention`` inside is
    returned in ``unrecognised`` (name -> reason): cutting it without knowing its heads would
    mix them.
    """
    heads: dict[nn.Module, int] = {}
    groups: dict[nn.Module, int] = {}
    unknown: dict[str, str] = {}
    for name, m in model.named_modules():
        n = getattr(m, "num_heads", None)
        if not isinstance(n, int) or n < 1:
            continue
        if isinstance(m, nn.MultiheadAttention):
            groups[m] = n
            continue
        qkv = [c for cn, c in m.named_children() if cn in QKV_NAMES and isinstance(c, nn.Linear)]
        heads.update(dict.fromkeys(qkv, n))
        inner = any(isinstance(c, nn.MultiheadAttention) for c in m.modules())
        if not qkv and not inner and name:
            unknown[name] = f"attention layout not recognised ({type(m).__name__} has num_heads)"
    return heads, groups, unknown


def default_fixups(model: nn.Module) -> None:
    """Attributes some models keep beside their layers and read in ``forward``, updated after
    a cut: torchvision ViT's ``hidden_dim``, timm-style attention's ``head_dim``."""
    for m in model.modules():
        proj = getattr(m, "conv_proj", None)
        if type(m).__name__ == "VisionTransformer" and isinstance(proj, nn.Conv2d):
            cast(_HiddenDim, m).hidden_dim = proj.out_channels
        qkv = getattr(m, "qkv", None)
        if isinstance(qkv, nn.Linear) and isinstance(getattr(m, "head_dim", None), int):
            attention = cast(_Heads, m)
            attention.head_dim = qkv.out_features // (3 * attention.num_heads)
