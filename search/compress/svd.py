"""Truncated SVD of one layer into two: how to cut a Linear or a Conv1d/2d/3d at a given rank.

Which layers to cut and at which rank is :mod:`search.compress.lowrank`'s job; this module only
builds the pair. Each pair is a plain ``nn.Sequential`` of ``nn.Linear``/``nn.Conv2d`` and is
exact at full rank (float64 SVD, errors around 1e-7).

Example:
    >>> import torch
    >>> conv = torch.nn.Conv2d(8, 16, 3, padding=1)
    >>> pair = factorize_conv(conv, full_rank(conv, "spatial"), "spatial")
    >>> x = torch.randn(1, 8, 10, 10)
    >>> bool(torch.allclose(pair(x), conv(x), atol=1e-4))
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import cast

import torch
from torch import nn

# The layers an SVD splits: a Linear or a (not transposed, ungrouped) Conv1d/2d/3d.
Layer = nn.Linear | nn.modules.conv._ConvNd


def _split(w: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``w ~= a @ b`` with ``a``: m x rank, ``b``: rank x n, singular values split evenly."""
    # float64 keeps full-rank reconstruction exact to ~1e-7 even for ill-conditioned weights.
    u, s, vh = torch.linalg.svd(w.detach().double(), full_matrices=False)
    root = s[:rank].sqrt()
    a = (u[:, :rank] * root).to(w.dtype)
    b = (root[:, None] * vh[:rank]).to(w.dtype)
    return a, b


def factorize_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    """``Linear(n, m)`` -> ``Sequential(Linear(n, rank, bias=False), Linear(rank, m))``."""
    _check_rank(rank, min(layer.in_features, layer.out_features))
    a, b = _split(layer.weight, rank)
    first = nn.Linear(layer.in_features, rank, bias=False)
    second = nn.Linear(rank, layer.out_features, bias=layer.bias is not None)
    _load(first, b, None)
    _load(second, a, layer.bias)
    return nn.Sequential(first, second).to(layer.weight.device)


# The conv class of each dimension. Typed as one constructor: a ConvNd's size tuples have its
# own length, which matches the class picked here but not the others' signatures.
_CONV: dict[int, Callable[..., nn.modules.conv._ConvNd]] = {
    1: nn.Conv1d,
    2: nn.Conv2d,
    3: nn.Conv3d,
}


def factorize_conv(layer: nn.modules.conv._ConvNd, rank: int, kind: str) -> nn.Sequential:
    """Split a Conv1d/2d/3d (groups=1, not transposed) into two convs of rank ``rank``.

    Channel SVD (any ConvNd): W (out, in, *k) as an out x (in * prod(k)) matrix; the first conv
    keeps kernel, stride, padding, dilation and padding mode with ``rank`` filters, the second
    is 1-wide. Spatial SVD (Conv2d only): a k x 1 conv then a 1 x k conv.

    Raises:
        ValueError: For grouped or transposed convs, an unknown ``kind``, or a rank outside
            [1, full rank].
    """
    if layer.groups != 1 or layer.transposed:
        raise ValueError(f"grouped convs (groups={layer.groups}) cannot be factorized")
    kind = layer_kind(layer, kind)
    _check_rank(rank, full_rank(layer, kind))
    if kind == "channel":
        return _channel_pair(layer, rank)
    out_ch, in_ch, kh, kw = layer.weight.shape
    bias = layer.bias is not None
    # W[o, i, y, x] as a (i, y) x (o, x) matrix: its rank-r factors are a k x 1 conv over
    # the input channels and a 1 x k conv into the output channels.
    ph, pw = zero_padding(cast(nn.Conv2d, layer))  # layer_kind gives spatial to Conv2d only
    m = layer.weight.permute(1, 2, 0, 3).reshape(in_ch * kh, out_ch * kw)
    a, b = _split(m, rank)
    first = nn.Conv2d(
        in_ch, rank, (kh, 1), (layer.stride[0], 1), (ph, 0), (layer.dilation[0], 1), bias=False
    )
    second = nn.Conv2d(
        rank, out_ch, (1, kw), (1, layer.stride[1]), (0, pw), (1, layer.dilation[1]), bias=bias
    )
    _load(first, a.reshape(in_ch, kh, rank).permute(2, 0, 1).unsqueeze(-1), None)
    _load(second, b.reshape(rank, out_ch, kw).permute(1, 0, 2).unsqueeze(2), layer.bias)
    return nn.Sequential(first, second).to(layer.weight.device)


