"""The teacher cache: trained on first use, then loaded (never retrained) by its key."""

from __future__ import annotations

import re
import time

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from search.core import progress
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


ANSI = re.compile(r"\x1b\[|[\u2800-\u28ff]")  # escape sequences, braille spinner frames


def test_training_to_a_log_file_says_each_epoch_with_its_loss_and_time_left(tmp_path, capsys):
    data = _data()
    load_or_train(
        key="tiny", build=_build, train=data, val=data, epochs=3, seed=0, cache_dir=tmp_path
    )
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines[0] == "training the tiny teacher (3 epochs, first use only) ..."
    epochs = [line for line in lines if line.startswith("  epoch ")]
    assert [line.split(":")[0] for line in epochs] == ["  epoch 1/3", "  epoch 2/3", "  epoch 3/3"]
    for line in epochs:
        assert re.fullmatch(
            r"  epoch \d/3: loss \d+\.\d{4}, [\d.]+ s elapsed, about .+ left", line
        )
    assert lines[-1].startswith("training the tiny teacher (3 epochs, first use only): done in ")
    assert not ANSI.search(captured.err)
    assert captured.out.startswith("teacher tiny: validation accuracy ")  # the final line stays


class _Slow(nn.Module):
    """Sleeps in each forward pass: an epoch that outlasts the heartbeat interval."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.03)
        return x


def test_an_epoch_longer_than_the_interval_says_its_batches_meanwhile(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(progress, "HEARTBEAT_S", 0.1)
    data = _data()  # 64 items in batches of 8: 8 batches of 30 ms or more each
    load_or_train(
        key="slow", build=lambda: nn.Sequential(_Slow(), _build()), train=data, val=data,
        epochs=1, seed=0, cache_dir=tmp_path, batch_size=8,
    )  # fmt: skip
    err = capsys.readouterr().err
    beats = [line for line in err.splitlines() if "elapsed: epoch 1/1, batch " in line]
    assert beats, err
    assert re.fullmatch(
        r"  \.\.\. [\d.]+ s elapsed: epoch 1/1, batch \d/8, running loss [\d.]+, about .+ left",
        beats[0],
    )
