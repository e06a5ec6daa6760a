"""A tiny task for tests: digits at 16x16 and a narrow ResNet, teacher trained in about a second.

Used as ``--task tests.tiny_task:make_task`` (the CLI puts the working directory on sys.path).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from search.tasks import Task
from search.tasks.digits import load_splits
from search.tasks.models import ResNet
from search.tasks.teacher import load_or_train


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


class _FailsOnSecondPass(TensorDataset):
    """Training data that raises once, on the first item read for training after the
    teacher's pass.

    The checks' look at one item and the teacher's outputs (a full pass without autograd) come
    before any trial; the first read with autograd on after that pass is the first trial's
    distillation, which must fail and be recorded; later trials run normally.
    """

    def __init__(self, *tensors) -> None:
        super().__init__(*tensors)
        self.no_grad_reads = 0
        self.raised = False

    def __getitem__(self, index):
        if not torch.is_grad_enabled():
            self.no_grad_reads += 1
        elif not self.raised and self.no_grad_reads >= len(self):
            self.raised = True
            raise RuntimeError("boom: training data exploded on purpose")
        return super().__getitem__(index)


def make_failing_task(*, seed: int, cache_dir: Path) -> Task:
    task = make_task(seed=seed, cache_dir=cache_dir)
    task.train = _FailsOnSecondPass(*task.train.tensors)
    return task


def make_random_task(*, seed: int, cache_dir: Path) -> Task:
    """A narrow, untrained ResNet on 64 random 16x16 images: real trials, real ONNX files and
    real measurements in seconds, for tests that do not care about accuracy (it is at chance).
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 1, 16, 16, generator=g)
    y = torch.randint(0, 4, (64,), generator=g)
    torch.manual_seed(seed)
    model = ResNet(num_classes=4, widths=(8, 8, 8)).eval()
    return Task(
        name="random-tiny",
        model=model,
        train=TensorDataset(x, y),
        val=TensorDataset(x[:32], y[:32]),
        test=TensorDataset(x[32:], y[32:]),
        calibration=TensorDataset(x[:16], y[:16]),
        example_input=x[:1].clone(),
        ignored_layers=["fc"],
        key=f"random-tiny-seed{seed}",
    )
