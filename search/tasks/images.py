"""Image data already on disk, as Datasets: an ImageFolder tree or the CIFAR-10 pickle folder.

Nothing is ever downloaded. Every error a user can cause (missing folder, no images, a folder
that is not the layout asked for) is a one-line :class:`TaskError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

from search.core.safeload import UnsafePickle, load_data_pickle
from search.errors import TaskError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
DOCS = "see docs/your-own-model.md"


class Normalization(TypedDict):
    """How :class:`Normalized` resizes and normalizes its images (its keyword arguments)."""

    size: int
    mean: Sequence[float]
    std: Sequence[float]


class Normalized(Dataset):
    """Images decoded on access, resized and normalized; items are ``(C x H x W float, label)``.

    ``images`` is either a list of file paths or an ``N x C x H x W`` uint8 tensor; a label of
    ``-1`` marks an unlabeled image.
    """

    def __init__(
        self,
        images: Sequence[Path] | torch.Tensor,
        labels: Sequence[int],
        *,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
    ) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.size = images, list(labels), size
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.images[i]
        x = self._decode(image) if isinstance(image, Path) else image
        x = x.float().div(255.0)
        if x.shape[-2:] != (self.size, self.size):
            x = _resize_center_crop(x, self.size)
        return (x - self.mean) / self.std, self.labels[i]

    def subset(self, idx: Sequence[int]) -> Normalized:
        images = (
            self.images[list(idx)]
            if isinstance(self.images, torch.Tensor)
            else [self.images[i] for i in idx]
        )
        return Normalized(
            images,
            [self.labels[i] for i in idx],
            size=self.size,
            mean=self.mean.flatten().tolist(),
            std=self.std.flatten().tolist(),
        )

    @staticmethod
    def _decode(path: Path) -> torch.Tensor:
        from PIL import Image

        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        except OSError as e:
            raise TaskError(f"cannot read image {path}: {e}; remove or replace it") from None
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _resize_center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the shorter side to ``size`` and crop the centre, like torchvision's eval preset."""
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = torch.nn.functional.interpolate(
        x.unsqueeze(0), size=(nh, nw), mode="bilinear", align_corners=False, antialias=True
    ).squeeze(0)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[:, top : top + size, left : left + size]


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_image_folder(
    folder: Path, classes: list[str] | None = None
) -> tuple[list[Path], list[int], list[str]]:
    """Images of ``folder``: ``<class>/<image>`` gives labels; images directly inside are
    unlabeled (label ``-1``). ``classes`` fixes the class order (taken from the training folder).
    """
    dirs = _class_dirs(folder)
    loose = _images_in(folder)
    if dirs and loose:
        raise TaskError(
            f"{folder} holds both images and class folders: put every image in a class folder, "
            f"or none (unlabeled); {DOCS}"
        )
    if not dirs:
        return loose, [-1] * len(loose), classes or []
    names = [d.name for d in dirs]
    if classes is None:
        classes = names
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise TaskError(
            f"{folder} has class folder(s) {', '.join(unknown)} that the training data lacks"
        )
    paths, labels = [], []
    for d in dirs:
        found = _images_in(d)
        paths += found
        labels += [classes.index(d.name)] * len(found)
    return paths, labels, classes


def _split(labels: Sequence[int], seed: int, shares: tuple[float, ...]) -> list[list[int]]:
    """Indices of a seeded split: the rest first, then one part per share of all items.

    Stratified by label (scikit-learn's ``train_test_split``) where every class can give each
    part an item; a folder too small for that is split by a plain seeded shuffle.
    """
    y = np.asarray(labels)
    rest, parts = np.arange(len(y)), []
    for share in shares:
        if len(rest) < 2:  # nothing to split off: the empty part is reported by the caller
            parts.append(np.array([], dtype=int))
            continue
        n_part = min(max(1, round(share * len(y))), len(rest) - 1)
        counts = np.unique(y[rest], return_counts=True)[1]
        can = counts.min() >= 2 and len(counts) <= n_part <= len(rest) - len(counts)
        rest, part = train_test_split(
            rest, test_size=n_part, random_state=seed, stratify=y[rest] if can else None
        )
        parts.append(part)
    return [sorted(p.tolist()) for p in (rest, *parts)]


