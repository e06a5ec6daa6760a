"""An example task module: compress your own trained classifier on your own images.

Run it (from the repository root) with

    python -m search run --task examples/my_task.py:make_task --model resnet18 \
        --data path/to/images --weights path/to/model_state_dict.pt --trials 20

``--model``, ``--data`` and ``--weights`` (or any key of a task YAML file) reach the factory
as keyword options. Copy this file next to your project and change the marked parts.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch.utils.data import Subset
from torchvision import transforms

from search.errors import TaskError
from search.tasks import Task


def balanced_accuracy(outputs, labels) -> float:
    """A custom metric to maximize: mean recall over the classes present (unused by default)."""
    import numpy as np

    pred = np.asarray(outputs).argmax(axis=1)
    recalls = [(pred[labels == c] == c).mean() for c in np.unique(labels)]
    return float(np.mean(recalls))


def make_task(
    *,
    seed: int,
    cache_dir: Path,
    data: str,
    weights: str,
    model: str = "resnet18",
    image_size: int = 32,
) -> Task:
    """Your model, your data, your metric.

    Args:
        seed: Fixes the split of the images into train/val/test.
        cache_dir: Where a factory may cache things (unused: the model is already trained).
        data: An ImageFolder root: ``data/<class>/<image>.png``.
        weights: ``torch.save(model.state_dict(), path)`` of your trained model.
        model: Your architecture; here a torchvision name, usually your own ``nn.Module``.
        image_size: The input side your model was trained at.
    """
    del cache_dir
    # 1. The data, preprocessed exactly as in your training (evaluation transforms, no
    #    augmentation: the same images feed distillation, validation and calibration).
    preprocess = transforms.Compose(
        [
            transforms.Resize(image_size),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    images = torchvision.datasets.ImageFolder(data, transform=preprocess)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, len(order) // 10)
    val, test, train = order[:n_val], order[n_val : 2 * n_val], order[2 * n_val :]

    # 2. The model: your architecture with your trained weights.
    net = torchvision.models.get_model(model, weights=None, num_classes=len(images.classes))
    try:
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except Exception as e:
        raise TaskError(f"cannot load {weights} into {model}: {type(e).__name__}") from None

    # 3. The task: the metric is top-1 accuracy unless you pass another one, e.g.
    #    metric=balanced_accuracy, metric_name="balanced_accuracy".
    return Task(
        name="my-task",
        model=net.eval(),
        train=Subset(images, train),
        val=Subset(images, val),
        test=Subset(images, test),
        calibration=Subset(images, train[:256]),
        example_input=images[test[0]][0].unsqueeze(0),
        # The last layer to run (the classifier head) keeps its output size by default; name
        # others that must keep theirs, e.g. ignored_layers=["aux_head"].
        key=f"my-task-{model}-seed{seed}",
    )
