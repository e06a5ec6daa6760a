"""What identifies a task's teacher and data: SHA-256 digests of tensors, state_dicts and
datasets. A study records them (``teacher``, ``data_sha256``) and refuses a worker whose differ;
the student store keys distilled students by them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sized
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import torch
    from torch.utils.data import Dataset

    from search.tasks.base import Task


def _tensor_bytes(t: torch.Tensor) -> bytes:
    import torch

    t = t.detach().to("cpu").contiguous()
    return t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""


def state_dict_digest(state_dict: Mapping[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of a state_dict's tensors, in name order."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(_tensor_bytes(t))
    return h.hexdigest()


def dataset_digest(dataset: Dataset, *, samples: int = 64) -> str:
    """sha256 of a dataset: every tensor of a TensorDataset, else its length and ``samples``
    evenly spaced items (cheap for image folders; catches another split, order or transform)."""
    import torch

    h = hashlib.sha256()
    tensors = getattr(dataset, "tensors", None)
    if tensors is not None:
        for t in tensors:
            h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(_tensor_bytes(t))
        return h.hexdigest()
    n = len(cast(Sized, dataset))  # torch's Dataset declares no __len__; a task's splits have it
    h.update(str(n).encode())
    picks = {round(k * (n - 1) / max(samples - 1, 1)) for k in range(samples)} if n else set()
    for i in sorted(picks):
        for part in dataset[i]:
            h.update(_tensor_bytes(torch.as_tensor(part)))
    return h.hexdigest()


def task_digests(task: Task) -> dict[str, str]:
    """The digests a study records of its task: teacher weights and data splits."""
    data = hashlib.sha256()
    for split in (task.train, task.val, task.test, task.calibration):
        data.update(dataset_digest(split).encode())
    return {
        "teacher": state_dict_digest(task.model.state_dict()),
        "data": data.hexdigest(),
    }
