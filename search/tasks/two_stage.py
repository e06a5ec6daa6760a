"""torchvision's two-stage detectors (Faster, Mask and Keypoint R-CNN) compressed as a split:
the first stage is the model the study compresses, exports and measures; the second stage
runs outside the graph, uncompressed.

The full model does not export with a dynamic batch: its second stage runs on the proposals
left after the RPN's NMS, a data-dependent number (torch.export:
``GuardOnDataDependentSymNode ... _batched_nms_coordinate_trick``). So:

* :class:`FirstStage` (exported, pruned, quantized, measured): the images normalised, the
  backbone with its FPN, and the RPN head. Its outputs are the FPN levels (N, 256, h, w), the
  RPN objectness (N, A, h, w) and box deltas (N, 4A, h, w) per level.
* :class:`SecondStage` (outside the graph, in torch, with the detector's own code and
  weights): anchors, proposal decoding and filtering (``rpn.filter_proposals``: top-k, NMS),
  RoIAlign and the box (and mask or keypoint) head (``roi_heads``), then
  ``transform.postprocess``; the metric receives the detector's list of dicts.

The box head (about three quarters of Faster R-CNN's parameters: TwoMLPHead's fc6/fc7 behind
RoIAlign) is neither compressed nor timed: the measured latency is the first stage's. The FPN
and the RPN head keep their widths (the second stage reads the FPN's 256 channels); the
backbone body is pruned. Distillation is feature imitation on the FPN levels and the RPN
outputs (mean squared error to the teacher's: the hint loss of Romero et al., "FitNets", ICLR
2015, without an adapter since the widths match). Checked with torchvision 0.29 on
``fasterrcnn_mobilenet_v3_large_320_fpn``: the first stage followed by the second gives the
detections of ``model(x)`` at the model's own input size.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch
from torch import nn

from search.compress.kd_losses import ClassKD, OutputMSE
from search.tasks.outputs import Outputs

IGNORED = ["backbone.fpn", "rpn.head"]  # they keep their widths: the second stage reads them


class FirstStage(nn.Module):
    """Normalised images -> backbone + FPN -> RPN head: the FPN levels, then the objectness
    and the box deltas of every level (one output each)."""

    def __init__(self, detector: Any) -> None:  # a torchvision GeneralizedRCNN
        super().__init__()
        self.backbone = detector.backbone
        self.rpn = nn.ModuleDict({"head": detector.rpn.head})  # named as in the detector
        t = detector.transform
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(t.image_mean).view(1, -1, 1, 1), False)
        self.register_buffer("std", torch.tensor(t.image_std).view(1, -1, 1, 1), False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        levels = list(self.backbone((x - self.mean) / self.std).values())
        objectness, deltas = self.rpn["head"](levels)
        return (*levels, *objectness, *deltas)


class SecondStage:
    """The first stage's outputs (numpy) -> the detector's list of dicts, with numpy arrays
    (see the module docstring)."""

    def __init__(self, detector: Any, size: tuple[int, int], levels: list[str]) -> None:
        self.detector = detector.eval()
        self.size = (int(size[0]), int(size[1]))
        self.levels = levels

    def __call__(self, outputs: list[np.ndarray], batch: int = 16) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for i in range(0, len(outputs[0]), batch):
            found += self._decode([torch.as_tensor(o[i : i + batch]) for o in outputs])
        return found

    @torch.no_grad()
    def _decode(self, outputs: list[torch.Tensor]) -> list[dict[str, Any]]:
        from torchvision.models.detection.image_list import ImageList
        from torchvision.models.detection.rpn import concat_box_prediction_layers

        k, m = len(self.levels), self.detector
        features = OrderedDict(zip(self.levels, outputs[:k], strict=True))
        objectness, deltas = list(outputs[k : 2 * k]), list(outputs[2 * k : 3 * k])
        n = len(outputs[0])
        sizes = [self.size] * n
        images = ImageList(torch.zeros(n, 1, *self.size), sizes)
        rpn = m.rpn
        anchors = rpn.anchor_generator(images, list(features.values()))
        per_level = [o[0].numel() for o in objectness]
        scores, box_deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = rpn.box_coder.decode(box_deltas, anchors).view(n, -1, 4)
        boxes, _ = rpn.filter_proposals(proposals, scores, sizes, per_level)
        detections, _ = m.roi_heads(features, boxes, sizes)
        detections = m.transform.postprocess(detections, sizes, sizes)
        keep = ("boxes", "scores", "labels")
        return [{key: d[key].numpy() for key in keep} for d in detections]


def adapt_two_stage(
    model: Any, example: torch.Tensor, outputs: Outputs, detections_per_image: int
) -> tuple[nn.Module, Outputs]:
    """:class:`FirstStage` and how its outputs are read (:class:`SecondStage` decodes)."""
    model.eval()
    model.roi_heads.detections_per_img = min(
        int(model.roi_heads.detections_per_img), detections_per_image
    )
    first = FirstStage(model).eval()
    with torch.no_grad():
        levels = list(model.backbone(torch.zeros(1, example.shape[1], *example.shape[-2:])))
    names = (
        *(f"fpn_{n}" for n in levels),
        *(f"objectness_{n}" for n in levels),
        *(f"deltas_{n}" for n in levels),
    )
    size = (int(example.shape[-2]), int(example.shape[-1]))
    loss = outputs.loss if not isinstance(outputs.loss, ClassKD) else OutputMSE()
    return first, Outputs(
        names=names,
        loss=loss,
        decode=SecondStage(model, size, [str(n) for n in levels]),
        exported=f"{type(model).__name__}'s first stage: normalisation, backbone, FPN and RPN "
        "head; proposals (NMS), RoIAlign and the box head run outside the graph in torch, "
        "neither compressed nor timed",
        scored="the detector's list of dicts, from the measured first stage's outputs and "
        f"the uncompressed second stage at {size[0]}x{size[1]}",
    )
