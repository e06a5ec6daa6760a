"""torchvision's detection and segmentation models as the study compresses them.

In eval mode a torchvision detector returns a list of dicts (boxes, scores, labels), made by
anchor decoding and NMS, which do not export with a dynamic batch (data-dependent shapes) and
would not quantize. So the study compresses and exports the *raw* forward, and decodes outside
the graph with torchvision's own code:

* one-stage detectors (SSD, SSDlite, RetinaNet, FCOS): :class:`OneStageDetector` normalises
  the images (``transform.image_mean/std``, inside the graph) and returns the head's tensors,
  ``cls_logits`` (N, A, C) and ``bbox_regression`` (N, A, 4), plus ``bbox_ctrness`` (N, A, 1)
  for FCOS; :class:`Decoder` then runs ``anchor_generator``, ``postprocess_detections``
  (box decoding, score threshold, NMS) and ``transform.postprocess`` exactly as the model's
  own ``forward`` does, so the metric receives the same list of dicts. Resizing is not part of
  it: the model sees images at the size the task gives them.
* segmentation models (FCN, DeepLabV3, LR-ASPP) return ``OrderedDict(out=..., aux=...)``:
  the study keeps ``out`` (N, C, H, W), already upsampled to the input size.
* two-stage detectors (Faster, Mask and Keypoint R-CNN) are compressed as a split: the first
  stage (backbone, FPN, RPN head) is exported and measured, the second (proposals, RoIAlign,
  box head) runs outside the graph, uncompressed (:mod:`search.tasks.two_stage`).

Distillation compares the student's raw head outputs with the teacher's
(:class:`~search.compress.kd_losses.DetectionKD`: softmax KL for SSD's classes, per-class
binary KL for RetinaNet's and FCOS's focal heads). Checked with torchvision 0.29: the raw
forward followed by the decoder gives bit-identical detections to ``model(x)`` at the model's
own input size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from search.compress.kd_losses import ClassKD, DetectionKD
from search.tasks.outputs import Outputs, select_outputs

DETECTIONS_PER_IMAGE = 100  # COCO's mAP counts at most 100 detections per image


def _kinds() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """(one-stage detectors, two-stage detectors, segmenters) of the installed torchvision;
    empty tuples without it."""
    try:
        from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
        from torchvision.models.detection.ssd import SSD
        from torchvision.models.segmentation import FCN, LRASPP, DeepLabV3
    except ImportError:
        return (), (), ()
    # Mask and Keypoint R-CNN are FasterRCNN subclasses.
    return (SSD, RetinaNet, FCOS), (FasterRCNN,), (FCN, DeepLabV3, LRASPP)


def head_keys(model: nn.Module) -> tuple[str, ...]:
    from torchvision.models.detection import FCOS

    if isinstance(model, FCOS):
        return ("cls_logits", "bbox_regression", "bbox_ctrness")
    return ("cls_logits", "bbox_regression")


class OneStageDetector(nn.Module):
    """The raw forward of a torchvision one-stage detector: normalised images -> backbone ->
    head tensors (see the module docstring). ``backbone`` and ``head`` are the detector's own
    modules (shared, and named as in the detector)."""

    def __init__(self, detector: Any) -> None:  # a torchvision detector (attributes untyped)
        super().__init__()
        self.backbone = detector.backbone
        self.head = detector.head
        self.keys = head_keys(detector)
        t = detector.transform
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(t.image_mean).view(1, -1, 1, 1), False)
        self.register_buffer("std", torch.tensor(t.image_std).view(1, -1, 1, 1), False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.backbone((x - self.mean) / self.std)
        levels = [feats] if isinstance(feats, torch.Tensor) else list(feats.values())
        out = self.head(levels)
        return tuple(out[k] for k in self.keys)


class Decoder:
    """Head tensors (numpy or torch) -> the detector's list of dicts, with torchvision's own
    anchors, box coder, score threshold, NMS and top-k (see the module docstring); the boxes,
    scores and labels come back as numpy arrays."""

    def __init__(self, detector: Any, size: tuple[int, int]) -> None:
        self.detector = detector
        self.size = (int(size[0]), int(size[1]))
        self.keys = head_keys(detector)
        raw = OneStageDetector(detector).eval()
        with torch.no_grad():
            feats = raw.backbone(torch.zeros(1, len(raw.mean.view(-1)), *self.size))
        levels = [feats] if isinstance(feats, torch.Tensor) else list(feats.values())
        self.level_sizes = [tuple(f.shape[-2:]) for f in levels]
        self._anchors: dict[int, list[torch.Tensor]] = {}

    def anchors(self, n: int) -> list[torch.Tensor]:
        from torchvision.models.detection.image_list import ImageList

        if n not in self._anchors:
            images = ImageList(torch.zeros(n, 1, *self.size), [self.size] * n)
            maps = [torch.zeros(n, 1, h, w) for h, w in self.level_sizes]
            with torch.no_grad():
                self._anchors[n] = self.detector.anchor_generator(images, maps)
        return self._anchors[n]

    def __call__(self, outputs: list[np.ndarray], batch: int = 64) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        n = len(outputs[0])
        for i in range(0, n, batch):
            found += self._decode([torch.as_tensor(o[i : i + batch]) for o in outputs])
        return found

    @torch.no_grad()
    def _decode(self, outputs: list[torch.Tensor]) -> list[dict[str, Any]]:
        from torchvision.models.detection.ssd import SSD

        head = dict(zip(self.keys, outputs, strict=True))
        n = len(outputs[0])
        anchors, sizes, m = self.anchors(n), [self.size] * n, self.detector
        if isinstance(m, SSD):
            det = m.postprocess_detections(head, anchors, sizes)
        else:  # RetinaNet, FCOS: split per level exactly as their forward does
            per_level = [h * w for h, w in self.level_sizes]
            k = head["cls_logits"].size(1) // sum(per_level)
            split = [p * k for p in per_level]
            levels = {key: list(v.split(split, dim=1)) for key, v in head.items()}
            det = m.postprocess_detections(levels, [list(a.split(split)) for a in anchors], sizes)
        det = m.transform.postprocess(det, sizes, sizes)
        return [{k: v.numpy() for k, v in d.items()} for d in det]


def final_layers(model: nn.Module) -> list[str]:
    """Names of the prediction convs whose output channels encode classes, anchors or box
    coordinates (they keep their size) of a torchvision detector or segmenter."""
    names = []
    for name, m in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        in_ssd = ".module_list." in f".{name}" and isinstance(m, nn.Conv2d)
        if last in ("cls_logits", "bbox_reg", "bbox_ctrness", "low_classifier", "high_classifier"):
            names.append(name)
        elif in_ssd and name.startswith("head."):
            names.append(name)  # SSD: every conv of its heads; SSDlite: filtered below
    if any(".module_list." in n for n in names):
        # SSDlite's prediction blocks are (depthwise conv+BN+act, 1x1 conv): only the last conv
        # of each block predicts; SSD's blocks are single convs.
        by_block: dict[str, str] = {}
        for n in names:
            block = n.split(".module_list.")[0] + "." + n.split(".module_list.")[1].split(".")[0]
            by_block[block] = n
        names = list(by_block.values())
    from torchvision.models.segmentation import FCN, DeepLabV3

    from search.tasks.two_stage import IGNORED, FirstStage

    _, two, _ = _kinds()
    if isinstance(model, FirstStage) or (two and isinstance(model, two)):
        return list(IGNORED)
    if isinstance(model, FCN | DeepLabV3):
        last = len(model.classifier) - 1
        names.append(f"classifier.{last}")
        if model.aux_classifier is not None:
            names.append(f"aux_classifier.{len(model.aux_classifier) - 1}")
    return names


def thaw_batchnorm(model: nn.Module) -> list[str]:
    """Replace torchvision's ``FrozenBatchNorm2d`` (its detectors use it with pretrained
    weights) by an eval-mode ``nn.BatchNorm2d`` with the same statistics, in place: the same
    function, which torch-pruning can cut (it does not know FrozenBatchNorm2d and leaves its
    buffers unpruned: "The size of tensor a (32) must match the size of tensor b (64)").
    Returns the names replaced."""
    try:
        from torchvision.ops.misc import FrozenBatchNorm2d
    except ImportError:
        return []
    done = []
    for name, parent in list(model.named_modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, FrozenBatchNorm2d):
                bn = nn.BatchNorm2d(len(child.weight), eps=child.eps)
                with torch.no_grad():
                    for key in ("weight", "bias", "running_mean", "running_var"):
                        getattr(bn, key).copy_(getattr(child, key))
                setattr(parent, child_name, bn.eval())
                done.append(f"{name}.{child_name}" if name else child_name)
    return done


def adapt(model: nn.Module, example: torch.Tensor, outputs: Outputs) -> tuple[nn.Module, Outputs]:
    """The model the study compresses and how its outputs are read, for a torchvision
    detector or segmenter; ``(model, outputs)`` unchanged for any other model or when the task
    already says how to read them (``outputs.select`` or ``decode`` set).

    A two-stage detector becomes its first stage (:mod:`search.tasks.two_stage`).
    """
    from search.tasks.two_stage import adapt_two_stage

    one, two, seg = _kinds()
    declared = outputs.select is not None or outputs.decode is not None
    if isinstance(model, one + two + seg):
        thaw_batchnorm(model)
    if two and isinstance(model, two) and not declared:
        return adapt_two_stage(model, example, outputs, DETECTIONS_PER_IMAGE)
    if one and isinstance(model, one) and not declared:
        return _detector(model, example, outputs)
    if seg and isinstance(model, seg) and not declared:
        return select_outputs(model, ("out",)), Outputs(
            select=("out",),
            loss=outputs.loss,
            exported=f"{type(model).__name__}'s forward up to its 'out' logits "
            "(upsampled to the input size); 'aux' dropped",
            scored="the 'out' logits (N, C, H, W) as an array",
        )
    return model, outputs


def _detector(model: Any, example: torch.Tensor, outputs: Outputs) -> tuple[nn.Module, Outputs]:
    from torchvision.models.detection.ssd import SSD

    model.eval()
    if hasattr(model, "detections_per_img"):
        model.detections_per_img = min(int(model.detections_per_img), DETECTIONS_PER_IMAGE)
    size = (int(example.shape[-2]), int(example.shape[-1]))
    keys = head_keys(model)
    centerness = 2 if len(keys) == 3 else None
    kd = DetectionKD(scores="softmax", centerness=centerness) if isinstance(model, SSD) else (
        DetectionKD(scores="sigmoid", centerness=centerness)
    )  # fmt: skip
    loss = outputs.loss if not isinstance(outputs.loss, ClassKD) else kd
    raw = OneStageDetector(model).eval()
    return raw, Outputs(
        names=keys,
        loss=loss,
        decode=Decoder(model, size),
        exported=f"{type(model).__name__}: normalisation, backbone and head up to the raw "
        f"{', '.join(keys)}; anchor decoding, score threshold and NMS run outside the graph "
        "(torchvision's postprocess_detections)",
        scored="the detector's list of dicts (boxes, scores, labels), decoded from the "
        f"measured file's outputs at {size[0]}x{size[1]}",
    )
