"""One block the dependency graph cannot map leaves that block alone, not the whole model; a
YOLOv8 C2f block is rewritten exactly and pruned whole (yolo-tiny case, tiny models of ours)."""

from __future__ import annotations

import torch
from torch import nn

from search.compress.prune.c2f import SplitC2f, rewrite_c2f
from search.compress.prune.plan import OUTPUT_LAYER, plan_pruning
from search.compress.prune.step import count_params, prune_with_report


def conv(cin: int, cout: int, k: int = 1, s: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.SiLU())  # fmt: skip


class Bottleneck(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.cv1, self.cv2 = conv(c, c, 3), conv(c, c, 3)

    def forward(self, x):
        return x + self.cv2(self.cv1(x))


class Fan(nn.Module):
    """YOLOv8's C2f layout under a name nobody rewrites (the library's graph fails on it):
    split in two halves, n bottlenecks on the last part, concat of all."""

    def __init__(self, cin: int, cout: int, n: int) -> None:
        super().__init__()
        self.c = cout // 2
        self.cv1 = conv(cin, 2 * self.c)
        self.m = nn.ModuleList(Bottleneck(self.c) for _ in range(n))
        self.cv2 = conv((2 + n) * self.c, cout)

    def forward(self, x):
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class C2f(Fan):
    """The block by its YOLOv8 name."""


class Net(nn.Module):
    def __init__(self, block: type[nn.Module]) -> None:
        super().__init__()
        self.stem = conv(3, 32, 3, 2)
        self.block = block(32, 32, 2)
        self.detect = nn.Conv2d(32, 8, 1)

    def forward(self, x):
        return self.detect(self.block(self.stem(x)))


X = torch.randn(1, 3, 32, 32)


def _net(block: type[nn.Module]) -> Net:
    torch.manual_seed(0)
    net = Net(block).eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return net


def test_a_c2f_with_two_bottlenecks_is_rewritten_exactly_and_pruned_whole():
    net = _net(C2f)
    plan = plan_pruning(net, X, ignored_layers=["detect"], ratio=0.5)
    assert not plan.error
    assert plan.rewrites == ["block (C2f -> SplitC2f: cv1 as two convs)"]
    assert plan.left_alone == {"detect": OUTPUT_LAYER}  # nothing else
    pruned, report = prune_with_report(
        net, ratio=0.5, example_input=X, ignored_layers=["detect"], plan=plan
    )
    assert isinstance(pruned.block, SplitC2f) and report.rewrites == plan.rewrites
    halves = pruned.block.cv0[0].out_channels + pruned.block.cv1[0].out_channels
    assert halves < 32  # the split halves are cut on their own
    assert pruned.stem[0].out_channels < 32
    assert count_params(pruned) < 0.6 * count_params(net)
    assert pruned(X).shape == net(X).shape


def test_the_rewrite_is_the_same_function():
    net = _net(C2f)
    before = net(X)
    assert rewrite_c2f(net, X) == ["block"]
    assert isinstance(net.block, SplitC2f)
    assert torch.allclose(net(X), before, atol=1e-6)


def test_a_block_the_graph_cannot_map_is_left_alone_and_the_rest_is_pruned():
    """Before: 'dependency graph: IndexError ... shape_infer.py:68' and prune ratio 0 for all."""
    net = _net(Fan)
    plan = plan_pruning(net, X, ignored_layers=["detect"], ratio=0.5)
    assert not plan.error and not plan.rewrites
    alone = {k: v for k, v in plan.left_alone.items() if k != "detect"}
    assert alone and all(k.startswith("block.") for k in alone), alone
    assert all("Concat" in why or "Split" in why for why in alone.values())
    pruned, _ = prune_with_report(
        net, ratio=0.5, example_input=X, ignored_layers=["detect"], plan=plan
    )
    assert pruned.stem[0].out_channels < 32  # outside the block: pruned at the ratio
    assert pruned(X).shape == net(X).shape
