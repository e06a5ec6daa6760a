"""Knowledge distillation: fine-tune the compressed student against the frozen teacher.

The loss fits what the model returns (:mod:`search.compress.kd_losses`); for class logits it
is ``(1 - alpha) * CE(student, y) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))``. Samples
without a label (label ``-1``) contribute only the KL term, so a user without labels gets pure
soft-label distillation. The step declares its own space section (:class:`DistillSpace`)
and the part of a trial's config it runs from (:class:`DistillConfig`).

Example:
    >>> import torch
    >>> s, t = torch.zeros(1, 3), torch.zeros(1, 3)
    >>> float(distillation_loss(s, t, torch.tensor([0]), temperature=2.0, alpha=1.0))
    0.0
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sized
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, cast

from pydantic import Field, model_validator

from search.compress.kd_losses import ClassKD, DistillLoss
from search.core.device import autocast, grad_scaler, moved
from search.core.device import current as train_device
from search.core.schema import Bounds, FloatRange, IntRange, Section
from search.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import optuna
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

# torch is imported inside the functions: config.py imports this module for DistillSpace, and
# loading a space must stay cheap and possible without torch.

# Allowed values of the searched settings: a space's ranges and a trial's values alike.
_BOUNDS = {
    "epochs": Bounds(1, 1000),
    "temperature": Bounds(1e-3, 100.0),
    "alpha": Bounds(0.0, 1.0),
    "lr": Bounds(1e-8, 10.0),
}


class DistillSpace(Section):
    """Knowledge distillation from the frozen, uncompressed teacher after compression."""

    epochs: IntRange = IntRange(low=1, high=3)
    temperature: FloatRange = FloatRange(low=1.0, high=8.0)
    alpha: FloatRange = FloatRange(low=0.0, high=1.0)
    lr: FloatRange = FloatRange(low=1e-3, high=1e-2, log=True)
    batch_size: int = Field(32, ge=1)
    # Precision plans measured per distilled student: after a trial distills a new student, the
    # study enqueues plans_per_student - 1 trials that reuse it (search.trial.students). 1: no
    # reuse.
    plans_per_student: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _check(self) -> DistillSpace:
        for key, bounds in _BOUNDS.items():
            bounds.check_range(getattr(self, key), key)
        return self

    def hand_pipeline(self) -> dict[str, Any]:
        """The warm start's distillation: the largest epoch budget, AdamW's lr at the geometric
        middle of its range, temperature and KD weight at :class:`DistillConfig`'s defaults
        (clipped to the space); only searched parameters are named."""
        default = DistillConfig()
        out: dict[str, Any] = {}
        if self.epochs.low != self.epochs.high:
            out["epochs"] = self.epochs.high
        if self.lr.low != self.lr.high:
            out["lr"] = math.sqrt(self.lr.low * self.lr.high)
        for name in ("temperature", "alpha"):
            rng = getattr(self, name)
            if rng.low != rng.high:
                out[name] = min(max(getattr(default, name), rng.low), rng.high)
        return out

    def sample(self, trial: optuna.Trial) -> DistillConfig:
        """This trial's fine-tuning: Optuna parameters ``epochs``, ``temperature``, ``alpha``,
        ``lr`` (a fixed range is no parameter)."""
        return DistillConfig(
            epochs=self.epochs.suggest(trial, "epochs"),
            temperature=self.temperature.suggest(trial, "temperature"),
            alpha=self.alpha.suggest(trial, "alpha"),
            lr=self.lr.suggest(trial, "lr"),
            batch_size=self.batch_size,
        )


@dataclass(frozen=True)
class DistillConfig:
    """How one trial fine-tunes its student: epochs, KD temperature and weight, AdamW's lr."""

    epochs: int = 1
    temperature: float = 4.0
    alpha: float = 0.5
    lr: float = 1e-3
    batch_size: int = 64

    def __post_init__(self) -> None:
        for key, bounds in _BOUNDS.items():
            bounds.check(getattr(self, key), key)
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, but got {self.batch_size}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def active(self) -> dict[str, Any]:
        """The Optuna parameters this part stands for (fixed ones are no parameter)."""
        return {k: getattr(self, k) for k in ("epochs", "temperature", "alpha", "lr")}


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Hinton's KD loss on (N, classes) logits (:class:`~search.compress.kd_losses.ClassKD`);
    the KL term is scaled by T^2 so its gradient keeps its size."""
    return ClassKD()(
        (student_logits,), (teacher_logits,), labels, temperature=temperature, alpha=alpha
    )


def as_tuple(out: Any) -> tuple[torch.Tensor, ...]:
    """A model's raw outputs as a tuple: one tensor, or the tensors of a tuple or list."""
    return tuple(out) if isinstance(out, tuple | list) else (out,)


