"""Why every pruned student of the shapes_segmentation example lost about 0.4 mIoU with the L2
channel ranking (the cause: which channels L2 removes; LAMP, searched by default since, keeps
the teacher's mIoU at the same ratios: benchmarks/importance.py).

Side by side, on the example's own teacher (trained on first use, cached under --cache-dir):
the teacher; the teacher distilled for 5 epochs unpruned; 5 % and 30 % of its channels removed
(global L2 ranking, round_to 1 and 8), before and after 5 epochs of distillation; the same 5 %
channels zeroed in place of removing them (the same loss shows the channel mapping is right);
and the 30 %-pruned widths trained from fresh weights with plain cross-entropy for 5 epochs.
Distillation is the product's own (``search.compress.distill.distill_step``, ClassKD, T=4,
alpha=0.5, AdamW at lr 3e-3, batch 32, one thread). Validation mIoU of each. About 3 minutes.

    .venv/bin/python benchmarks/seg_prune_recovery.py
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from search.compress import distill as kd
from search.compress.kd_losses import ClassKD
from search.compress.prune.step import prune_with_report
from search.tasks.shapes_segmentation import make_task

BLOCKS = ("enc1", "enc2", "enc3", "mid", "dec2", "dec1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache-dir", default="results/seg-prune-recovery")
    ap.add_argument("--epochs", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(1)
    task = make_task(seed=0, cache_dir=Path(args.cache_dir))
    x, y = task.val.tensors

    def miou(m: nn.Module) -> float:
        m.eval()
        with torch.no_grad():
            return float(task.metric(m(x).numpy(), y.numpy()))

    targets = kd.predict_outputs(task.model, task.train)

    def distilled(m: nn.Module) -> nn.Module:
        cfg = kd.DistillConfig(epochs=args.epochs, batch_size=32, lr=3e-3)
        kd.distill_step(m, cfg, data=task.train, teacher_logits=targets, seed=0, loss=ClassKD())
        return m

    def pruned(ratio: float, round_to: int) -> nn.Module:
        cut, _ = prune_with_report(copy.deepcopy(task.model), ratio=ratio,
                                   example_input=task.example_input,
                                   ignored_layers=["classifier"], round_to=round_to)  # fmt: skip
        return cut

    def say(what: str, value: float, t0: float) -> None:
        print(f"{what:62s} mIoU {value:.4f}  ({time.perf_counter() - t0:.0f} s)", flush=True)

    t0 = time.perf_counter()
    say("teacher", miou(task.model), t0)
    say(
        f"teacher distilled {args.epochs} epochs, unpruned",
        miou(distilled(copy.deepcopy(task.model))),
        t0,
    )
    for ratio, round_to in ((0.05, 1), (0.3, 8)):
        cut = pruned(ratio, round_to)
        widths = [m.out_channels for m in cut.modules() if isinstance(m, nn.Conv2d)]
        say(f"pruned {ratio} (round_to {round_to}) {widths}, before training", miou(cut), t0)
        say(
            f"pruned {ratio} (round_to {round_to}), after {args.epochs} epochs",
            miou(distilled(cut)),
            t0,
        )
    zeroed = _zeroed_like(task.model, pruned(0.05, 1))
    say("the 5 % channels zeroed instead of removed, before training", miou(zeroed), t0)
    fresh = pruned(0.3, 8)
    for module in fresh.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    say(
        f"pruned 0.3 widths from fresh weights, {args.epochs} epochs CE",
        miou(_trained(fresh, task, args.epochs)),
        t0,
    )


def _zeroed_like(teacher: nn.Module, cut: nn.Module) -> nn.Module:
    """``teacher`` with the channels ``cut`` lost zeroed (BN scale and shift), found by matching
    each kept BN scale to the teacher's."""
    out = copy.deepcopy(teacher)
    for name in BLOCKS:
        full, kept = getattr(out, name)[1], getattr(cut, name)[1]
        keep = {int((full.weight - v).abs().argmin()) for v in kept.weight.detach()}
        gone = sorted(set(range(full.num_features)) - keep)
        with torch.no_grad():
            full.weight[gone] = 0
            full.bias[gone] = 0
    return out


def _trained(model: nn.Module, task, epochs: int) -> nn.Module:
    xt, yt = task.train.tensors
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 32):
            idx = order[i : i + 32]
            loss = F.cross_entropy(model(xt[idx]), yt[idx].long())
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model


if __name__ == "__main__":
    main()
