"""torchvision detectors and segmenters as the study compresses them, and their data on disk
(COCO JSON boxes, mask PNGs). Random weights: nothing is downloaded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

torchvision = pytest.importorskip("torchvision")

from search.errors import TaskError  # noqa: E402
from search.tasks import Outputs, load_task  # noqa: E402
from search.tasks.torchvision_dense import adapt, final_layers, thaw_batchnorm  # noqa: E402


def _tv(name: str, **kw):
    torch.manual_seed(0)
    return torchvision.models.get_model(
        name, weights=None, weights_backbone=None, num_classes=4, **kw
    ).eval()


def test_a_one_stage_detector_exports_raw_heads_and_decodes_like_its_own_forward():
    model = _tv("ssdlite320_mobilenet_v3_large")
    x = torch.rand(2, 3, 320, 320)
    raw, outputs = adapt(model, x[:1], Outputs())
    assert outputs.output_names(2) == ("cls_logits", "bbox_regression")
    assert "softmax KL" in outputs.distill_loss.describe()
    with torch.no_grad():
        heads = raw(x)
        expected = model(x)
    found = outputs.read([h.numpy() for h in heads])
    for got, want in zip(found, expected, strict=True):
        for key in ("boxes", "scores", "labels"):
            assert np.array_equal(got[key], want[key].numpy()), key
    # The prediction convs keep their size (SSDlite: the last 1x1 conv of each block).
    assert "head.classification_head.module_list.0.1" in final_layers(raw)
    assert set(dict(raw.named_modules())) >= set(final_layers(raw))


def test_a_segmenter_keeps_its_out_entry():
    model = _tv("lraspp_mobilenet_v3_large")
    same, outputs = adapt(model, torch.rand(1, 3, 64, 64), Outputs())
    assert same is model and outputs.output_names(1) == ("out",)
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 4, 64, 64)
    assert final_layers(model) == ["classifier.low_classifier", "classifier.high_classifier"]


def test_a_two_stage_detector_is_compressed_as_its_first_stage():
    """The first stage (exported, measured) followed by the second stage (outside the graph)
    gives the detections of the detector's own forward at its input size."""
    from search.tasks.two_stage import FirstStage

    model = _tv("fasterrcnn_mobilenet_v3_large_320_fpn", min_size=320, max_size=320)
    x = torch.rand(2, 3, 320, 320)
    first, outputs = adapt(model, x[:1], Outputs())
    assert isinstance(first, FirstStage) and "first stage" in outputs.exported
    with torch.no_grad():
        found = outputs.read([o.numpy() for o in first(x)])
        expected = model(x)
    assert len(found) == len(expected) == 2
    for got, want in zip(found, expected, strict=True):
        assert np.allclose(got["boxes"], want["boxes"].numpy(), atol=1e-3)
        assert np.array_equal(got["labels"], want["labels"].numpy())


def test_frozen_batchnorm_becomes_the_same_batchnorm():
    from torchvision.ops.misc import FrozenBatchNorm2d

    frozen = FrozenBatchNorm2d(8)
    frozen.running_mean.uniform_(-1, 1)
    frozen.weight.uniform_(0.5, 2)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), frozen).eval()
    x = torch.randn(2, 3, 8, 8)
    before = model(x)
    assert thaw_batchnorm(model) == ["1"]
    assert isinstance(model[1], nn.BatchNorm2d)
    assert torch.allclose(model(x), before, atol=1e-6)


def _coco(folder: Path, n: int = 12) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(n):
        img = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
        Image.fromarray(img).save(folder / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 64, "height": 48})
        anns.append({"id": i + 1, "image_id": i + 1, "bbox": [8, 4, 16, 12], "category_id": 2})
    anns.append({"id": 99, "image_id": 1, "bbox": [0, 0, 5, 5], "category_id": 1, "iscrowd": 1})
    (folder / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns}))
    return folder


def test_a_coco_folder_gives_box_labels_in_the_resized_pixels(tmp_path):
    task = load_task(
        "detection",
        seed=0,
        cache_dir=tmp_path,
        options={"model": "ssdlite320_mobilenet_v3_large", "data": str(_coco(tmp_path)),
                 "image_size": 128},
    )  # fmt: skip
    assert task.metric_name == "mAP" and task.outputs.decode is not None
    _, label = task.train[0]
    assert label.shape == (1, 5)  # the crowd box is skipped
    assert torch.allclose(label[0], torch.tensor([16.0, 128 / 12, 48.0, 128 / 3, 2.0]))
    assert len(task.train) + len(task.val) + len(task.test) == 12
    assert task.example_input.shape == (1, 3, 128, 128) and task.example_input.max() <= 1.0


def test_mask_pngs_give_class_maps_with_void_ignored(tmp_path):
    from PIL import Image

    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    for i in range(10):
        Image.fromarray(np.full((40, 40, 3), 20 * i, np.uint8)).save(tmp_path / f"images/{i}.jpg")
        mask = np.zeros((40, 40), np.uint8)
        mask[:20], mask[0, 0] = 2, 255
        Image.fromarray(mask).save(tmp_path / f"masks/{i}.png")
    task = load_task(
        "segmentation",
        seed=0,
        cache_dir=tmp_path,
        options={"model": "lraspp_mobilenet_v3_large", "data": str(tmp_path), "image_size": 32},
    )
    _, mask = task.train[0]
    assert mask.shape == (32, 32) and int(mask[0, 0]) == -1 and int(mask[-1, -1]) == 0
    assert int(mask[5, 5]) == 2 and task.metric_name == "mIoU"
    assert task.model(task.example_input).shape == (1, 3, 32, 32)  # classes 0..2


def test_a_data_folder_without_annotations_is_one_line(tmp_path):
    with pytest.raises(TaskError) as err:
        options = {"model": "ssdlite320_mobilenet_v3_large", "data": str(tmp_path)}
        load_task("detection", seed=0, cache_dir=tmp_path, options=options)
    assert "has no annotations.json" in str(err.value)
