"""A tiny task for tests: digits at 16x16 and a narrow ResNet, teacher trained in about a second.

Used as ``--task tests.tiny_task:make_task`` (the CLI puts the working directory on sys.path).
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import TensorDataset

from search.models import ResNet
from search.tasks import Task
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


class _FailsOnSecondPass(TensorDataset):
    """Training data that raises on the first item of its second pass.

    The first pass computes the teacher's logits before any trial; the second is the first
    trial's distillation, which must fail and be recorded; later trials run normally.
    """

    def __init__(self, *tensors) -> None:
        super().__init__(*tensors)
        self.reads = 0

    def __getitem__(self, index):
        self.reads += 1
        if self.reads == len(self) + 1:
            raise RuntimeError("boom: training data exploded on purpose")
        return super().__getitem__(index)


def make_failing_task(*, seed: int, cache_dir: Path) -> Task:
    task = make_task(seed=seed, cache_dir=cache_dir)
    task.train = _FailsOnSecondPass(*task.train.tensors)
    return task
