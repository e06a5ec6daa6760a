"""Distillation losses that fit what a model returns: class logits, per-pixel or per-token
logits, detection heads, or any tensors.

Every loss reads the student's and the teacher's raw outputs (a tuple of tensors, batch first:
what the ONNX file exports) and the batch's labels (any shape; negative entries mean "no label
here"), and returns a scalar. The student is a pruned or factorised copy of the teacher with
the same output layout, so its outputs correspond one to one with the teacher's (per anchor,
per pixel, per token) and no label matching is needed: detection and raw-output losses learn
from the teacher alone and work on unlabeled data.

* :class:`ClassKD` — Hinton et al., "Distilling the Knowledge in a Neural Network" (2015):
  ``(1 - alpha) * CE(s, y) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))`` over one class
  dimension, averaged over every other position. (N, C) classifiers; (N, C, H, W)
  segmenters with (N, H, W) labels: the pixel-wise term of Liu et al., "Structured Knowledge
  Distillation for Semantic Segmentation" (CVPR 2019); (N, L, C) token classifiers with
  (N, L) labels (``class_dim=-1``).
* :class:`DetectionKD` — class scores by KL (softmax heads, SSD; or per-class binary KL for
  sigmoid/focal heads, RetinaNet, FCOS, CenterNet: Yang et al., "Bridging Cross-task Protocol
  Inconsistency for Distillation in Dense Object Detection", ICCV 2023, arXiv 2308.14286) plus
  an L1 regression of the box outputs weighted by the teacher's foreground probability, so
  the thousands of background anchors do not dominate (the teacher's regression as the
  target: Chen et al., "Learning Efficient Object Detection Models with Knowledge
  Distillation", NeurIPS 2017; the foreground weighting is our simplification of Zheng et al.,
  "Localization Distillation for Dense Object Detection", CVPR 2022); FCOS centerness by BCE.
* :class:`OutputMSE` — mean squared error between student and teacher outputs (logit
  matching: Ba and Caruana, "Do Deep Nets Really Need to be Deep?", NeurIPS 2014), for outputs
  whose dimensions are not classes.
* :class:`CustomLoss` — a task's own function ``loss(student, teacher, labels, *, temperature,
  alpha) -> scalar``.

Example:
    >>> import torch
    >>> s = t = (torch.zeros(2, 3),)
    >>> float(ClassKD()(s, t, torch.tensor([0, 1]), temperature=2.0, alpha=1.0))
    0.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

if TYPE_CHECKING:
    import torch

Outputs = Sequence["torch.Tensor"]


class DistillLoss(Protocol):
    """A distillation loss: student and teacher outputs (tuples of tensors), the labels."""

    def __call__(
        self,
        student: Outputs,
        teacher: Outputs,
        labels: torch.Tensor,
        *,
        temperature: float,
        alpha: float,
    ) -> torch.Tensor: ...

    def describe(self) -> str: ...


def _positions_last(x: torch.Tensor, dim: int) -> torch.Tensor:
    """``x`` with ``dim`` moved last and every other dim but the batch flattened:
    (N, positions, size)."""
    moved = x.movedim(dim, -1)
    return moved.reshape(moved.shape[0], -1, moved.shape[-1])


@dataclass(frozen=True)
class ClassKD:
    """Hinton's KD over the class dimension ``class_dim`` of output ``output``, plus
    cross-entropy on the labels where they are known (>= 0).

    Labels are one class per position: the output's shape without ``class_dim`` ((N,) for
    (N, C) logits, (N, H, W) for (N, C, H, W)), or anything else when no item is labelled
    (the teacher's soft labels alone, e.g. ``-1`` per item).
    """

    class_dim: int = 1
    output: int = 0

    def describe(self) -> str:
        where = "" if self.output == 0 else f" of output {self.output}"
        return f"class KD (Hinton) over dim {self.class_dim}{where} + CE on known labels"

    def label_shape(self, logits: torch.Tensor) -> tuple[int, ...]:
        shape = list(logits.shape)
        del shape[self.class_dim]
        return tuple(shape)

    def check(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Raise ValueError (one line) unless ``labels`` fit ``logits`` or carry no label."""
        if labels.is_floating_point() and bool((labels >= 0).any()):
            raise ValueError(
                f"labels are {labels.dtype} {tuple(labels.shape)}; class labels are integers"
            )
        want = self.label_shape(logits)
        if tuple(labels.shape) != want and bool((labels >= 0).any()):
            raise ValueError(
                f"labels {tuple(labels.shape)} do not fit logits {tuple(logits.shape)} with "
                f"classes on dim {self.class_dim}: one class per position needs labels {want}"
            )

    def supervised(self, student: Outputs, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy on the known labels (teacher training)."""
        logits = student[self.output].float()
        self.check(logits, labels)
        return self._ce(_positions_last(logits, self.class_dim), labels)

    @staticmethod
    def _ce(flat: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of (N, positions, C) logits on the positions whose label is >= 0."""
        import torch.nn.functional as F

        known = labels.reshape(-1) >= 0
        logits = flat.reshape(-1, flat.shape[-1])[known]
        return F.cross_entropy(logits, labels.reshape(-1)[known].long())

    def __call__(
        self,
        student: Outputs,
        teacher: Outputs,
        labels: torch.Tensor,
        *,
        temperature: float,
        alpha: float,
    ) -> torch.Tensor:
        import torch.nn.functional as F

        s = student[self.output].float()
        self.check(s, labels)
        temp = temperature
        s_flat = _positions_last(s, self.class_dim)
        t_flat = _positions_last(teacher[self.output].float(), self.class_dim)
        kl = F.kl_div(
            F.log_softmax(s_flat / temp, dim=-1), F.log_softmax(t_flat / temp, dim=-1),
            log_target=True, reduction="none",
        ).sum(-1).mean() * (temp * temp)  # fmt: skip
        if tuple(labels.shape) != self.label_shape(s):
            return kl  # labels of another shape carry no class per position: teacher only
        known = labels >= 0
        if not bool(known.any()):
            return kl
        ce = self._ce(s_flat, labels)
        share = known.float().mean()
        # Unlabelled positions carry only the teacher's signal.
        return share * ((1 - alpha) * ce + alpha * kl) + (1 - share) * kl


@dataclass(frozen=True)
class OutputMSE:
    """Mean squared error between each student output and the teacher's, averaged over the
    outputs (``outputs``: which ones; all by default). Labels are not read."""

    outputs: tuple[int, ...] | None = None

    def describe(self) -> str:
        which = "all outputs" if self.outputs is None else f"outputs {list(self.outputs)}"
        return f"MSE to the teacher's {which} (logit matching)"

    def __call__(
        self,
        student: Outputs,
        teacher: Outputs,
        labels: torch.Tensor,
        *,
        temperature: float,
        alpha: float,
    ) -> torch.Tensor:
        import torch.nn.functional as F

        picks = range(len(student)) if self.outputs is None else self.outputs
        losses = [F.mse_loss(student[i].float(), teacher[i].float()) for i in picks]
        return sum(losses[1:], losses[0])


@dataclass(frozen=True)
class DetectionKD:
    """Dense-detector distillation on raw head outputs (see the module docstring).

    Attributes:
        scores: ``softmax`` (a background class at index 0: SSD, SSDlite) or ``sigmoid``
            (one binary score per class: RetinaNet, FCOS, CenterNet heatmaps).
        classes, boxes: Output indices of the class logits and the box regression.
        centerness: Output index of FCOS's centerness logits, or None.
        layout: ``anchors`` for (N, A, C) / (N, A, 4) outputs (torchvision's heads);
            ``channels`` for (N, C, H, W) / (N, 4, H, W) maps (CenterNet-style).
        box_weight: Weight of the box term.
    """

    scores: Literal["softmax", "sigmoid"] = "sigmoid"
    classes: int = 0
    boxes: int = 1
    centerness: int | None = None
    layout: Literal["anchors", "channels"] = "anchors"
    box_weight: float = 1.0

    def describe(self) -> str:
        kl = "softmax KL" if self.scores == "softmax" else "per-class binary KL"
        ctr = " + centerness BCE" if self.centerness is not None else ""
        return f"detection KD: class scores by {kl} + teacher-weighted L1 on boxes{ctr}"

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        return _positions_last(x.float(), 1 if self.layout == "channels" else -1)

    def __call__(
        self,
        student: Outputs,
        teacher: Outputs,
        labels: torch.Tensor,
        *,
        temperature: float,
        alpha: float,
    ) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        T = temperature
        s_cls, t_cls = self._flat(student[self.classes]), self._flat(teacher[self.classes])
        if self.scores == "softmax":
            cls = F.kl_div(
                F.log_softmax(s_cls / T, -1), F.log_softmax(t_cls / T, -1),
                log_target=True, reduction="none",
            ).sum(-1).mean()  # fmt: skip
            weight = t_cls.softmax(-1)[..., 1:].amax(-1)
        else:
            p = torch.sigmoid(t_cls / T)
            # Binary KL = BCE against the soft target minus the target's own entropy.
            kl = F.binary_cross_entropy_with_logits(s_cls / T, p, reduction="none")
            kl = kl - F.binary_cross_entropy_with_logits(t_cls / T, p, reduction="none")
            cls = kl.sum(-1).mean()
            weight = torch.sigmoid(t_cls).amax(-1)
        weight = weight.detach()
        s_box, t_box = self._flat(student[self.boxes]), self._flat(teacher[self.boxes])
        box = ((s_box - t_box).abs().sum(-1) * weight).sum() / weight.sum().clamp_min(1e-6)
        loss = cls * (T * T) + self.box_weight * box
        if self.centerness is not None:
            s_ctr, t_ctr = student[self.centerness].float(), teacher[self.centerness].float()
            loss = loss + F.binary_cross_entropy_with_logits(s_ctr, torch.sigmoid(t_ctr))
        return loss


@dataclass(frozen=True)
class CustomLoss:
    """A task's own loss ``fn(student, teacher, labels, *, temperature, alpha) -> scalar``."""

    fn: Callable[..., torch.Tensor]

    def describe(self) -> str:
        return f"the task's own loss {getattr(self.fn, '__name__', type(self.fn).__name__)}"

    def __call__(
        self,
        student: Outputs,
        teacher: Outputs,
        labels: torch.Tensor,
        *,
        temperature: float,
        alpha: float,
    ) -> torch.Tensor:
        return self.fn(student, teacher, labels, temperature=temperature, alpha=alpha)


def as_loss(loss: DistillLoss | Callable[..., torch.Tensor]) -> DistillLoss:
    """``loss`` as a :class:`DistillLoss` (a plain function becomes a :class:`CustomLoss`)."""
    if isinstance(loss, ClassKD | OutputMSE | DetectionKD | CustomLoss):
        return loss
    return CustomLoss(loss)
