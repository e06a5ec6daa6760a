"""The built-in ``shapes_segmentation`` task: a small encoder-decoder segmenter on generated
images of squares, discs and triangles (:mod:`search.tasks.shapes`), scored by mean IoU.

A complete worked example of a segmentation task (docs/your-own-model.md): the model returns
one tensor of per-pixel class logits (N, 4, 64, 64), the labels are (N, 64, 64) class maps,
distillation is Hinton's KD per pixel plus cross-entropy on the masks
(:class:`~search.compress.kd_losses.ClassKD` over dim 1, chosen from those shapes), and the
metric is mean IoU over the classes (:func:`~search.tasks.metrics.mean_iou`). Nothing is
downloaded; the teacher is trained on first use (about a minute on two cores) and cached.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from search.tasks.base import Task
from search.tasks.metrics import mean_iou
from search.tasks.shapes import CLASSES, draw
from search.tasks.teacher import load_or_train

SIZE, SPLITS = 64, {"train": 1024, "val": 256, "test": 256}
TEACHER_EPOCHS = 8


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


class TinySegmenter(nn.Module):
    """Three stride-2 encoder blocks, a decoder that upsamples and concatenates the encoder's
    features (U-Net's skip connections), a 1x1 classifier and a bilinear upsample to the
    input size: (N, 3, H, W) -> (N, classes, H, W) logits."""

    def __init__(self, classes: int = len(CLASSES) + 1, width: int = 16) -> None:
        super().__init__()
        c1, c2, c3 = width, 2 * width, 4 * width
        self.enc1, self.enc2, self.enc3 = _block(3, c1, 2), _block(c1, c2, 2), _block(c2, c3, 2)
        self.mid = _block(c3, c3)
        self.dec2, self.dec1 = _block(c3 + c2, c2), _block(c2 + c1, c1)
        self.classifier = nn.Conv2d(c1, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.mid(self.enc3(e2))
        d2 = self.dec2(torch.cat([F.interpolate(e3, scale_factor=2.0), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, scale_factor=2.0), e1], 1))
        out = self.classifier(d1)
        return F.interpolate(out, scale_factor=2.0, mode="bilinear", align_corners=False)


def splits(seed: int) -> dict[str, TensorDataset]:
    """Train/val/test sets of (image, mask) pairs drawn from ``seed``."""
    out, offset = {}, 0
    for name, n in SPLITS.items():
        images, masks, _ = draw(n, size=SIZE, seed=seed * 1000 + offset)
        out[name], offset = TensorDataset(images, masks), offset + 1
    return out


def make_task(*, seed: int, cache_dir: Path) -> Task:
    data = splits(seed)
    key = f"shapes-segmentation-w16-e{TEACHER_EPOCHS}-seed{seed}"
    teacher = load_or_train(
        key=key,
        build=TinySegmenter,
        train=data["train"],
        val=data["val"],
        epochs=TEACHER_EPOCHS,
        seed=seed,
        cache_dir=cache_dir,
        batch_size=32,
        metric=mean_iou,
    )
    x, y = data["train"].tensors
    return Task(
        name="shapes_segmentation",
        model=teacher,
        train=data["train"],
        val=data["val"],
        test=data["test"],
        calibration=TensorDataset(x[:128], y[:128]),
        example_input=data["test"].tensors[0][:1].clone(),
        metric=mean_iou,
        metric_name="mIoU",
        ignored_layers=["classifier"],
        key=key,
    )
