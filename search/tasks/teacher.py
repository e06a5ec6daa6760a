"""Train a task's teacher once and cache it by task, architecture and seed."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from search.compress import distill as kd
from search.errors import TaskError
from search.tasks.base import accuracy


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
) -> nn.Module:
    """Return the cached teacher for ``key``, training and caching it on first use."""
    path = Path(cache_dir) / "teachers" / f"{key}.pt"
    model = build()
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(state["state_dict"])
        except Exception as e:  # noqa: BLE001 - any unreadable cache is a user-fixable error
            raise TaskError(
                f"cached teacher {path} cannot be loaded ({type(e).__name__}); "
                "delete it to retrain"
            ) from None
        return model.eval()
    from search.progress import status

    torch.manual_seed(seed)
    model = build()
    start = time.perf_counter()
    with status(f"training the {key} teacher ({epochs} epochs, first use only)"):
        kd.train(model, data=train, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    val_acc = kd.evaluate(model, val, accuracy)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"state_dict": model.state_dict(), "val_accuracy": val_acc, "epochs": epochs}, tmp)
    tmp.replace(path)
    print(
        f"teacher {key}: validation accuracy {val_acc:.4f}, "
        f"trained in {time.perf_counter() - start:.1f} s, cached at {path}"
    )
    return model.eval()
