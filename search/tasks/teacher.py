"""Train a task's teacher once and cache it by task, architecture and seed.

Workers on one machine that share a results folder train it once: training holds a host lock
and the second worker then loads the cached file. The files used are remembered
(:func:`teacher_files`), so a study can share them with workers on other machines.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from search.compress import distill as kd
from search.core.paths import teachers_dir
from search.errors import TaskError
from search.tasks.base import accuracy

_USED: dict[str, Path] = {}
Criterion = Callable[[tuple[torch.Tensor, ...], torch.Tensor], torch.Tensor]
Metric = Callable[[Any, np.ndarray], float]


def teacher_files() -> dict[str, Path]:
    """``{key: cache file}`` of the teachers this process loaded or trained."""
    return dict(_USED)


def load_or_train(
    *,
    key: str,
    build: Callable[[], nn.Module],
    train: Dataset,
    val: Dataset,
    epochs: int,
    seed: int,
    cache_dir: Path,
    lr: float = 3e-3,
    batch_size: int = 64,
    criterion: Criterion | None = None,
    metric: Metric = accuracy,
    read: Callable[[list[np.ndarray]], Any] | None = None,
) -> nn.Module:
    """Return the cached teacher for ``key``, training and caching it on first use.

    ``criterion(outputs, labels)`` is the supervised loss (cross-entropy by default);
    ``metric`` (on ``read(outputs)``) is the validation figure printed once it is trained.
    """
    path = teachers_dir(cache_dir) / f"{key}.pt"
    model = build()
    if not path.is_file():
        from search.distributed.host_locks import host_lock

        with host_lock("teacher", str(path.resolve())):
            if not path.is_file():  # another worker may have trained it meanwhile
                return _train(
                    key=key,
                    path=path,
                    build=build,
                    train=train,
                    val=val,
                    epochs=epochs,
                    seed=seed,
                    lr=lr,
                    batch_size=batch_size,
                    criterion=criterion,
                    metric=metric,
                    read=read,
                )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"])
    except Exception as e:  # noqa: BLE001 - any unreadable cache is a user-fixable error
        raise TaskError(
            f"cached teacher {path} cannot be loaded ({type(e).__name__}); delete it to retrain"
        ) from None
    _USED[key] = path
    return model.eval()


def _train(
    *,
    key: str,
    path: Path,
    build: Callable[[], nn.Module],
    train: Dataset,
    val: Dataset,
    epochs: int,
    seed: int,
    lr: float,
    batch_size: int,
    criterion: Criterion | None,
    metric: Metric,
    read: Callable[[list[np.ndarray]], Any] | None,
) -> nn.Module:
    from search.core.progress import EpochReporter, Ticker

    torch.manual_seed(seed)
    model = build()
    start = time.perf_counter()
    with Ticker(f"training the {key} teacher ({epochs} epochs, first use only)") as ticker:
        epoch_lines = EpochReporter(ticker, epochs=epochs)
        kd.train(
            model, data=train, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
            criterion=criterion, on_epoch=epoch_lines.epoch, on_batch=epoch_lines.batch,
        )  # fmt: skip
    val_acc = kd.evaluate(model, val, metric, read=read)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": model.state_dict(), "val_accuracy": val_acc, "epochs": epochs}, tmp)
    tmp.replace(path)
    _USED[key] = path
    name = getattr(metric, "__name__", "metric")
    print(
        f"teacher {key}: validation {name} {val_acc:.4f}, "
        f"trained in {time.perf_counter() - start:.1f} s, cached at {path}"
    )
    return model.eval()
