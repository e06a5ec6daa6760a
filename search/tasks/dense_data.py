"""torchvision detectors and segmenters by name, on data in the formats users have: COCO-style
JSON boxes, mask PNGs.

``--task detection --model ssdlite320_mobilenet_v3_large --weights my.pt --data DIR``:
``DIR/annotations.json`` is a COCO file (``images`` with ``id`` and ``file_name``, relative to
DIR or ``DIR/images``; ``annotations`` with ``image_id``, ``bbox`` as ``[x, y, width,
height]`` in pixels and ``category_id``; ``iscrowd`` boxes are skipped). Class ids are
torchvision's: 0 is the background, so the model gets ``max(category_id) + 1`` classes unless
``num_classes`` says otherwise. Images are resized to ``image_size`` squared (320 for SSDlite,
300 for SSD, 512 otherwise), boxes with them; labels are (K, 5) ``[x1, y1, x2, y2, class]``
rows per image (class -1 pads), the metric is COCO mAP at IoU 0.50:0.95.

``--task segmentation --model lraspp_mobilenet_v3_large --weights my.pt --data DIR``:
``DIR/images/<name>.jpg|png`` and ``DIR/masks/<name>.png``, one class index per pixel
(grayscale or palette PNG; 255, VOC's "void", is ignored). Images and masks are resized to
``image_size`` squared (256 by default; masks by nearest neighbour) and normalised with
ImageNet's mean and std (or ``mean``/``std``); the metric is mean IoU.

Either data folder may instead hold ``train/``, ``val/`` (and ``test/``) folders laid out the
same way; otherwise it is split 80/10/10 by the seed. Nothing is downloaded: the models are
built with ``weights=None, weights_backbone=None`` and given the user's ``state_dict``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from search.errors import TaskError
from search.tasks.base import Task
from search.tasks.images import IMAGE_SUFFIXES, IMAGENET_MEAN, IMAGENET_STD
from search.tasks.metrics import detection_map, mean_iou

SIZES = {"ssdlite320_mobilenet_v3_large": 320, "ssd300_vgg16": 300}
DOCS = "see docs/your-own-model.md"


class DenseImages(Dataset):
    """Images kept as uint8 (N, 3, S, S) in memory, given out as float tensors (``/ 255``, then
    normalised when ``mean``/``std`` are set) with their labels."""

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        self.images, self.labels = images, labels
        self.mean = None if mean is None else torch.tensor(mean).view(-1, 1, 1)
        self.std = None if std is None else torch.tensor(std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i].float() / 255.0
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / self.std
        return x, self.labels[i]

    def subset(self, idx: Sequence[int]) -> DenseImages:
        out = DenseImages(self.images[list(idx)], self.labels[list(idx)])
        out.mean, out.std = self.mean, self.std
        return out


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except OSError as e:
        raise TaskError(f"cannot read image {path}: {e}; remove or replace it") from None


def _resized(rgb: np.ndarray, size: int) -> torch.Tensor:
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float().unsqueeze(0)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x.squeeze(0).round().clamp(0, 255).to(torch.uint8)


def _coco_file(folder: Path) -> dict[str, Any]:
    path = folder / "annotations.json"
    if not path.is_file():
        raise TaskError(f"{folder} has no annotations.json (COCO boxes); {DOCS}")
    try:
        coco = json.loads(path.read_text())
        images, anns = coco["images"], coco.get("annotations", [])
        by_id = {int(im["id"]): im for im in images}
        for a in anns:
            if int(a["image_id"]) not in by_id or len(a["bbox"]) != 4:
                raise ValueError(
                    f"annotation {a.get('id')} names no image or has no 4-number bbox"
                )
            int(a["category_id"])
    except (ValueError, KeyError, TypeError) as e:
        raise TaskError(f"{path} is not a COCO detection file: {e}; {DOCS}") from None
    return coco


def read_detection(folder: Path, size: int) -> tuple[DenseImages, int]:
    """A COCO folder as images resized to ``size`` and (K, 5) box rows; the largest class id."""
    coco = _coco_file(folder)
    boxes: dict[int, list[list[float]]] = {int(im["id"]): [] for im in coco["images"]}
    for a in coco.get("annotations", []):
        if a.get("iscrowd"):
            continue
        x, y, w, h = (float(v) for v in a["bbox"])
        boxes[int(a["image_id"])].append([x, y, x + w, y + h, float(a["category_id"])])
    k = max([len(b) for b in boxes.values()] + [1])
    images, labels, top = [], torch.full((len(boxes), k, 5), -1.0), 0
    for i, im in enumerate(coco["images"]):
        name = Path(str(im["file_name"]))
        path = folder / name if (folder / name).is_file() else folder / "images" / name
        rgb = _read_rgb(path)
        images.append(_resized(rgb, size))
        rows = torch.tensor(boxes[int(im["id"])] or np.zeros((0, 5)), dtype=torch.float32)
        if len(rows):
            scale = torch.tensor([size / rgb.shape[1], size / rgb.shape[0]] * 2)
            rows[:, :4] *= scale
            labels[i, : len(rows)] = rows
            top = max(top, int(rows[:, 4].max()))
    return DenseImages(torch.stack(images), labels), top


def read_segmentation(folder: Path, size: int) -> tuple[DenseImages, int]:
    """``images/`` and ``masks/`` of a folder resized to ``size``; the largest class index."""
    from PIL import Image

    if not (folder / "images").is_dir() or not (folder / "masks").is_dir():
        raise TaskError(f"{folder} needs images/ and masks/ folders; {DOCS}")
    paths = sorted(p for p in (folder / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    images, masks = [], []
    for p in paths:
        mask_path = folder / "masks" / f"{p.stem}.png"
        if not mask_path.is_file():
            raise TaskError(f"image {p.name} has no mask {mask_path}; {DOCS}")
        images.append(_resized(_read_rgb(p), size))
        with Image.open(mask_path) as im:
            mask = torch.from_numpy(np.asarray(im, dtype=np.int64).copy())
        if mask.dim() != 2:
            raise TaskError(f"mask {mask_path} has {mask.dim()} dims: one class index per pixel")
        mask = F.interpolate(mask[None, None].float(), size=(size, size), mode="nearest")[0, 0]
        masks.append(torch.where(mask == 255, -1, mask).long())
    if not images:
        raise TaskError(f"no images in {folder / 'images'}; {DOCS}")
    stacked = torch.stack(masks)
    return DenseImages(torch.stack(images), stacked), int(stacked.max())


def _splits(data: Path, read: Any, size: int, seed: int, limit: int | None) -> tuple[dict, int]:
    if not data.is_dir():
        raise TaskError(f"data directory {data} does not exist; pass the folder with --data")
    if (data / "train").is_dir():
        found = {n: read(data / n, size) for n in ("train", "val", "test") if (data / n).is_dir()}
        if "val" not in found:
            raise TaskError(f"{data} has train/ but no val/ folder to score on; {DOCS}")
        out = {n: ds for n, (ds, _) in found.items()}
        out.setdefault("test", out["val"])
        top = max(t for _, t in found.values())
    else:
        whole, top = read(data, size)
        order = torch.randperm(len(whole), generator=torch.Generator().manual_seed(seed))
        n_val = max(1, len(whole) // 10)
        parts = {
            "val": order[:n_val],
            "test": order[n_val : 2 * n_val],
            "train": order[2 * n_val :],
        }
        out = {n: whole.subset(idx.tolist()) for n, idx in parts.items()}
    empty = [n for n, ds in out.items() if len(ds) == 0]
    if empty:
        raise TaskError(f"no images for {'/'.join(empty)} in {data}: too few to split; {DOCS}")
    if limit:
        out = {n: ds.subset(range(min(limit, len(ds)))) for n, ds in out.items()}
    return out, top


def dense_models(kind: str) -> list[str]:
    """torchvision's detection (one-stage: the ones the study compresses) or segmentation
    architectures, by name."""
    from search.tasks.vision import _torchvision

    tv = _torchvision()
    if kind == "segmentation":
        return sorted(tv.models.list_models(module=tv.models.segmentation))
    names = tv.models.list_models(module=tv.models.detection)
    return sorted(n for n in names if n.startswith(("ssd", "retinanet", "fcos")))


def build_dense_model(name: str, *, kind: str, num_classes: int, image_size: int) -> Any:
    """A torchvision detector or segmenter ``name`` with random weights (nothing downloaded);
    RetinaNet and FCOS fix their internal resize at ``image_size``, so the model sees images
    at that size in and outside the study."""
    from search.tasks.vision import _torchvision

    known = dense_models(kind)
    if name not in known:
        raise TaskError(
            f"unknown torchvision {kind} model {name!r}; choose one of {', '.join(known)}"
        )
    kwargs: dict[str, Any] = {
        "weights": None,
        "weights_backbone": None,
        "num_classes": num_classes,
    }
    if name.startswith(("retinanet", "fcos")):
        kwargs.update(min_size=image_size, max_size=image_size)
    if kind == "segmentation":
        kwargs["aux_loss"] = False
    return _torchvision().models.get_model(name, **kwargs).eval()


def _dense_task(
    kind: str,
    *,
    seed: int,
    model: str,
    data: str,
    weights: str | None,
    image_size: int | None,
    num_classes: int | None,
    limit: int | None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> Task:
    from search.tasks.torchvision_dense import final_layers
    from search.tasks.vision import load_weights

    if not model or not data:
        raise TaskError(f"the {kind} task needs --model NAME and --data DIR (and --weights PATH)")
    default = SIZES.get(model, 512) if kind == "detection" else 256
    size = image_size or default
    read = read_detection if kind == "detection" else read_segmentation
    splits, top = _splits(Path(data).expanduser(), read, size, seed, limit)
    if kind == "segmentation":
        for ds in splits.values():
            ds.mean = torch.tensor(mean or IMAGENET_MEAN).view(-1, 1, 1)
            ds.std = torch.tensor(std or IMAGENET_STD).view(-1, 1, 1)
    n = num_classes or top + 1
    net = build_dense_model(model, kind=kind, num_classes=n, image_size=size)
    if weights:
        load_weights(net, Path(weights).expanduser(), what=f"{model} with {n} classes")
    train = splits["train"]
    detection = kind == "detection"
    return Task(
        name=f"{kind}-{model}",
        model=net,
        train=train,
        val=splits["val"],
        test=splits["test"],
        calibration=train.subset(range(min(128, len(train)))),
        example_input=splits["val"][0][0].unsqueeze(0).clone(),
        metric=detection_map if detection else mean_iou,
        metric_name="mAP" if detection else "mIoU",
        ignored_layers=final_layers(net),
        key=f"{kind}-{model}-{n}c-{size}px-{len(train)}-{weights or 'random'}-seed{seed}",
        separate_test=splits["test"] is not splits["val"],
    )


def make_detection_task(*, seed: int, cache_dir: Path, **options: Any) -> Task:
    """Built-in ``detection`` task (see the module docstring); options: ``model``, ``data``,
    ``weights``, ``image_size``, ``num_classes``, ``limit``."""
    del cache_dir
    return _dense_task("detection", seed=seed, **_options(options))


def make_segmentation_task(*, seed: int, cache_dir: Path, **options: Any) -> Task:
    """Built-in ``segmentation`` task (see the module docstring); options as for
    ``detection`` plus ``mean`` and ``std``."""
    del cache_dir
    return _dense_task("segmentation", seed=seed, **_options(options, normalise=True))


def _options(options: dict[str, Any], *, normalise: bool = False) -> dict[str, Any]:
    known = {"model", "data", "weights", "image_size", "num_classes", "limit"}
    known |= {"mean", "std"} if normalise else set()
    extra = sorted(set(options) - known)
    if extra:
        raise TaskError(
            f"this task takes no option(s) {', '.join(extra)}; it takes {', '.join(sorted(known))}"
        )
    out: dict[str, Any] = {"model": "", "data": ""}
    out.update(dict.fromkeys(("weights", "image_size", "num_classes", "limit")))
    out.update(options)
    return out
