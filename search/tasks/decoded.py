"""Decode and resize image data once per study, not once per epoch.

:class:`~search.tasks.images.Normalized` over image files decodes (PIL) and resizes every image
each time an item is read: every distillation epoch of every trial pays for it again, and on a
GPU that decoding, not the model, would set the pace. :func:`decode_once` does the work once,
resized and centre-cropped to the model's input size, and keeps the cheapest form that fits the
memory budget:

1. normalized float32 in memory (a ``TensorDataset``: reading an item is a tensor view, and a
   batch is one copy);
2. else ``uint8`` in memory (a quarter of the size), normalized on access;
3. else ``uint8`` in a memory-mapped file under the study's results folder
   (``<cache_dir>/decoded/<digest>.u8``) that the OS pages in as needed and that a resumed study
   finds again.

Example:
    >>> import torch
    >>> from search.tasks.images import Normalized
    >>> ds = Normalized(torch.zeros(2, 3, 40, 40, dtype=torch.uint8), [0, 1], size=32,
    ...                 mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    >>> decode_once(ds, cache_dir=None).tensors[0].shape
    torch.Size([2, 3, 32, 32])
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from search.tasks.images import Normalization, Normalized, _resize_center_crop

# Decoded data may take this share of the memory available when the task loads; the rest is
# left to training, the sessions and other workers.
MEMORY_SHARE = 0.25
FALLBACK_BUDGET = 2 << 30  # when /proc/meminfo cannot be read


def memory_budget() -> int:
    """Bytes decoded data may keep in memory: :data:`MEMORY_SHARE` of ``MemAvailable``."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(int(line.split()[1]) * 1024 * MEMORY_SHARE)
    except (OSError, ValueError, IndexError):
        pass
    return FALLBACK_BUDGET


def _digest(ds: Normalized) -> str:
    """Identifies the decoded array: the files (path, size, mtime) or tensor bytes, and size."""
    h = hashlib.sha256(f"v1:{ds.size}:{len(ds)}".encode())
    if isinstance(ds.images, torch.Tensor):
        h.update(ds.images.contiguous().numpy().tobytes())
    else:
        for p in ds.images:
            st = os.stat(p)
            h.update(f"{p}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:20]


def _decoded(ds: Normalized, i: int) -> np.ndarray:
    image = ds.images[i]
    x = Normalized._decode(image) if isinstance(image, Path) else image
    if x.shape[-2:] != (ds.size, ds.size):
        x = _resize_center_crop(x.float(), ds.size).round().clamp(0, 255).to(torch.uint8)
    return x.numpy()


def decode_once(
    ds: Normalized, *, cache_dir: Path | None, max_memory_bytes: int | None = None
) -> Normalized | TensorDataset:
    """``ds`` with every image decoded and resized once (the same items in the same order, up
    to the rounding of resized pixels to uint8): a ``TensorDataset`` of normalized float32
    ``N x C x size x size`` inputs and labels when that fits ``max_memory_bytes``, else a
    :class:`Normalized` over a uint8 tensor (in memory, or memory-mapped under ``cache_dir``).

    Args:
        ds: Images as files or as a uint8 tensor of any size.
        cache_dir: Where the memory-mapped file goes when the data does not fit in memory (its
            ``decoded/`` folder); None keeps everything in memory.
        max_memory_bytes: The in-memory budget (default :func:`memory_budget`).

    Raises:
        TaskError: an image cannot be read (from the decoder).
    """
    if len(ds) == 0:
        return ds
    first = _decoded(ds, 0)
    shape = (len(ds), *first.shape)
    budget = memory_budget() if max_memory_bytes is None else max_memory_bytes
    if 5 * int(np.prod(shape)) <= budget:  # float32 plus the uint8 array it is made from
        array = np.empty(shape, dtype=np.uint8)
        _fill(ds, array, first)
        x = torch.from_numpy(array).float().div_(255.0).sub_(ds.mean).div_(ds.std)
        return TensorDataset(x, torch.as_tensor(ds.labels, dtype=torch.long))
    if isinstance(ds.images, torch.Tensor) and tuple(ds.images.shape[-2:]) == (ds.size,) * 2:
        return ds  # already uint8 at the input size: nothing to decode or resize
    if cache_dir is None or int(np.prod(shape)) <= budget:
        array = np.empty(shape, dtype=np.uint8)
        _fill(ds, array, first)
    else:
        array = _mapped(ds, shape, first, Path(cache_dir) / "decoded")
    norm: Normalization = {
        "size": ds.size,
        "mean": ds.mean.flatten().tolist(),
        "std": ds.std.flatten().tolist(),
    }
    return Normalized(torch.from_numpy(array), ds.labels, **norm)


def _fill(ds: Normalized, array: np.ndarray, first: np.ndarray) -> None:
    array[0] = first
    for i in range(1, len(ds)):
        array[i] = _decoded(ds, i)


def _mapped(ds: Normalized, shape: tuple[int, ...], first: np.ndarray, folder: Path) -> np.ndarray:
    """The memory-mapped array of ``ds``: reused when complete, else written (under a temporary
    name, renamed when done, so a crash never leaves a half-written file that looks complete)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{_digest(ds)}.u8"
    if not path.is_file() or path.stat().st_size != int(np.prod(shape)):
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        out = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)
        _fill(ds, out, first)
        out.flush()
        del out
        os.replace(tmp, path)
    # Copy-on-write: torch gets a writable array, the file is never changed.
    return np.memmap(path, dtype=np.uint8, mode="c", shape=shape)
