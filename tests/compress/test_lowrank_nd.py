"""Low-rank covers Conv1d and Conv3d (channel SVD), and says which layer types it skips and why."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from search.compress.lowrank import factorize
from search.compress.svd import factorize_conv, full_rank, layer_kind
from tests.fault_models import example

CONVS = [
    nn.Conv1d(8, 16, 5, padding=2),
    nn.Conv1d(32, 64, 3, stride=2, padding=1),
    nn.Conv1d(16, 16, 3, padding=2, dilation=2, bias=False),
    nn.Conv1d(8, 4, 7, padding=3, padding_mode="circular"),
    nn.Conv1d(8, 8, 3, padding="same", padding_mode="reflect"),
    nn.Conv1d(1, 32, 5, padding=2),
    nn.Conv3d(4, 8, 3, padding=1, padding_mode="replicate"),
]


@pytest.mark.parametrize("conv", CONVS, ids=lambda c: str(c)[:40])
def test_channel_svd_of_any_convnd_is_exact_at_full_rank(conv):
    torch.manual_seed(0)
    x = torch.randn(2, conv.in_channels, *([12] * (conv.weight.dim() - 2)))
    kind = layer_kind(conv, "spatial")  # spatial SVD needs two spatial axes: channel it is
    assert kind == "channel"
    pair = factorize_conv(conv, full_rank(conv, kind), kind)
    assert [type(m) for m in pair] == [type(conv)] * 2
    with torch.no_grad():
        assert (pair(x) - conv(x)).abs().max().item() < 1e-5


def test_a_conv1d_model_is_factorized_and_its_records_say_so():
    model, x = example("conv1d", batch=4)
    small, records = factorize(model, example_input=x, rank_ratio=0.25, kind="spatial")
    by_name = {r.name: r for r in records}
    factorized = [r for r in records if not r.skipped]
    assert {r.layer for r in factorized} >= {"Conv1d"}
    assert by_name["features.2"].kind == "channel" and not by_name["features.2"].skipped
    assert sum(r.macs_after for r in records) < sum(r.macs_before for r in records)
    assert isinstance(small.features[2], nn.Sequential)
    with torch.no_grad():
        assert small(x).shape == model(x).shape


def test_layer_types_low_rank_does_not_factorize_are_recorded_with_why():
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up = nn.ConvTranspose1d(4, 8, 2, stride=2)
            self.rnn = nn.LSTM(8, 8, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            out, _ = self.rnn(self.up(x).transpose(1, 2))
            return self.head(out[:, -1])

    _, records = factorize(Mixed().eval(), example_input=torch.randn(1, 4, 5), rank_ratio=0.5)
    why = {r.name: r.skipped for r in records}
    assert "transposed convs are not factorized" in why["up"]
    assert "recurrent weights are not factorized" in why["rnn"]
