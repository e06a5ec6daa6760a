"""Image classification with the user's own torchvision model and data already on disk.

The model is a torchvision architecture by name (``resnet18``, ``mobilenet_v3_small``, ...) with
the user's trained weights (a ``state_dict`` saved with ``torch.save``), read with
``torch.load(weights_only=True)``. The data is an ImageFolder tree or the CIFAR-10 python folder.
Without labels (loose images, no class folders) the metric is top-1 agreement with the user's
model and distillation uses only its soft labels.

Example:
    python -m search run --task imagefolder --model resnet18 --weights my.pt --data photos/
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import torch
from torch import nn
from torch.utils.data import Subset, TensorDataset

from search.core.errors import first_line
from search.errors import TaskError
from search.tasks.base import Task, stack
from search.tasks.decoded import decode_once
from search.tasks.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalized,
    load_cifar10,
    load_image_folder,
)

CALIBRATION_ITEMS = 256


def _torchvision() -> Any:
    try:
        import torchvision
    except ImportError:
        raise TaskError(
            "torchvision is not installed: pip install 'search[vision]' (or ./setup.sh --vision)"
        ) from None
    return torchvision


def classification_models() -> list[str]:
    """Names of torchvision's image-classification architectures."""
    tv = _torchvision()
    return sorted(tv.models.list_models(module=tv.models))


