"""Tiny tasks of our own for each kind of model that is not a classifier returning one tensor:
a segmenter that returns a dict, a detector with two raw outputs decoded outside the graph, and
a transformer on int64 token ids. Untrained (seconds, not minutes): the tests check that trials
prune, quantize and report the task's metric, not how good the metric is.

Used as ``--task tests.dense_tasks:make_seg_task`` (and ``make_det_task``, ``make_ids_task``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from search.compress.kd_losses import DetectionKD
from search.tasks import Outputs, Task
from search.tasks.metrics import detection_map, pixel_accuracy, token_accuracy
from search.tasks.shapes import draw
from search.tasks.shapes_detection import decode


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU())


class DictSegmenter(nn.Module):
    """Returns ``{"out": (N, 4, H, W), "aux": ...}`` as torchvision's segmenters do."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(3, 16, 2), _conv(16, 16))
        self.classifier = nn.Conv2d(16, 4, 1)
        self.up = nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False)

    def forward(self, x):
        out = self.up(self.classifier(self.body(x)))
        return {"out": out, "aux": out.detach().mean(1)}


class TwoHeadDetector(nn.Module):
    """Heatmap logits (N, 3, H/4, W/4) and ltrb boxes (N, 4, H/4, W/4), as shapes_detection."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(3, 16, 2), _conv(16, 16, 2), _conv(16, 16))
        self.heatmap, self.boxes = nn.Conv2d(16, 3, 1), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        f = self.body(x)
        return self.heatmap(f), self.boxes(f)


class IdsTagger(nn.Module):
    """int64 ids (N, 12) -> per-token logits (N, 12, 3) through a transformer layer."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(20, 32)
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.head = nn.Linear(32, 3)

    def forward(self, ids):
        return self.head(self.encoder(self.embed(ids)))


def _task(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kw) -> Task:
    return Task(
        name=name, model=model.eval(), train=TensorDataset(x[:48], y[:48]),
        val=TensorDataset(x[48:64], y[48:64]), test=TensorDataset(x[64:], y[64:]),
        calibration=TensorDataset(x[:16], y[:16]), example_input=x[:1].clone(), key=name, **kw,
    )  # fmt: skip


def make_seg_task(*, seed: int, cache_dir: Path) -> Task:
    images, masks, _ = draw(80, size=32, seed=seed)
    torch.manual_seed(seed)
    return _task("tiny-seg", DictSegmenter(), images, masks, metric=pixel_accuracy,
                 metric_name="pixel_accuracy", outputs=Outputs(select=("out",)),
                 ignored_layers=["classifier"])  # fmt: skip


def make_det_task(*, seed: int, cache_dir: Path) -> Task:
    images, _, boxes = draw(80, size=32, seed=seed, max_size=16)
    torch.manual_seed(seed)
    outputs = Outputs(names=("heatmap", "boxes"), decode=decode,
                      loss=DetectionKD(scores="sigmoid", layout="channels"))  # fmt: skip
    heads = ["heatmap", "boxes"]
    return _task("tiny-det", TwoHeadDetector(), images, boxes, metric=detection_map,
                 metric_name="mAP", outputs=outputs, ignored_layers=heads)  # fmt: skip


def make_ids_task(*, seed: int, cache_dir: Path) -> Task:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 20, (80, 12), generator=g)
    tags = ids % 3
    torch.manual_seed(seed)
    return _task("tiny-ids", IdsTagger(), ids, tags, metric=token_accuracy,
                 metric_name="token_accuracy", ignored_layers=["head"])  # fmt: skip
