"""The task protocol: what is being compressed, on which data, judged by which metric.

A task factory is a callable ``make_task(*, seed: int, cache_dir: Path) -> Task``. The built-in
tasks are written against the same protocol a user's own task implements.
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from search.tasks.outputs import Outputs


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of ``outputs`` (N x classes logits) against integer ``labels`` (N,).

    Raises:
        ValueError: outputs that are not (N, classes) for (N,) labels (one line).
    """
    out, lab = np.asarray(outputs), np.asarray(labels)
    if out.ndim != 2 or lab.shape != out.shape[:1]:
        raise ValueError(
            f"accuracy needs (N, classes) logits and (N,) labels, not {out.shape} and "
            f"{lab.shape}: return (N, classes) logits or give the task a metric for its output"
        )
    return float((out.argmax(axis=1) == lab).mean())


@dataclass
class Task:
    """A model to compress and the data to fine-tune, calibrate and score it with.

    Attributes:
        name: Short name used in cache keys and reports.
        model: The trained base model; it is the frozen teacher and the start of every student.
        train: Fine-tuning data; items are ``(input, label)``. Labels may be ``-1`` when unknown,
            then distillation uses only the teacher's soft labels.
        val: Held-out data the search selects on: per-epoch validation (early stopping), the
            sensitivity pass and the ``accuracy`` objective of each exported ONNX file. It must
            not overlap ``train``.
        test: Data the exported ONNX file is scored on for the figure to quote
            (``test_accuracy``); the search never selects on it.
        calibration: Inputs for quantization calibration (items as in ``train``).
        example_input: One input with batch size 1, used for export and latency; any dtype
            the model takes (float images, int64 token ids).
        metric: ``metric(outputs, labels) -> float`` to maximize; top-1 accuracy by default.
            ``outputs`` is what :attr:`outputs` reads from the model's raw outputs (one
            array, batch first, by default); ``labels`` the split's labels stacked (any
            shape: one class per item, per pixel or per token, boxes per image).
        metric_name: What the metric is called in reports.
        ignored_layers: Names of modules that must keep their output size (classifier heads).
        key: Identifies model architecture, data and seed in cache keys.
        separate_test: False when ``test`` is not data of its own (an image folder with a val/
            folder but no test/ folder): then no test figure is reported, and the report says
            why. ``test is val`` means the same.
        outputs: How the model's outputs are read: which are exported, distilled (and by
            which loss) and what the metric receives (:class:`~search.tasks.outputs.Outputs`;
            by default one tensor of class logits, distilled by Hinton's KD over dim 1).
    """

    name: str
    model: nn.Module
    train: Dataset
    val: Dataset
    test: Dataset
    calibration: Dataset
    example_input: torch.Tensor
    metric: Callable[[Any, np.ndarray], float] = accuracy
    metric_name: str = "accuracy"
    ignored_layers: list[str] = field(default_factory=list)
    key: str = ""
    separate_test: bool = True
    outputs: Outputs = field(default_factory=Outputs)

    @property
    def has_test_split(self) -> bool:
        """Whether ``test`` is data of its own, apart from ``val``."""
        return self.separate_test and self.test is not self.val


def stack(dataset: Dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All (or the first ``limit``) items of ``dataset`` as an input batch and the labels
    stacked (a vector of class indices, or one array per item of any shape)."""
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None and len(tensors) == 2:
        x, y = tensors
        return (x[:limit], y[:limit]) if limit else (x, y)
    size = len(cast(Sized, dataset))  # torch's Dataset declares no __len__; ours all have one
    n = size if limit is None else min(limit, size)
    xs, ys = zip(*(dataset[i] for i in range(n)), strict=True)
    return torch.stack(list(xs)), torch.stack([torch.as_tensor(y) for y in ys])
