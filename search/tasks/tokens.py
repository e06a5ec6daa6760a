"""The built-in ``tokens`` task: a small transformer that tags every token of generated
sequences, on int64 token ids, scored by per-token accuracy.

A complete worked example of a sequence task (docs/your-own-model.md): the input is (N, 24)
int64 token ids (0 is padding), the model (``nn.Embedding``, learned positions,
``nn.TransformerEncoder`` with ``nn.MultiheadAttention``, a Linear head per token) returns
(N, 24, 4) logits, the labels are (N, 24) tags with -1 at the first token and at padding,
distillation is Hinton's KD per token plus cross-entropy on the tags
(:class:`~search.compress.kd_losses.ClassKD` over the last dim, chosen from those shapes) and
the metric is token accuracy (:func:`~search.tasks.metrics.token_accuracy`).

The tag of token i > 0 is ``(id_i + id_0) mod 4``: the first token sets a mode every other
token needs, so the model must attend to it. The teacher is trained on first use (under a
minute on two cores) and cached.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from search.tasks.base import Task
from search.tasks.metrics import token_accuracy
from search.tasks.teacher import load_or_train

VOCAB, LENGTH, TAGS = 32, 24, 4
SPLITS = {"train": 2048, "val": 512, "test": 512}
TEACHER_EPOCHS = 10


class TokenTagger(nn.Module):
    """Token ids (N, L) -> per-token tag logits (N, L, tags)."""

    def __init__(self, *, dim: int = 64, heads: int = 4, layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.pos = nn.Parameter(torch.randn(1, LENGTH, dim) * 0.02)
        layer = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, TAGS)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(ids) + self.pos))


def sequences(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` sequences of ids (N, L) int64 and their tags (N, L) (-1: first token, padding)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, LENGTH), generator=g)
    lengths = torch.randint(LENGTH // 2, LENGTH + 1, (n,), generator=g)
    pad = torch.arange(LENGTH)[None, :] >= lengths[:, None]
    ids[pad] = 0
    tags = (ids + ids[:, :1]) % TAGS
    tags[pad] = -1
    tags[:, 0] = -1
    return ids, tags


def splits(seed: int) -> dict[str, TensorDataset]:
    out = {}
    for offset, (name, n) in enumerate(SPLITS.items()):
        out[name] = TensorDataset(*sequences(n, seed * 1000 + 200 + offset))
    return out


def make_task(*, seed: int, cache_dir: Path) -> Task:
    data = splits(seed)
    key = f"tokens-tagger-d64-l2-e{TEACHER_EPOCHS}-seed{seed}"
    teacher = load_or_train(
        key=key,
        build=TokenTagger,
        train=data["train"],
        val=data["val"],
        epochs=TEACHER_EPOCHS,
        seed=seed,
        cache_dir=cache_dir,
        lr=2e-3,
        criterion=_cross_entropy,
        metric=token_accuracy,
    )
    x, y = data["train"].tensors
    return Task(
        name="tokens",
        model=teacher,
        train=data["train"],
        val=data["val"],
        test=data["test"],
        calibration=TensorDataset(x[:128], y[:128]),
        example_input=data["test"].tensors[0][:1].clone(),
        metric=token_accuracy,
        metric_name="token_accuracy",
        ignored_layers=["head"],
        key=key,
    )


def _cross_entropy(outputs: tuple[torch.Tensor, ...], labels: torch.Tensor) -> torch.Tensor:
    from search.compress.kd_losses import ClassKD

    return ClassKD(class_dim=-1).supervised(outputs, labels)
