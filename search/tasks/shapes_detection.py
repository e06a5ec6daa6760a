"""The built-in ``shapes_detection`` task: a small centre-point detector on generated images
of squares, discs and triangles (:mod:`search.tasks.shapes`), scored by COCO mAP.

A complete worked example of a detection task (docs/your-own-model.md):

* the model returns two raw tensors, class heatmap logits (N, 3, 16, 16) and box sizes
  (N, 4, 16, 16): the distances from each cell's centre to the box's left, top, right and
  bottom edges in units of the stride (4 px), as in Zhou et al., "Objects as Points"
  (CenterNet, 2019) with FCOS's ltrb boxes;
* :func:`decode` turns them into detections outside the exported graph: peaks of the sigmoid
  heatmap (a 3x3 max-pool instead of NMS, as CenterNet does), at most 50 per image;
* labels are (N, 3, 5) rows ``[x1, y1, x2, y2, class]`` per image (class -1: no object);
* distillation is :class:`~search.compress.kd_losses.DetectionKD` (binary KL on the heatmap,
  L1 on the boxes weighted by the teacher's confidence); the metric is COCO mAP at IoU
  0.50:0.95 (:func:`~search.tasks.metrics.detection_map`).

The teacher is trained on first use with CenterNet's penalty-reduced focal loss on Gaussian
heatmaps plus L1 on the boxes at object centres (about two minutes on two cores), then cached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from search.compress.kd_losses import DetectionKD
from search.tasks.base import Task
from search.tasks.metrics import detection_map
from search.tasks.outputs import Outputs
from search.tasks.shapes import CLASSES, draw
from search.tasks.teacher import load_or_train

SIZE, STRIDE, TOP_K, MIN_SCORE = 64, 4, 50, 0.05
SPLITS = {"train": 1536, "val": 256, "test": 256}
TEACHER_EPOCHS = 12


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
    )


class TinyCenterNet(nn.Module):
    """A stride-8 backbone upsampled to stride 4 with a skip connection, and two heads:
    (N, 3, H, W) -> heatmap logits (N, classes, H/4, W/4), boxes (N, 4, H/4, W/4)."""

    def __init__(self, classes: int = len(CLASSES), width: int = 16) -> None:
        super().__init__()
        w = width
        self.stem, self.down4 = _block(3, w, 2), _block(w, 2 * w, 2)
        self.down8 = nn.Sequential(_block(2 * w, 4 * w, 2), _block(4 * w, 4 * w))
        self.fuse = _block(6 * w, 4 * w)
        scores = nn.Conv2d(4 * w, classes, 1)
        nn.init.constant_(cast(torch.Tensor, scores.bias), -2.19)  # CenterNet's prior: p = 0.1
        self.heatmap = nn.Sequential(_block(4 * w, 4 * w), scores)
        self.boxes = nn.Sequential(_block(4 * w, 4 * w), nn.Conv2d(4 * w, 4, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f4 = self.down4(self.stem(x))
        f8 = self.down8(f4)
        f = self.fuse(torch.cat([F.interpolate(f8, scale_factor=2.0), f4], 1))
        return self.heatmap(f), self.boxes(f)


def _targets(
    labels: torch.Tensor, grid: int, classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gaussian heatmaps (N, classes, g, g), ltrb box targets (N, 4, g, g) and the mask of the
    centre cells (N, g, g) of ``labels`` (N, K, 5)."""
    n = len(labels)
    centres = (torch.arange(grid, dtype=torch.float32) + 0.5) * STRIDE
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    heat = torch.zeros(n, classes, grid, grid)
    box = torch.zeros(n, 4, grid, grid)
    mask = torch.zeros(n, grid, grid, dtype=torch.bool)
    for i, j in (labels[..., 4] >= 0).nonzero().tolist():
        x1, y1, x2, y2, c = labels[i, j].tolist()
        mx, my = (x1 + x2) / 2, (y1 + y2) / 2
        sigma = max((x2 - x1) / 6, STRIDE / 2)
        g = torch.exp(-((cx - mx) ** 2 + (cy - my) ** 2) / (2 * sigma * sigma))
        heat[i, int(c) - 1] = torch.maximum(heat[i, int(c) - 1], g)
        r, k = min(int(my // STRIDE), grid - 1), min(int(mx // STRIDE), grid - 1)
        heat[i, int(c) - 1, r, k] = 1.0
        edges = torch.tensor([cx[r, k] - x1, cy[r, k] - y1, x2 - cx[r, k], y2 - cy[r, k]])
        box[i, :, r, k], mask[i, r, k] = edges / STRIDE, True
    return heat, box, mask


def centernet_loss(outputs: tuple[torch.Tensor, ...], labels: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (alpha 2, beta 4) on the heatmap plus L1 on the
    boxes at object centres: the teacher's supervised loss."""
    logits, boxes = outputs[0], outputs[1]
    heat, box, mask = (t.to(logits.device) for t in _targets(labels.cpu(), logits.shape[-1],
                                                             logits.shape[1]))  # fmt: skip
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1.0)
    focal = torch.where(
        pos, -((1 - p) ** 2) * torch.log(p), -((1 - heat) ** 4) * p**2 * torch.log(1 - p)
    ).sum()
    count = pos.sum().clamp_min(1)
    l1 = (boxes - box).abs().sum(1)[mask].sum()
    return (focal + l1) / count


@torch.no_grad()
def decode(outputs: list[np.ndarray]) -> list[dict[str, Any]]:
    """Heatmap peaks (3x3 max-pool) with score >= 0.05, at most 50 per image, as detections:
    boxes (D, 4) xyxy in pixels, scores (D,), labels (D,) classes 1-3."""
    heat = torch.sigmoid(torch.as_tensor(outputs[0]).float())
    boxes = torch.as_tensor(outputs[1]).float()
    n, classes, g, _ = heat.shape
    peaks = heat * (heat == F.max_pool2d(heat, 3, stride=1, padding=1))
    scores, idx = peaks.reshape(n, -1).topk(min(TOP_K, classes * g * g))
    found = []
    for i in range(n):
        keep = scores[i] >= MIN_SCORE
        cls, cell = idx[i][keep] // (g * g), idx[i][keep] % (g * g)
        r, k = cell // g, cell % g
        cx, cy = (k.float() + 0.5) * STRIDE, (r.float() + 0.5) * STRIDE
        ltrb = boxes[i][:, r, k].clamp_min(0) * STRIDE
        xyxy = torch.stack([cx - ltrb[0], cy - ltrb[1], cx + ltrb[2], cy + ltrb[3]], 1)
        found.append({"boxes": xyxy.clamp(0, g * STRIDE).numpy(),
                      "scores": scores[i][keep].numpy(), "labels": (cls + 1).numpy()})  # fmt: skip
    return found


def mean_average_precision(
    outputs: tuple[np.ndarray, ...] | list[Any], labels: np.ndarray
) -> float:
    """COCO mAP of raw (heatmap, boxes) outputs: the teacher's validation figure."""
    return detection_map(decode(list(outputs)), labels)


def splits(seed: int) -> dict[str, TensorDataset]:
    """Train/val/test sets of (image, boxes) pairs drawn from ``seed``."""
    out, offset = {}, 0
    for name, n in SPLITS.items():
        images, _, boxes = draw(n, size=SIZE, seed=seed * 1000 + 100 + offset, max_size=28)
        out[name], offset = TensorDataset(images, boxes), offset + 1
    return out


def make_task(*, seed: int, cache_dir: Path) -> Task:
    data = splits(seed)
    key = f"shapes-detection-w16-e{TEACHER_EPOCHS}-seed{seed}"
    teacher = load_or_train(
        key=key,
        build=TinyCenterNet,
        train=data["train"],
        val=data["val"],
        epochs=TEACHER_EPOCHS,
        seed=seed,
        cache_dir=cache_dir,
        batch_size=32,
        criterion=centernet_loss,
        metric=mean_average_precision,
        read=tuple,
    )
    x, y = data["train"].tensors
    return Task(
        name="shapes_detection",
        model=teacher,
        train=data["train"],
        val=data["val"],
        test=data["test"],
        calibration=TensorDataset(x[:128], y[:128]),
        example_input=data["test"].tensors[0][:1].clone(),
        metric=detection_map,
        metric_name="mAP",
        ignored_layers=["heatmap.1", "boxes.1"],
        key=key,
        outputs=Outputs(
            names=("heatmap", "boxes"),
            loss=DetectionKD(scores="sigmoid", layout="channels"),
            decode=decode,
            exported="TinyCenterNet up to its raw heatmap logits and box sizes; peak "
            "extraction (3x3 max-pool) and box decoding run outside the graph",
            scored="detections (boxes, scores, labels) decoded from the measured file",
        ),
    )