def _channel_pair(layer: nn.modules.conv._ConvNd, rank: int) -> nn.Sequential:
    nd = layer.weight.dim() - 2
    cls = _CONV[nd]
    out_ch, in_ch = layer.weight.shape[:2]
    a, b = _split(layer.weight.reshape(out_ch, -1), rank)
    first = cls(
        in_ch,
        rank,
        layer.kernel_size,
        layer.stride,
        layer.padding,
        layer.dilation,
        bias=False,
        padding_mode=layer.padding_mode,
    )
    second = cls(rank, out_ch, 1, bias=layer.bias is not None)
    _load(first, b.reshape(rank, in_ch, *layer.kernel_size), None)
    _load(second, a.reshape(out_ch, rank, *([1] * nd)), layer.bias)
    return nn.Sequential(first, second).to(layer.weight.device)


def _load(layer: Layer, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:  # the pair's layer was made with a bias exactly then
            cast(torch.Tensor, layer.bias).copy_(bias.detach())


def _check_rank(rank: int, full: int) -> None:
    if not 1 <= rank <= full:
        raise ValueError(f"rank must lie in [1, {full}], but got {rank}")


def layer_kind(layer: nn.Module, kind: str) -> str:
    """The SVD ``layer`` gets for the requested ``kind``: ``linear``, ``channel`` or ``spatial``.

    A 1x1 conv has no spatial extent to split, and a Conv1d/Conv3d has not two spatial axes to
    split apart (spatial SVD is a k x 1 then a 1 x k Conv2d), so they always get channel SVD.
    """
    if isinstance(layer, nn.Linear):
        return "linear"
    if kind not in ("channel", "spatial"):
        raise ValueError(f"kind must be 'channel' or 'spatial', but got {kind!r}")
    if not isinstance(layer, nn.Conv2d) or tuple(layer.kernel_size) == (1, 1):
        return "channel"
    return kind


def full_rank(layer: Layer, kind: str) -> int:
    """The rank at which the ``kind`` factorization of ``layer`` is exact."""
    if isinstance(layer, nn.Linear):
        return min(layer.in_features, layer.out_features)
    out_ch, in_ch = layer.weight.shape[:2]
    if kind == "channel":
        return min(out_ch, in_ch * math.prod(layer.kernel_size))
    kh, kw = layer.kernel_size
    return min(in_ch * kh, out_ch * kw)


def zero_padding(layer: nn.Conv2d) -> tuple[int, int]:
    """Explicit (h, w) zero padding of a conv; spatial SVD pads each half on its own axis."""
    if layer.padding_mode != "zeros":
        raise ValueError(f"spatial SVD needs zero padding, got padding_mode={layer.padding_mode}")
    if layer.padding == "valid":
        return 0, 0
    if layer.padding == "same":
        total = [d * (k - 1) for d, k in zip(layer.dilation, layer.kernel_size, strict=True)]
        if any(t % 2 for t in total):
            raise ValueError("spatial SVD needs symmetric padding; 'same' here is asymmetric")
        return total[0] // 2, total[1] // 2
    return int(layer.padding[0]), int(layer.padding[1])


# ------------------------------------------------------------------------------ MAC model


def rank_cost(layer: Layer, kind: str, shapes: list[tuple[tuple, tuple]]) -> tuple[int, int]:
    """(MACs of the original, MACs per unit of rank of the pair), summed over the calls seen."""
    before = per_rank = 0
    for in_shape, out_shape in shapes:
        if isinstance(layer, nn.Linear):
            rows = math.prod(in_shape) // layer.in_features
            before += rows * layer.in_features * layer.out_features
            per_rank += rows * (layer.in_features + layer.out_features)
            continue
        n, out_ch, positions = out_shape[0], out_shape[1], math.prod(out_shape[2:])
        in_ch, k = in_shape[1], math.prod(layer.kernel_size)
        before += n * positions * out_ch * in_ch * k
        if kind == "channel":
            per_rank += n * positions * (in_ch * k + out_ch)
        else:
            # The k x 1 half keeps the input width: its stride and padding act on height only.
            ho, wo, w_in = out_shape[2], out_shape[3], in_shape[3]
            kh, kw = layer.kernel_size
            per_rank += n * ho * w_in * in_ch * kh + n * ho * wo * out_ch * kw
    return before, per_rank


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def rank_for(ratio: float, full_rank: int, round_to: int | None = None) -> int:
    """``ratio`` of ``full_rank``, at least 1; with ``round_to``, the nearest multiple of it
    (vector units like aligned channel counts), never above the full rank."""
    rank = max(1, math.ceil(ratio * full_rank - 1e-9))
    if round_to and round_to > 1 and rank < full_rank:
        rank = min(full_rank, max(round_to, round_to * round(rank / round_to)))
    return rank
