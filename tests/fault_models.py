"""One tiny model per kind of architecture that torch-pruning, the exporter or the quantizer
got wrong (issue 19), and tasks of random data around them. Each runs in milliseconds.

Every class documents its input shape (``EXAMPLE``) and the fault it exercises; deterministic
under ``torch.manual_seed``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GLUNet(nn.Module):
    """Conv1d 8->32, GLU(dim=1) halves to 16, Conv1d 16->24, mean over time, Linear (the case
    ``glu-channel-halving``). Fault: torch-pruning maps the GLU as element-wise (IndexError)."""

    EXAMPLE = (1, 8, 64)

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(8, 32, 3, padding=1)
        self.gate = nn.GLU(dim=1)
        self.conv2 = nn.Conv1d(16, 24, 3, padding=1)
        self.head = nn.Linear(24, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv2(self.gate(self.conv1(x))))
        return self.head(h.mean(dim=2))


class ChunkGateNet(nn.Module):
    """Conv2d 3->32, ``a, b = torch.chunk(h, 2, dim=1)``, ``a * sigmoid(b)`` (a hand-written GLU),
    then Conv2d 16->16. torch-pruning sees a SPLIT op here."""

    EXAMPLE = (1, 3, 16, 16)

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.chunk(self.conv1(x), 2, dim=1)
        h = F.relu(self.conv2(a * torch.sigmoid(b)))
        return self.head(h.mean(dim=(2, 3)))


class SplitNet(nn.Module):
    """Conv2d 3->24, ``a, b = h.chunk(2, dim=1)``, each half to its own conv, concat. torch-pruning
    lists the split's consumers in trace order (``right`` first here), so without a fix it maps
    ``right``'s channels onto the first half: silently wrong, no error."""

    EXAMPLE = (1, 3, 16, 16)

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 3, padding=1)
        self.left = nn.Conv2d(12, 8, 3, padding=1)
        self.right = nn.Conv2d(12, 16, 1)
        self.head = nn.Linear(24, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.conv1(x).chunk(2, dim=1)
        h = torch.cat([F.relu(self.left(a)), F.relu(self.right(b))], dim=1)
        return self.head(h.mean(dim=(2, 3)))


class FixedSplitNet(nn.Module):
    """``torch.split(h, [8, 16], dim=1)`` with sizes written in the code: ``conv1`` cannot lose
    channels without breaking the split, whatever the pruner does."""

    EXAMPLE = (1, 3, 16, 16)

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 3, padding=1)
        self.left = nn.Conv2d(8, 8, 3, padding=1)
        self.right = nn.Conv2d(16, 16, 1)
        self.head = nn.Linear(24, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = torch.split(self.conv1(x), [8, 16], dim=1)
        h = torch.cat([F.relu(self.left(a)), F.relu(self.right(b))], dim=1)
        return self.head(h.mean(dim=(2, 3)))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    x = x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(n, c, h, w)


class ShuffleNet(nn.Module):
    """A ShuffleNetV2-like unit: stem, chunk in two, a branch on one half, concat, channel shuffle
    (view/transpose/view), then a conv. Fault: ZeroDivisionError while building the graph."""

    EXAMPLE = (1, 3, 16, 16)

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.branch = nn.Sequential(
            nn.Conv2d(8, 8, 1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8),
            nn.BatchNorm2d(8),
            nn.Conv2d(8, 8, 1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
        )
        self.conv = nn.Sequential(nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Linear(32, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.stem(x).chunk(2, dim=1)
        h = channel_shuffle(torch.cat([a, self.branch(b)], dim=1), 2)
        return self.head(self.conv(h).mean(dim=(2, 3)))


class SpatialGateNet(nn.Module):
    """CBAM-like spatial attention: a conv makes a one-channel map that gates 16 channels by
    broadcasting (``h * sigmoid(gate)``)."""

    EXAMPLE = (1, 3, 16, 16)

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.gate = nn.Conv2d(2, 1, 7, padding=3)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x))
        pooled = torch.cat([h.mean(1, keepdim=True), h.amax(1, keepdim=True)], dim=1)
        h = h * torch.sigmoid(self.gate(pooled))
        h = F.relu(self.conv2(h))
        return self.head(h.mean(dim=(2, 3)))


class GateConvNet(nn.Module):
    """A conv whose output is ONE channel multiplied into 16 (the group ends in a broadcast):
    ``conv1(x) * sigmoid(att(x))`` with ``att`` a Conv2d 3->1."""

    EXAMPLE = (1, 3, 16, 16)

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.att = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1))
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x)) * torch.sigmoid(self.att(x))
        return self.head(F.relu(self.conv2(h)).mean(dim=(2, 3)))


