"""Precision groups derived from the model's structure own real layers of the exported file."""

from __future__ import annotations

import onnx
import pytest
import torch

from search.compress.onnx_export import export_onnx
from search.compress.quantize.derive_groups import derive_groups
from search.compress.quantize.groups import layer_nodes, owned_layers
from tests.fault_models import example


def _owned(model, x, groups, tmp_path):
    path = export_onnx(model, x, tmp_path / "m.onnx")
    return owned_layers(onnx.load(str(path)), groups), onnx.load(str(path))


def test_resnet18_gets_its_stem_stages_and_head(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    groups = derive_groups(model, x, n_groups=5)
    assert len(groups) == 5
    assert list(groups)[0] == "conv1" and list(groups)[-1] == "fc"  # stem and head apart
    owned, graph = _owned(model, x, groups, tmp_path)
    assert all(owned.values()), owned
    assert sum(len(v) for v in owned.values()) == len(layer_nodes(graph))  # every layer owned


@pytest.mark.parametrize(("name", "n"), [("conv1d", 5), ("tiny_vit", 4), ("lstm", 5)])
def test_small_models_get_groups_that_own_layers(name, n, tmp_path):
    model, x = example(name)
    groups = derive_groups(model, x, n_groups=n)
    assert 2 <= len(groups) <= n
    owned, _ = _owned(model, x, groups, tmp_path)
    assert all(owned.values()), owned


def test_a_vit_is_split_into_its_encoder_blocks():
    model, x = example("tiny_vit")  # conv_proj, encoder (2 blocks inside a wrapper), heads
    groups = derive_groups(model, x, n_groups=4)
    inner = [p for pats in groups.values() for p in pats if p.startswith("encoder.layers.")]
    assert len(inner) == 2, groups
