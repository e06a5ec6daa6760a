"""A sequence classifier: Conv1d front end, one-layer LSTM, and a Linear head on the last step."""

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from search.tasks import Task


class ConvLSTMNet(nn.Module):
    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.front = nn.Sequential(nn.Conv1d(6, 32, 3, padding=1), nn.ReLU())
        self.rnn = nn.LSTM(32, 48, num_layers=1, batch_first=True)
        self.head = nn.Linear(48, classes)

    def forward(self, x):  # x: (N, 6, T)
        h = self.front(x).transpose(1, 2)  # (N, T, 32)
        out, _ = self.rnn(h)
        return self.head(out[:, -1])


def make_task(*, seed: int, cache_dir: Path) -> Task:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 6, 20, generator=g)
    y = torch.randint(0, 4, (96,), generator=g)
    torch.manual_seed(seed)
    return Task(
        name="conv-lstm",
        model=ConvLSTMNet().eval(),
        train=TensorDataset(x[:64], y[:64]),
        val=TensorDataset(x[64:80], y[64:80]),
        test=TensorDataset(x[80:], y[80:]),
        calibration=TensorDataset(x[:16], y[:16]),
        example_input=x[:1].clone(),
        key=f"conv-lstm-seed{seed}",
    )