class HandConv(nn.Module):
    """A conv written by hand: its weight is a bare nn.Parameter (out, in, k, k) used through
    ``F.conv2d``, and a per-channel scale vector (1, out, 1, 1)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3) * 0.1)
        self.scale = nn.Parameter(torch.ones(1, cout, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, padding=1) * self.scale


class HandParamNet(nn.Module):
    """Conv2d 3->16 -> HandConv 16->16 -> Conv2d 16->16 -> head. torch-pruning prunes an
    unwrapped parameter along its LAST non-singleton dim by default: wrong for the conv weight
    (dim 0 is its output channel, dim 1 its input channel)."""

    EXAMPLE = (1, 3, 16, 16)

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.hand = HandConv(16, 16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.hand(F.relu(self.conv1(x))))
        return self.head(F.relu(self.conv2(h)).mean(dim=(2, 3)))


class ScaleNet(nn.Module):
    """A LayerScale-like per-channel vector (16,) and a (1, 16, 1, 1) scale, both after convs:
    torch-pruning's default (last non-singleton dim) is right for both."""

    EXAMPLE = (1, 3, 16, 16)

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.gamma = nn.Parameter(torch.full((16,), 0.5))
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.beta = nn.Parameter(torch.ones(1, 16, 1, 1))
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x)) * self.gamma[None, :, None, None]
        h = F.relu(self.conv2(h)) * self.beta
        return self.head(h.mean(dim=(2, 3)))


class LSTMNet(nn.Module):
    """Conv1d 6->32 + ReLU, nn.LSTM(32, 48, batch_first), Linear on the last step (the case
    ``lstm-export-fixed-batch``)."""

    EXAMPLE = (1, 6, 20)

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.front = nn.Sequential(nn.Conv1d(6, 32, 3, padding=1), nn.ReLU())
        self.rnn = nn.LSTM(32, 48, num_layers=1, batch_first=True)
        self.head = nn.Linear(48, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.front(x).transpose(1, 2))
        return self.head(out[:, -1])


