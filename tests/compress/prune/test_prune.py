from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from search.compress.onnx_export import export_onnx
from search.compress.prune.step import count_macs, count_params, prune
from search.errors import ConfigError
from search.tasks.models import ResNet


def _conv_out_channels(path) -> dict[str, int]:
    model = onnx.load(str(path))
    inits = {i.name: i for i in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type == "Conv":
            out[node.input[1]] = inits[node.input[1]].dims[0]
    return out


@pytest.fixture
def model() -> ResNet:
    torch.manual_seed(0)
    m = ResNet(num_classes=10, widths=(16, 32, 32), blocks_per_stage=1).eval()
    # Non-trivial BatchNorm statistics, so a wrong channel mapping would show in the outputs.
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, torch.nn.BatchNorm2d):
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
    return m


def test_prune_half_really_removes_channels_and_onnx_matches(model, tmp_path):
    x = torch.randn(1, 1, 16, 16)
    pruned = prune(model, ratio=0.5, example_input=x, ignored_layers=["fc"], round_to=8)

    assert count_params(pruned) < 0.6 * count_params(model)
    assert count_macs(pruned, x) < count_macs(model, x)
    assert pruned.fc.out_features == 10  # the classifier head keeps its size
    assert count_params(model) == sum(p.numel() for p in model.parameters())  # original intact

    base_path = export_onnx(model, x, tmp_path / "base.onnx")
    pruned_path = export_onnx(pruned, x, tmp_path / "pruned.onnx")
    base_ch, pruned_ch = _conv_out_channels(base_path), _conv_out_channels(pruned_path)
    assert set(base_ch) == set(pruned_ch)
    assert sum(pruned_ch.values()) < sum(base_ch.values())
    assert all(c % 8 == 0 for c in pruned_ch.values())  # round_to from the profile

    batch = torch.randn(4, 1, 16, 16)
    session = ort.InferenceSession(str(pruned_path), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: batch.numpy()})[0]
    with torch.no_grad():
        want = pruned(batch).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)


def test_ratio_zero_is_an_unchanged_copy(model):
    x = torch.randn(1, 1, 16, 16)
    same = prune(model, ratio=0.0, example_input=x)
    assert same is not model
    assert count_params(same) == count_params(model)


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5])
def test_ratio_outside_unit_interval_is_a_config_error(model, ratio):
    with pytest.raises(ConfigError, match=r"prune ratio must lie in \[0.0, 1.0\)"):
        prune(model, ratio=ratio, example_input=torch.randn(1, 1, 16, 16))


def test_unknown_ignored_layer_is_a_config_error(model):
    with pytest.raises(ConfigError, match="not found"):
        prune(model, ratio=0.3, example_input=torch.randn(1, 1, 16, 16), ignored_layers=["head"])