def load_image_folder(
    root: Path, *, size: int, mean: Sequence[float], std: Sequence[float], seed: int
) -> tuple[dict[str, Normalized], list[str]]:
    """Train/val/test splits of an ImageFolder tree and its class names.

    ``root/train``, ``root/val`` (and optionally ``root/test``) are used as given; a root that
    holds class folders (or loose unlabeled images) directly is split 80/10/10 by ``seed``.
    """
    root = _existing_dir(root)
    norm: Normalization = {"size": size, "mean": mean, "std": std}
    if (root / "train").is_dir():
        paths, labels, classes = scan_image_folder(root / "train")
        splits = {"train": Normalized(paths, labels, **norm)}
        for name in ("val", "test"):
            if (root / name).is_dir():
                p, y, _ = scan_image_folder(root / name, classes or None)
                splits[name] = Normalized(p, y, **norm)
        if "val" not in splits and "test" not in splits:
            raise TaskError(f"{root} has train/ but no val/ folder to score on; {DOCS}")
        if "val" not in splits:
            splits["val"] = splits["test"]
        splits.setdefault("test", splits["val"])
    else:
        paths, labels, classes = scan_image_folder(root)
        whole = Normalized(paths, labels, **norm)
        train, val, test = _split(labels, seed, (0.1, 0.1))
        splits = {
            "train": whole.subset(train),
            "val": whole.subset(val),
            "test": whole.subset(test),
        }
    _check_not_empty(root, splits)
    return splits, classes


def _existing_dir(root: Path) -> Path:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise TaskError(f"data directory {root} does not exist; pass the folder with --data")
    return root


def _check_not_empty(root: Path, splits: dict[str, Normalized]) -> None:
    empty = [name for name, ds in splits.items() if len(ds) == 0]
    if empty:
        found = len(splits["train"]) + len(splits["val"])
        raise TaskError(
            f"no images for {'/'.join(empty)} in {root} ({found} found in all): expected "
            f"{root}/<class>/<image>.jpg (a few per class at least) or {root}/train/<class>/...; "
            f"{DOCS}"
        )


def _unpickle(path: Path) -> dict:
    """A CIFAR-10 batch, read by the restricted unpickler: a file that names anything but
    containers and numeric arrays is refused before anything in it runs."""
    try:
        batch = load_data_pickle(path)
    except UnsafePickle as e:
        raise TaskError(f"refused CIFAR-10 file {path}: {e}; is it the real dataset?") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise TaskError(f"cannot read CIFAR-10 file {path} ({type(e).__name__})") from None
    if not isinstance(batch, dict):
        raise TaskError(f"{path} is not a CIFAR-10 batch (a {type(batch).__name__}, not a dict)")
    return batch


def load_cifar10(
    root: Path, *, seed: int, size: int = 32, val_share: float = 0.1
) -> tuple[dict[str, Normalized], list[str]]:
    """Splits of the CIFAR-10 python folder (``data_batch_1..5``, ``test_batch``); the last
    ``val_share`` of a seeded shuffle of the training images is the validation split.
    """
    root = _existing_dir(root)
    missing = [f for f in CIFAR_FILES if not (root / f).is_file()]
    if missing:
        raise TaskError(
            f"{root} is not a CIFAR-10 python folder: {', '.join(missing)} missing (unpack "
            "cifar-10-python.tar.gz, pass its cifar-10-batches-py folder; nothing is downloaded)"
        )

    def read(name: str) -> tuple[torch.Tensor, list[int]]:
        batch = _unpickle(root / name)
        try:
            x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = [int(v) for v in batch[b"labels"]]
        except (KeyError, ValueError, TypeError) as e:
            raise TaskError(f"{root / name} is not a CIFAR-10 batch ({e})") from None
        return torch.from_numpy(x.copy()), y

    parts = [read(f) for f in CIFAR_FILES[:-1]]
    x_train = torch.cat([p[0] for p in parts])
    y_train = [v for p in parts for v in p[1]]
    x_test, y_test = read("test_batch")
    meta = root / "batches.meta"
    classes = [str(i) for i in range(10)]
    if meta.is_file():
        names = _unpickle(meta).get(b"label_names")
        if isinstance(names, list) and all(isinstance(n, bytes) for n in names):
            classes = [n.decode(errors="replace") for n in names] or classes
    norm: Normalization = {"size": size, "mean": CIFAR_MEAN, "std": CIFAR_STD}
    whole = Normalized(x_train, y_train, **norm)
    train, val = _split(y_train, seed, (val_share,))
    splits = {
        "train": whole.subset(train),
        "val": whole.subset(val),
        "test": Normalized(x_test, y_test, **norm),
    }
    _check_not_empty(root, splits)
    return splits, classes
