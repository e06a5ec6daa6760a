"""A tiny task for tests: digits at 16x16 and a narrow ResNet, teacher trained in about a second.

Used as ``--task tests.tiny_task:make_task`` (the CLI puts the working directory on sys.path).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import TensorDataset

from search.models import ResNet
from search.tasks import Task, accuracy
from search.tasks.digits import load_splits
from search.teacher import load_or_train


def make_task(*, seed: int, cache_dir: Path) -> Task:
    splits = load_splits(seed, size=16)
    teacher = load_or_train(
        key=f"tiny-resnet-seed{seed}",
        build=lambda: ResNet(num_classes=10, widths=(8, 16, 16), blocks_per_stage=1),
        train=splits["train"],
        val=splits["val"],
        epochs=2,
        seed=seed,
        cache_dir=cache_dir,
    )
    x, y = splits["train"].tensors
    return Task(
        name="tiny",
        model=teacher,
        train=TensorDataset(x[:256], y[:256]),
        val=splits["val"],
        test=splits["test"],
        calibration=TensorDataset(x[:64], y[:64]),
        example_input=x[:1].clone(),
        ignored_layers=["fc"],
        key=f"tiny-seed{seed}",
    )


_calls = {"n": 0}


def _metric_failing_second_call(outputs: np.ndarray, labels: np.ndarray) -> float:
    # Calls 1 and 2 score the baseline (validation, then its ONNX file); call 3 is the first
    # trial's first epoch, which must fail and be recorded.
    _calls["n"] += 1
    if _calls["n"] == 3:
        raise RuntimeError("boom: metric exploded on purpose")
    return accuracy(outputs, labels)


def make_failing_task(*, seed: int, cache_dir: Path) -> Task:
    task = make_task(seed=seed, cache_dir=cache_dir)
    _calls["n"] = 0
    task.metric = _metric_failing_second_call
    return task
