"""The built-in ``digits`` task: scikit-learn's 8x8 digits upscaled to 32x32, a small ResNet.

The data ships inside scikit-learn, so nothing is downloaded. Splits (60/20/20, stratified) are
fixed by the seed. The teacher is trained on first use and cached by task, architecture and seed.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import TensorDataset

from search.tasks.base import Task
from search.tasks.models import ResNet, ResNetArch
from search.tasks.teacher import load_or_train

ARCH: ResNetArch = {"widths": (32, 64, 128), "blocks_per_stage": 2}
TEACHER_EPOCHS = 6
SIZE = 32


def load_splits(seed: int, size: int = SIZE) -> dict[str, TensorDataset]:
    """Train/val/test splits of digits as normalized ``N x 1 x size x size`` tensors."""
    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x - 0.3) / 0.4
    y = torch.tensor(digits.target, dtype=torch.long)
    idx = list(range(len(y)))
    train_idx, rest = train_test_split(idx, test_size=0.4, random_state=seed, stratify=y)
    val_idx, test_idx = train_test_split(rest, test_size=0.5, random_state=seed, stratify=y[rest])
    return {
        name: TensorDataset(x[ids], y[ids])
        for name, ids in (("train", train_idx), ("val", val_idx), ("test", test_idx))
    }


def make_task(*, seed: int, cache_dir: Path) -> Task:
    arch = f"resnet-w{'-'.join(map(str, ARCH['widths']))}-b{ARCH['blocks_per_stage']}"
    return resnet_task(
        name="digits",
        key=f"digits-{arch}-e{TEACHER_EPOCHS}-seed{seed}",
        splits=load_splits(seed),
        arch=ARCH,
        teacher_epochs=TEACHER_EPOCHS,
        seed=seed,
        cache_dir=cache_dir,
    )


def resnet_task(
    *,
    name: str,
    key: str,
    splits: dict[str, TensorDataset],
    arch: ResNetArch,
    teacher_epochs: int,
    seed: int,
    cache_dir: Path,
) -> Task:
    """A 10-class task over in-memory splits with a small ResNet teacher, trained on first use
    and cached under ``key``; calibration is the first 256 training images."""

    def build() -> ResNet:
        return ResNet(num_classes=10, **arch)

    teacher = load_or_train(
        key=key,
        build=build,
        train=splits["train"],
        val=splits["val"],
        epochs=teacher_epochs,
        seed=seed,
        cache_dir=cache_dir,
    )
    calib_x, calib_y = splits["train"].tensors
    return Task(
        name=name,
        model=teacher,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        calibration=TensorDataset(calib_x[:256], calib_y[:256]),
        example_input=splits["test"].tensors[0][:1].clone(),
        ignored_layers=["fc"],
        key=key,
    )
