"""Knowledge distillation: fine-tune the compressed student against the frozen teacher.

The loss is ``(1 - alpha) * CE(student, y) + alpha * T^2 * KL(softmax(t/T) || softmax(s/T))``.
Samples without a label (label ``-1``) contribute only the KL term, so a user without labels
gets pure soft-label distillation.

Example:
    >>> import torch
    >>> s, t = torch.zeros(1, 3), torch.zeros(1, 3)
    >>> float(distillation_loss(s, t, torch.tensor([0]), temperature=2.0, alpha=1.0))
    0.0
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """Hinton's KD loss; the KL term is scaled by T^2 so its gradient keeps its size."""
    t = temperature
    kl = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
    ) * (t * t)
    labelled = labels >= 0
    if not bool(labelled.any()):
        return kl
    ce = F.cross_entropy(student_logits[labelled], labels[labelled])
    if not bool(labelled.all()):
        # Unlabelled samples carry only the teacher's signal.
        share = labelled.float().mean()
        return share * ((1 - alpha) * ce + alpha * kl) + (1 - share) * kl
    return (1 - alpha) * ce + alpha * kl


class _Indexed(Dataset):
    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int):
        x, y = self.base[i]
        return x, y, i


@torch.no_grad()
def predict(model: nn.Module, data: Dataset, *, batch_size: int = 256) -> torch.Tensor:
    """Logits of ``model`` over ``data`` in order, in eval mode."""
    model.eval()
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    return torch.cat([model(x) for x, _ in loader])


@torch.no_grad()
def evaluate(model: nn.Module, data: Dataset, metric: Callable, *, batch_size: int = 256) -> float:
    """The task metric of ``model`` in torch (used between epochs; trials score ONNX files)."""
    loader = DataLoader(data, batch_size=batch_size, shuffle=False)
    model.eval()
    outs, labels = [], []
    for x, y in loader:
        outs.append(model(x))
        labels.append(y)
    return metric(torch.cat(outs).numpy(), torch.cat(labels).numpy())


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, data: Dataset, *, batch_size: int = 256, max_samples: int = 512
) -> None:
    """Recompute BatchNorm running statistics as exact averages over (the first
    ``max_samples`` items of) ``data``.

    After pruning and a few fast fine-tuning steps the running statistics lag far behind the
    weights (measured on digits at prune ratio 0.6: 10 % validation accuracy before, 76 % after).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the pass
    model.train()
    # 512 samples estimate the statistics well and keep this pass cheap: it runs every epoch.
    subset = Subset(data, range(min(len(data), max_samples)))  # type: ignore[arg-type]
    for x, _ in DataLoader(subset, batch_size=batch_size, shuffle=False):
        model(x)
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.eval()


def train(
    model: nn.Module,
    *,
    data: Dataset,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    teacher_logits: torch.Tensor | None = None,
    temperature: float = 4.0,
    alpha: float = 0.0,
    on_epoch: Callable[[int], None] | None = None,
    on_step: Callable[[], None] | None = None,
) -> nn.Module:
    """Train ``model`` in place with AdamW and a cosine schedule.

    With ``teacher_logits`` (one row per item of ``data``) the loss is the distillation loss;
    without, plain cross-entropy. ``on_epoch(epoch)`` runs after each epoch (1-based) and may
    raise to stop training early.
    """
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(_Indexed(data), batch_size=batch_size, shuffle=True, generator=generator)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * len(loader)))
    for epoch in range(1, epochs + 1):
        model.train()
        for x, y, idx in loader:
            out = model(x)
            if teacher_logits is None:
                loss = F.cross_entropy(out, y)
            else:
                loss = distillation_loss(
                    out, teacher_logits[idx], y, temperature=temperature, alpha=alpha
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if on_step is not None:
                on_step()
        recalibrate_batchnorm(model, data)
        if on_epoch is not None:
            on_epoch(epoch)
    return model