class UpNet(nn.Module):
    """Encoder-decoder with nn.Upsample (ONNX Resize) and a skip concat (the case
    ``resize-symbolic-shape-crash``)."""

    EXAMPLE = (1, 3, 16, 16)

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.down = nn.Sequential(nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.ReLU())
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.dec = nn.Sequential(nn.Conv2d(32, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.enc(x)
        d = self.dec(torch.cat([e, self.up(self.down(e))], dim=1))
        return self.head(d.mean(dim=(2, 3)))


class Conv1dNet(nn.Module):
    """A plain 1-D CNN (MNIST-1D like): low-rank must factorize its Conv1d layers. Module names
    (``features``, ``classifier``) share nothing with the default space."""

    EXAMPLE = (1, 1, 40)

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(1, 32, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(64, 64, 3, stride=2, padding=1, dilation=1),
            nn.ReLU(),
            nn.Conv1d(64, 64, 3, padding=2, dilation=2),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean(dim=2))


class TinyViT(nn.Module):
    """A 2-block ViT with torchvision's EncoderBlock layout (``num_heads`` attribute, an
    nn.MultiheadAttention child, an MLP), a class token and position embedding."""

    EXAMPLE = (1, 3, 32, 32)

    def __init__(self, classes: int = 4, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        from torchvision.models.vision_transformer import Encoder

        self.conv_proj = nn.Conv2d(3, dim, 8, stride=8)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.encoder = Encoder(16 + 1, 2, heads, dim, 2 * dim, 0.0, 0.0)
        self.heads = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.heads(self.encoder(x)[:, 0])


ALL = {
    "glu": GLUNet,
    "chunk_gate": ChunkGateNet,
    "split": SplitNet,
    "fixed_split": FixedSplitNet,
    "shuffle": ShuffleNet,
    "spatial_gate": SpatialGateNet,
    "gate_conv": GateConvNet,
    "hand_param": HandParamNet,
    "scale": ScaleNet,
    "lstm": LSTMNet,
    "upsample": UpNet,
    "conv1d": Conv1dNet,
    "tiny_vit": TinyViT,
}


def example(name: str, batch: int = 1) -> tuple[nn.Module, torch.Tensor]:
    """A fresh, seeded instance of ``ALL[name]`` in eval mode and a random input of ``batch``."""
    torch.manual_seed(0)
    cls = ALL[name]
    return cls().eval(), torch.randn(batch, *cls.EXAMPLE[1:])


class TimmAttention(nn.Module):
    """timm-style attention: a fused qkv Linear, ``num_heads`` and ``head_dim`` attributes read in
    ``forward`` (so they must be updated after head pruning)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, -1))


class TimmViT(nn.Module):
    """Two pre-norm blocks of TimmAttention + MLP over 16 tokens of 48 features."""

    EXAMPLE = (1, 16, 48)

    def __init__(self, classes: int = 4, dim: int = 64, heads: int = 8) -> None:
        super().__init__()
        self.embed = nn.Linear(48, dim)
        self.blocks = nn.ModuleList()
        for _ in range(2):
            self.blocks.append(
                nn.ModuleDict(
                    {
                        "norm1": nn.LayerNorm(dim),
                        "attn": TimmAttention(dim, heads),
                        "norm2": nn.LayerNorm(dim),
                        "mlp": nn.Sequential(
                            nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim)
                        ),
                    }
                )
            )
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for blk in self.blocks:
            x = x + blk["attn"](blk["norm1"](x))
            x = x + blk["mlp"](blk["norm2"](x))
        return self.head(x.mean(dim=1))


ALL["timm_vit"] = TimmViT


class PosBiasNet(nn.Module):
    """Conv1d 4->16 plus a learned position bias (1, 16, 24) over (N, C, T) activations: the
    channel dim of the bias is 1, but torch-pruning prunes an unwrapped parameter along its LAST
    non-singleton dim (T here) unless told otherwise."""

    EXAMPLE = (1, 4, 24)

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(4, 16, 3, padding=1)
        self.pos = nn.Parameter(torch.randn(1, 16, 24) * 0.1)
        self.conv2 = nn.Conv1d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x) + self.pos)
        return self.head(F.relu(self.conv2(h)).mean(dim=2))


class SpatialMapNet(nn.Module):
    """A learned (1, 1, 12, 12) spatial map multiplied into 16 channels: not channel-aligned,
    must not be pruned (torch-pruning's default would cut its last dim, W). (With W equal to
    the channel count the two cannot be told apart from shapes; the dry run then catches it.)"""

    EXAMPLE = (1, 3, 12, 12)

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.map = nn.Parameter(torch.ones(1, 1, 12, 12))
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.conv1(x)) * self.map
        return self.head(F.relu(self.conv2(h)).mean(dim=(2, 3)))


ALL["pos_bias"] = PosBiasNet
ALL["spatial_map"] = SpatialMapNet


def random_task(name: str, *, n: int = 48, seed: int = 0):
    """A :class:`~search.tasks.Task` around ``ALL[name]``: ``n`` random inputs of its example
    shape and random labels (the metric is at chance; trials only have to run)."""
    from torch.utils.data import TensorDataset

    from search.tasks import Task

    model, x = example(name)
    with torch.no_grad():
        classes = model(x).shape[-1]
    g = torch.Generator().manual_seed(seed)
    xs = torch.randn((n, *x.shape[1:]), generator=g)
    ys = torch.randint(0, classes, (n,), generator=g)
    third = n // 3
    return Task(
        name=name,
        model=model,
        train=TensorDataset(xs[:third], ys[:third]),
        val=TensorDataset(xs[third : 2 * third], ys[third : 2 * third]),
        test=TensorDataset(xs[2 * third :], ys[2 * third :]),
        calibration=TensorDataset(xs[:third], ys[:third]),
        example_input=xs[:1].clone(),
        key=f"{name}-seed{seed}",
    )