if TYPE_CHECKING:
    # A Dataset to the type checker; torch stays unimported until training (Dataset adds
    # nothing at run time that DataLoader needs beyond __getitem__ and __len__).
    _IndexedBase = Dataset[tuple[Any, Any, int]]
else:
    _IndexedBase = object


class _Indexed(_IndexedBase):
    """Items of ``base`` with their index, so each sample meets its own teacher logits."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(cast(Sized, self.base))  # torch's Dataset declares no __len__

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return x, y, i


def predict_outputs(
    model: nn.Module, data: Dataset, *, batch_size: int = 256
) -> tuple[torch.Tensor, ...]:
    """Every output of ``model`` over ``data`` in order, in eval mode, computed on the training
    device (:func:`search.core.device.current`) and returned as float32 tensors on the CPU."""
    import torch

    device = train_device()
    model.eval()
    parts: list[tuple[torch.Tensor, ...]] = []
    with torch.no_grad(), moved(model, device):
        for x, _ in _loader(data, batch_size, device):
            parts.append(tuple(o.float().cpu() for o in as_tuple(_forward(model, x, device))))
    return tuple(torch.cat(column) for column in zip(*parts, strict=True))


def predict(model: nn.Module, data: Dataset, *, batch_size: int = 256) -> torch.Tensor:
    """The (first) output of ``model`` over ``data``, as :func:`predict_outputs`."""
    return predict_outputs(model, data, batch_size=batch_size)[0]


def outputs_and_labels(
    model: nn.Module, data: Dataset, *, batch_size: int = 256
) -> tuple[list[np.ndarray], np.ndarray]:
    """Every output of ``model`` over ``data`` as float32 arrays, and the labels stacked."""
    import torch

    device = train_device()
    model.eval()
    parts: list[tuple[torch.Tensor, ...]] = []
    labels = []
    with torch.no_grad(), moved(model, device):
        for x, y in _loader(data, batch_size, device):
            parts.append(tuple(o.float().cpu() for o in as_tuple(_forward(model, x, device))))
            labels.append(torch.as_tensor(y))
    outs = [torch.cat(column).numpy() for column in zip(*parts, strict=True)]
    return outs, torch.cat(labels).numpy()


def evaluate(
    model: nn.Module,
    data: Dataset,
    metric: Callable,
    *,
    batch_size: int = 256,
    read: Callable[[list[np.ndarray]], Any] | None = None,
) -> float:
    """The task metric of ``model`` in torch (used between epochs; trials score ONNX files).

    ``read(arrays)`` turns the outputs (one float32 array per output, batch first) into what
    the metric takes (:meth:`search.tasks.outputs.Outputs.read`); without it, the first output.
    """
    outs, labels = outputs_and_labels(model, data, batch_size=batch_size)
    return metric(read(outs) if read is not None else outs[0], labels)


def _loader(data: Dataset, batch_size: int, device: torch.device, **kwargs: Any) -> DataLoader:
    """A DataLoader whose batches can be copied to a GPU asynchronously (pinned memory)."""
    from torch.utils.data import DataLoader

    return DataLoader(data, batch_size=batch_size, pin_memory=device.type == "cuda", **kwargs)


def _forward(model: nn.Module, x: torch.Tensor, device: torch.device) -> Any:
    """``model(x)`` on ``device`` (a tensor or a tuple of tensors), in mixed precision on
    CUDA."""
    with autocast(device):
        return model(x.to(device, non_blocking=True))


def recalibrate_batchnorm(
    model: nn.Module, data: Dataset, *, batch_size: int = 256, max_samples: int = 512
) -> None:
    """Recompute BatchNorm running statistics as exact averages over (the first
    ``max_samples`` items of) ``data``.

    After pruning and a few fast fine-tuning steps the running statistics lag far behind the
    weights (measured on digits at prune ratio 0.6: 10 % validation accuracy before, 76 % after).
    """
    import torch
    from torch import nn
    from torch.utils.data import Subset

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
    device = train_device()
    model.train()
    # 512 samples estimate the statistics well and keep this pass cheap: it runs every epoch.
    subset = Subset(data, range(min(len(data), max_samples)))  # type: ignore[arg-type]
    with torch.no_grad(), moved(model, device):
        for x, _ in _loader(subset, batch_size, device, shuffle=False):
            _forward(model, x, device)
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.eval()


Teacher = Any  # torch.Tensor | tuple[torch.Tensor, ...] (precomputed) or nn.Module (online)


def train(
    model: nn.Module,
    *,
    data: Dataset,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    teacher_logits: Teacher | None = None,
    temperature: float = 4.0,
    alpha: float = 0.0,
    on_epoch: Callable[[int], None] | None = None,
    loss: DistillLoss | None = None,
    criterion: Callable[[tuple[torch.Tensor, ...], torch.Tensor], torch.Tensor] | None = None,
    on_batch: Callable[[int, int, float], None] | None = None,
) -> nn.Module:
    """Train ``model`` in place with AdamW and a cosine schedule on the training device
    (:func:`search.core.device.current`; mixed precision on CUDA), back on its own device after.

    With ``teacher_logits`` the loss is ``loss`` (default :class:`ClassKD`) between the
    model's outputs and the teacher's: a tensor or tuple of tensors with one row per item of
    ``data`` (precomputed by :func:`predict_outputs`), or the teacher module itself, run on
    each batch (for outputs too large to keep). Without, the supervised ``criterion(outputs,
    labels)`` (default: cross-entropy, :meth:`ClassKD.supervised`). ``on_epoch(epoch)`` after
    each epoch (1-based; may raise to stop early), ``on_batch(batch, batches, loss)`` after each
    step (1-based in its epoch; reading ``loss`` waits for the device: only when asked).
    """
    import torch
    from torch import nn

    device = train_device()
    generator = torch.Generator().manual_seed(seed)
    loader = _loader(_Indexed(data), batch_size, device, shuffle=True, generator=generator)
    kd_loss, supervised = loss or ClassKD(), criterion or ClassKD().supervised
    online = isinstance(teacher_logits, nn.Module)
    with moved(model, device), _teacher_on(teacher_logits, device) as targets:
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * len(loader)))
        scaler = grad_scaler(device)
        for epoch in range(1, epochs + 1):
            model.train()
            for batch, (x, y, idx) in enumerate(loader, 1):
                out = tuple(o.float() for o in as_tuple(_forward(model, x, device)))
                labels = y.to(device, non_blocking=True)
                if targets is None:
                    value = supervised(out, labels)
                else:
                    teacher = _teacher_batch(targets, x, idx, device, online=online)
                    value = kd_loss(out, teacher, labels, temperature=temperature, alpha=alpha)
                opt.zero_grad(set_to_none=True)
                scaler.scale(value).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
                if on_batch is not None:
                    on_batch(batch, len(loader), float(value.detach()))
            recalibrate_batchnorm(model, data)
            if on_epoch is not None:
                on_epoch(epoch)
    return model


@contextlib.contextmanager
def _teacher_on(teacher: Teacher | None, device: torch.device) -> Iterator[Any]:
    """The teacher's outputs on ``device`` as a tuple, or the teacher module moved there."""
    from torch import nn

    if teacher is None:
        yield None
    elif isinstance(teacher, nn.Module):
        with moved(teacher.eval(), device):
            yield teacher
    else:
        yield tuple(t.to(device) for t in as_tuple(teacher))


def _teacher_batch(
    teacher: Any, x: torch.Tensor, idx: torch.Tensor, device: torch.device, *, online: bool
) -> tuple[torch.Tensor, ...]:
    """The teacher's outputs for the batch: its rows ``idx`` of the precomputed outputs, or
    the teacher module run on ``x``."""
    import torch

    if not online:
        return tuple(t[idx.to(device)] for t in teacher)
    with torch.no_grad():
        return tuple(o.float() for o in as_tuple(_forward(teacher, x, device)))


def distill_step(
    student: nn.Module,
    cfg: DistillConfig,
    *,
    data: Dataset,
    teacher_logits: Teacher,
    seed: int,
    on_epoch: Callable[[int], None] | None = None,
    loss: DistillLoss | None = None,
) -> nn.Module:
    """The trial's step: :func:`train` against the teacher's outputs (or the teacher itself)
    with the trial's config and the task's ``loss``."""
    import torch

    torch.manual_seed(seed)
    return train(
        student,
        data=data,
        epochs=cfg.epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        seed=seed,
        teacher_logits=teacher_logits,
        temperature=cfg.temperature,
        alpha=cfg.alpha,
        on_epoch=on_epoch,
        loss=loss,
    )
