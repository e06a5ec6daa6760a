"""The ``mobilenet_digits`` benchmark task: torchvision's MobileNetV2 on colour distorted digits.

A real architecture for the benchmark (issue 29), chosen over ResNet-18 because

- it is already compact (2.2 M parameters against ResNet-18's 11.2 M), so on a 10-class task
  pruning costs accuracy early and the methods differ, where ResNet-18 loses little up to the
  space's largest ratio;
- its inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 project) give layer groups that
  differ in cost and in sensitivity, the case AMC (He et al., ECCV 2018) was built for, and its
  depthwise convolutions run differently in int8 on different providers;
- at 32x32 one training step costs about half of ResNet-18's per image on this CPU (measured
  side by side: 3.6-4.1 against 6.8-7.3 ms at width 0.5, 6.0-7.1 at width 1.0, one thread,
  loaded 2-core machine).

It is torchvision's ``mobilenet_v2`` exactly as built by ``get_model(weights=None,
num_classes=10)``, width multiplier 1.0, trained from scratch here (no weights are downloaded).

The data is generated from scikit-learn's digits (nothing downloaded): every digit appears in
``COPIES`` independent distortions of :func:`search.tasks.distorted_digits.make_images` (affine,
elastic warp, clutter, occluding bar, noise), then coloured: a random stroke colour over a
smooth random colour field, with noise per channel. All copies of one source digit fall in the
same split (60/20/20, stratified), so no split sees another's digit. The teacher is trained on
first use and cached.

Example:
    >>> x, y, source = make_images(seed=0, limit=4)
    >>> tuple(x.shape), int(y.shape[0]), int(source.max())
    ((8, 3, 32, 32), 8, 3)
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import TensorDataset

from search.tasks import distorted_digits
from search.tasks.base import Task
from search.tasks.teacher import load_or_train

MODEL = "mobilenet_v2"
SIZE = distorted_digits.SIZE  # 32x32: one distillation of 5 epochs stays near half a minute
COPIES = 2  # distortions per source digit in the task's splits: 3,594 images
# The teacher learns from more distortions of the same training digits (a model trained on more
# data than the compression fine-tunes on, as a user's pretrained model is); distillation runs
# over the task's own training split. Trained on the 2 copies alone it overfit (training
# accuracy 1.0, validation 0.57 after 30 epochs).
TEACHER_COPIES = 6
TEACHER_EPOCHS = 15
TEACHER_LR = 3e-3
FIELD = 0.4  # largest brightness of the background colour field
STROKE = (0.55, 1.0)  # brightness range of the stroke colour's channels
COLOUR_NOISE = 0.06  # standard deviation of the noise added per channel
VERSION = 2  # bump when the generator changes, so cached teachers are not reused


def build() -> nn.Module:
    """torchvision's MobileNetV2, randomly initialized, 10 classes."""
    import torchvision

    return torchvision.models.get_model(MODEL, weights=None, num_classes=10)


def _colour(gray: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """``N x 1 x H x W`` strokes in [0, 1] -> ``N x 3 x H x W``: a random stroke colour over a
    smooth random background colour field, plus noise per channel."""
    n, _, h, w = gray.shape
    stroke = STROKE[0] + (STROKE[1] - STROKE[0]) * torch.rand(n, 3, 1, 1, generator=g)
    coarse = torch.rand(n, 3, 3, 3, generator=g) * FIELD
    field = F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
    out = field * (1 - gray) + stroke * gray
    return (out + COLOUR_NOISE * torch.randn(out.shape, generator=g)).clamp(0.0, 1.0)


def make_images(
    *, seed: int, limit: int | None = None, copies: int = COPIES
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``copies`` coloured distortions of each digit: images ``N x 3 x 32 x 32`` in [0, 1],
    labels, and the index of the source digit each image was made from.

    Args:
        seed: Fixes every random choice; the same seed gives the same tensors.
        limit: Only the first ``limit`` source digits (for tests).
        copies: Distortions per source digit.
    """
    xs, ys, sources = [], [], []
    for c in range(copies):
        gray, y = distorted_digits.make_images(seed=1000 * seed + c, limit=limit)
        g = torch.Generator().manual_seed(20_000 + 1000 * seed + c)
        xs.append(_colour(gray, g))
        ys.append(y)
        sources.append(torch.arange(len(y)))
    return torch.cat(xs), torch.cat(ys), torch.cat(sources)


def load_splits(seed: int, *, copies: int = COPIES) -> dict[str, TensorDataset]:
    """Train/val/test splits (60/20/20 of the source digits, stratified, the same digits for
    any ``copies``), standardized per channel with the training split's statistics of the
    first ``COPIES`` copies."""
    x, y, source = make_images(seed=seed, copies=max(copies, COPIES))
    n = int(source.max()) + 1
    labels = y[:n]  # the first copy lists every source digit once, in order
    idx = list(range(n))
    train_src, rest = train_test_split(idx, test_size=0.4, random_state=seed, stratify=labels)
    val_src, test_src = train_test_split(
        rest, test_size=0.5, random_state=seed, stratify=labels[rest]
    )

    def rows(src: list[int]) -> torch.Tensor:
        return torch.nonzero(torch.isin(source, torch.tensor(src))).flatten()

    first = torch.arange(len(y)) < COPIES * n
    ids = {
        "train": rows(train_src)[first[rows(train_src)] | (copies > COPIES)],
        "val": rows(val_src)[first[rows(val_src)]],
        "test": rows(test_src)[first[rows(test_src)]],
    }
    stats_x = x[rows(train_src)[first[rows(train_src)]]]
    mean = stats_x.mean(dim=(0, 2, 3), keepdim=True)
    std = stats_x.std(dim=(0, 2, 3), keepdim=True)
    x = (x - mean) / std
    return {name: TensorDataset(x[i], y[i]) for name, i in ids.items()}


def make_task(*, seed: int, cache_dir: Path) -> Task:
    key = f"mobilenet-digits-v{VERSION}-{MODEL}-{SIZE}px-c{TEACHER_COPIES}-e{TEACHER_EPOCHS}"
    key += f"-seed{seed}"
    splits = load_splits(seed)
    teacher = load_or_train(
        key=key,
        build=build,
        train=load_splits(seed, copies=TEACHER_COPIES)["train"],
        val=splits["val"],
        epochs=TEACHER_EPOCHS,
        seed=seed,
        cache_dir=cache_dir,
        lr=TEACHER_LR,
    )
    calib_x, calib_y = splits["train"].tensors
    return Task(
        name="mobilenet_digits",
        model=teacher,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        calibration=TensorDataset(calib_x[:256], calib_y[:256]),
        example_input=splits["test"].tensors[0][:1].clone(),
        ignored_layers=["classifier.1"],
        key=key,
    )
