"""Images are decoded and resized once: normalized in memory, uint8 in memory, or mapped."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from search.tasks.decoded import decode_once
from search.tasks.images import IMAGENET_MEAN, IMAGENET_STD, Normalized

NORM = {"size": 24, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}


def _files(tmp_path, n=6):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        h, w = 30 + 3 * i, 40 - 2 * i  # sizes differ: each is resized and centre-cropped
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _same_items(a, b) -> None:
    assert len(a) == len(b)
    for i in range(len(a)):
        (xa, ya), (xb, yb) = a[i], b[i]
        assert int(ya) == int(yb) and xa.shape == xb.shape == (3, 24, 24)
        # uint8 storage rounds each resized pixel: at most half a level, divided by the std.
        assert torch.allclose(xa, xb, atol=0.5 / 255 / min(IMAGENET_STD) + 1e-5)


def test_normalized_in_memory_when_float32_fits(tmp_path):
    files = Normalized(_files(tmp_path), list(range(6)), **NORM)
    decoded = decode_once(files, cache_dir=tmp_path / "cache")
    x, y = decoded.tensors
    assert x.dtype == torch.float32 and x.shape == (6, 3, 24, 24) and y.tolist() == list(range(6))
    assert not (tmp_path / "cache").exists()
    _same_items(files, decoded)


def test_uint8_in_memory_when_only_that_fits(tmp_path):
    files = Normalized(_files(tmp_path), list(range(6)), **NORM)
    decoded = decode_once(files, cache_dir=tmp_path / "cache", max_memory_bytes=6 * 3 * 24 * 24)
    assert isinstance(decoded.images, torch.Tensor) and decoded.images.dtype == torch.uint8
    assert decoded.images.shape == (6, 3, 24, 24)
    assert not (tmp_path / "cache").exists()  # it fitted in memory
    _same_items(files, decoded)
    assert decode_once(decoded, cache_dir=None, max_memory_bytes=0) is decoded  # nothing to do


def test_too_large_for_memory_is_memory_mapped_and_found_again(tmp_path):
    files = Normalized(_files(tmp_path), list(range(6)), **NORM)
    decoded = decode_once(files, cache_dir=tmp_path / "cache", max_memory_bytes=0)
    (mapped,) = (tmp_path / "cache" / "decoded").glob("*.u8")
    assert mapped.stat().st_size == 6 * 3 * 24 * 24
    _same_items(files, decoded)
    written = mapped.stat().st_mtime_ns
    again = decode_once(files, cache_dir=tmp_path / "cache", max_memory_bytes=0)
    assert mapped.stat().st_mtime_ns == written  # reused, not decoded again
    assert torch.equal(again.images, decoded.images)
    decoded.images[0].zero_()  # copy-on-write: the cache file is never changed
    assert torch.equal(decode_once(files, cache_dir=tmp_path / "cache", max_memory_bytes=0).images,
                       again.images)  # fmt: skip


def test_tensor_images_of_another_size_are_resized_once():
    images = torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8)
    ds = Normalized(images, [0, 1, 2], **NORM)
    _same_items(ds, decode_once(ds, cache_dir=None))
