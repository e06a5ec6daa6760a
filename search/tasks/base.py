"""The task protocol: what is being compressed, on which data, judged by which metric.

A task factory is a callable ``make_task(*, seed: int, cache_dir: Path) -> Task``. The built-in
tasks are written against the same protocol a user's own task implements.
"""

from __future__ import annotations

from collections.abc import Callable, Sized
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset


def accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of ``outputs`` (N x classes logits) against integer ``labels``."""
    return float((np.asarray(outputs).argmax(axis=1) == np.asarray(labels)).mean())


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
        example_input: One input with batch size 1, used for export and latency.
        metric: ``metric(outputs, labels) -> float`` to maximize; top-1 accuracy by default.
        metric_name: What the metric is called in reports.
        ignored_layers: Names of modules that must keep their output size (classifier heads).
        key: Identifies model architecture, data and seed in cache keys.
        separate_test: False when ``test`` is not data of its own (an image folder with a val/
            folder but no test/ folder): then no test figure is reported, and the report says
            why. ``test is val`` means the same.
    """

    name: str
    model: nn.Module
    train: Dataset
    val: Dataset
    test: Dataset
    calibration: Dataset
    example_input: torch.Tensor
    metric: Callable[[np.ndarray, np.ndarray], float] = accuracy
    metric_name: str = "accuracy"
    ignored_layers: list[str] = field(default_factory=list)
    key: str = ""
    separate_test: bool = True

    @property
    def has_test_split(self) -> bool:
        """Whether ``test`` is data of its own, apart from ``val``."""
        return self.separate_test and self.test is not self.val


def stack(dataset: Dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All (or the first ``limit``) items of ``dataset`` as an input batch and a label vector."""
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None and len(tensors) == 2:
        x, y = tensors
        return (x[:limit], y[:limit]) if limit else (x, y)
    size = len(cast(Sized, dataset))  # torch's Dataset declares no __len__; ours all have one
    n = size if limit is None else min(limit, size)
    xs, ys = zip(*(dataset[i] for i in range(n)), strict=True)
    return torch.stack(list(xs)), torch.as_tensor(ys)
