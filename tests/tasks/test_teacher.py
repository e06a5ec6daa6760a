"""The teacher cache: trained on first use, then loaded (never retrained) by its key."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from search.errors import TaskError
from search.tasks.teacher import load_or_train


def _data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 3, (64,)))


def _build() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 3))


def _teacher(tmp_path, seed: int) -> nn.Module:
    data = _data()
    return load_or_train(
        key="tiny", build=_build, train=data, val=data, epochs=1, seed=seed, cache_dir=tmp_path
    )


def test_the_teacher_is_trained_once_then_loaded_from_its_cache(tmp_path):
    first = _teacher(tmp_path, seed=0)
    cached = tmp_path / "teachers" / "tiny.pt"
    stamp = cached.stat().st_mtime_ns
    # Another seed would train other weights: equal weights mean the cache was read.
    second = _teacher(tmp_path, seed=1)
    assert not second.training and cached.stat().st_mtime_ns == stamp
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not any(torch.equal(a, b) for a, b in zip(
        first.state_dict().values(), _teacher(tmp_path / "fresh", seed=1).state_dict().values(),
        strict=True,
    ) if a.numel() > 1)  # fmt: skip
    saved = torch.load(cached, weights_only=True)
    assert set(saved) == {"state_dict", "val_accuracy", "epochs"} and saved["epochs"] == 1


def test_an_unreadable_cached_teacher_is_one_line(tmp_path):
    (tmp_path / "teachers").mkdir()
    (tmp_path / "teachers" / "tiny.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TaskError, match="cannot be loaded .*delete it to retrain") as err:
        _teacher(tmp_path, seed=0)
    assert "\n" not in str(err.value)
