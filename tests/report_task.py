"""A tiny task for the report and export tests: a narrow ResNet on 64 random 16x16 images.

Used as ``tests.report_task:make_task``; the model is untrained (accuracy is at chance), which is
all the report and export code needs: real trials, real ONNX files, real measurements.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from search.models import ResNet
from search.tasks import Task


def make_task(*, seed: int, cache_dir: Path) -> Task:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 1, 16, 16, generator=g)
    y = torch.randint(0, 4, (64,), generator=g)
    torch.manual_seed(seed)
    model = ResNet(num_classes=4, widths=(8, 8, 8)).eval()
    data = TensorDataset(x, y)
    return Task(
        name="report-tiny",
        model=model,
        train=data,
        val=TensorDataset(x[:32], y[:32]),
        test=TensorDataset(x[32:], y[32:]),
        calibration=TensorDataset(x[:16], y[:16]),
        example_input=x[:1].clone(),
        ignored_layers=["fc"],
        key=f"report-tiny-seed{seed}",
    )