def build_model(name: str, *, num_classes: int, image_size: int | None = None) -> nn.Module:
    """A randomly initialized torchvision classifier ``name`` with ``num_classes`` outputs."""
    tv = _torchvision()
    known = classification_models()
    if name not in known:
        close = [k for k in known if k.startswith(name[:4])][:6] or known[:6]
        raise TaskError(f"unknown torchvision model {name!r}; e.g. {', '.join(close)}")
    kwargs: dict[str, Any] = {"weights": None, "num_classes": num_classes}
    if name.startswith("vit_") and image_size:
        kwargs["image_size"] = image_size  # ViTs fix their input size at construction
    return tv.models.get_model(name, **kwargs)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint: a ``state_dict``, or a dict holding one under
    ``state_dict``/``model``; a ``module.`` prefix (DataParallel) is dropped.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise TaskError(f"weights file {path} does not exist; pass the checkpoint with --weights")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever torch.load says, the file is unusable
        first = first_line(e, 120)
        raise TaskError(
            f"cannot read weights {path} ({type(e).__name__}: {first}); save them with "
            "torch.save(model.state_dict(), path)"
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TaskError(
            f"{path} holds no state_dict; save the weights with torch.save(model.state_dict(), "
            "path)"
        )
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj


def load_weights(model: nn.Module, path: Path, *, what: str) -> nn.Module:
    """Load the checkpoint at ``path`` into ``model``; a mismatch is a one-line TaskError."""
    state = read_state_dict(path)
    own = model.state_dict()
    # BatchNorm's step counter is bookkeeping: a checkpoint of a model built with torchvision's
    # FrozenBatchNorm2d (its pretrained detectors) has none.
    for k, v in own.items():
        if k.endswith("num_batches_tracked") and k not in state:
            state[k] = v
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            parts.append(f"{len(wrong)} of other shape (e.g. {wrong[0]})")
        raise TaskError(
            f"weights {path} do not fit {what}: {'; '.join(parts)}; check --model and the "
            "number of classes"
        )
    model.load_state_dict(state)
    return model.eval()


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def _limit(ds: Normalized, limit: int | None, seed: int) -> Normalized:
    if limit is None or len(ds) <= limit:
        return ds
    g = torch.Generator().manual_seed(seed)
    return ds.subset(sorted(torch.randperm(len(ds), generator=g)[:limit].tolist()))


def _teacher_labelled(model: nn.Module, ds: Normalized | TensorDataset) -> TensorDataset:
    """``ds`` with the model's own top-1 predictions as labels (for unlabeled data)."""
    from search.compress.distill import predict

    x, _ = stack(ds)
    return TensorDataset(x, predict(model, TensorDataset(x, torch.zeros(len(x)))).argmax(1))


def make_vision_task(
    *,
    model: str | nn.Module,
    data: str | Path,
    seed: int,
    weights: str | Path | None = None,
    layout: str = "auto",
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    num_classes: int | None = None,
    limit: int | None = None,
    name: str | None = None,
    cache_dir: Path | None = None,
) -> Task:
    """Build a :class:`Task` from a model (torchvision name or module) and an image folder.

    Args:
        model: torchvision architecture name, or an ``nn.Module`` built by the caller.
        data: ImageFolder root or CIFAR-10 python folder.
        seed: Fixes the splits.
        weights: ``state_dict`` checkpoint; without it the model keeps its current weights
            (random for a name), which only makes sense for tests.
        layout: ``imagefolder``, ``cifar10`` or ``auto`` (CIFAR-10 when ``data_batch_1`` exists).
        image_size: Side of the square input (default 32 for CIFAR-10, 224 otherwise).
        mean, std: Per-channel normalization the model was trained with (default ImageNet's).
        num_classes: Needed only for unlabeled data when no checkpoint tells it.
        limit: Use at most this many images per split (seeded), to try a search quickly.
        name: Task name in reports (default ``<layout>-<model>``).
        cache_dir: Where images decoded once but too large for memory are memory-mapped.
    """
    found, classes, layout = _splits(
        Path(data).expanduser(), layout=layout, seed=seed, size=image_size, mean=mean, std=std
    )
    size, labelled = found["train"].size, bool(classes)
    n = len(classes) if labelled else num_classes
    net, arch = _model(model, weights=weights, num_classes=n, image_size=size)
    # An image folder without test/ scores on val/ twice: no test figure of its own.
    separate_test = found["test"] is not found["val"]
    splits = _prepared(found, limit=limit, seed=seed, cache_dir=cache_dir)
    metric_name = "accuracy" if labelled else "teacher_agreement"
    if not labelled:
        # No labels: score students by agreement with the user's model, the only ground truth.
        splits.update({k: _teacher_labelled(net, splits[k]) for k in ("val", "test")})
    example = splits["test"][0][0].unsqueeze(0).clone()
    digest = _file_digest(Path(weights)) if weights is not None else "random"
    key = f"{layout}-{arch}-{digest}-{size}px-{len(splits['train'])}-seed{seed}"
    calib = Subset(splits["train"], range(min(CALIBRATION_ITEMS, len(splits["train"]))))
    return Task(
        name=name or f"{layout}-{arch}",
        model=net,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        calibration=calib,
        example_input=example,
        metric_name=metric_name,
        key=key,
        separate_test=separate_test,
    )


def _prepared(
    splits: Mapping[str, Normalized], *, limit: int | None, seed: int, cache_dir: Path | None
) -> dict[str, Normalized | TensorDataset]:
    """Each split limited (seeded) and decoded once; a split that is another's (test = val)
    stays the same object, decoded once."""
    done: dict[int, Normalized | TensorDataset] = {}
    out = {}
    for i, (k, v) in enumerate(splits.items()):
        if id(v) not in done:
            done[id(v)] = decode_once(_limit(v, limit, seed + i), cache_dir=cache_dir)
        out[k] = done[id(v)]
    return out


def _model(
    model: str | nn.Module, *, weights: str | Path | None, num_classes: int | None, image_size: int
) -> tuple[nn.Module, str]:
    """The model in eval mode, with ``weights`` loaded, and its architecture's name. Without
    ``num_classes`` (unlabeled data) the checkpoint's head says how many outputs it has."""
    if isinstance(model, str):
        n = num_classes or _classes_in(weights, model)
        net, arch = build_model(model, num_classes=n, image_size=image_size), model
        what = f"{arch} with {n} classes"
    else:
        net, arch = model, type(model).__name__
        what = arch
    if weights is not None:
        load_weights(net, Path(weights), what=what)
    drop_auxiliary_heads(net)
    return net.eval(), arch


class _AuxLogits(Protocol):
    """GoogLeNet's and Inception v3's switch (a bool, where torch's stubs say Tensor | Module)."""

    aux_logits: bool


def drop_auxiliary_heads(net: nn.Module) -> list[str]:
    """Remove the auxiliary classifiers that torchvision's GoogLeNet and Inception v3 run only
    in training mode; returns their names.

    They are not part of the deployed (eval-mode, exported) model, so the pruning graph traced
    in eval mode never sees them: after pruning their input channels no longer fit, and in
    training mode (distillation, BatchNorm recalibration) the model would crash or return a
    tuple instead of logits. Without them the training-mode forward returns the logits alone.
    """
    if not getattr(net, "aux_logits", False):
        return []
    dropped = [n for n in ("aux1", "aux2", "AuxLogits") if getattr(net, n, None) is not None]
    for name in dropped:
        setattr(net, name, None)
    cast(_AuxLogits, net).aux_logits = False
    return dropped


def _splits(
    data: Path,
    *,
    layout: str,
    seed: int,
    size: int | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> tuple[dict[str, Normalized], list[str], str]:
    """The splits, class names and resolved layout of ``data`` (``auto``: CIFAR-10 when
    ``data_batch_1`` exists, else an ImageFolder tree)."""
    if layout == "auto":
        layout = "cifar10" if (data / "data_batch_1").is_file() else "imagefolder"
    if layout == "cifar10":
        return (*load_cifar10(data, seed=seed, size=size or 32), layout)
    if layout == "imagefolder":
        splits, classes = load_image_folder(
            data, size=size or 224, mean=mean or IMAGENET_MEAN, std=std or IMAGENET_STD, seed=seed
        )
        return splits, classes, layout
    raise TaskError(f"unknown data layout {layout!r}: use imagefolder, cifar10 or auto")


def _classes_in(weights: str | Path | None, arch: str) -> int:
    """The output size of ``arch``'s head in the checkpoint (unlabeled data has no classes)."""
    if weights is None:
        raise TaskError("unlabeled data: pass num_classes (or --weights to read it from)")
    from search.compress.prune.step import default_ignored

    head = default_ignored(build_model(arch, num_classes=2))
    state = read_state_dict(Path(weights))
    key = f"{head[0]}.weight" if head else ""
    if key not in state:
        raise TaskError(f"weights {weights} have no {key or 'classifier'}: is --model {arch}?")
    return int(state[key].shape[0])


def make_task(
    *, seed: int, cache_dir: Path, model: str = "", data: str = "", **options: Any
) -> Task:
    """Built-in ``vision`` task: ``model`` and ``data`` are required options."""
    if not model or not data:
        raise TaskError("the vision tasks need --model NAME and --data DIR (and --weights PATH)")
    # The user's model is already trained; only decoded images too large for memory are cached.
    options.setdefault("cache_dir", cache_dir)
    return make_vision_task(model=model, data=data, seed=seed, **options)


def make_imagefolder_task(*, seed: int, cache_dir: Path, **options: Any) -> Task:
    """Built-in ``imagefolder`` task."""
    return make_task(seed=seed, cache_dir=cache_dir, layout="imagefolder", **options)


def make_cifar10_task(*, seed: int, cache_dir: Path, **options: Any) -> Task:
    """Built-in ``cifar10`` task (the python pickle folder; never downloaded)."""
    return make_task(seed=seed, cache_dir=cache_dir, layout="cifar10", **options)
