"""Kernel counts read the optimized graph of the very session the measurement builds."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from search.compress.onnx_export import export_onnx
from search.compress.quantize.calibration import calibrate
from search.compress.quantize.qdq import quantize
from search.measure import MeasureSpec, ProviderSpec
from search.measure.kernels import count_kernels, kernel_report, optimized_graph
from search.tasks.models import ResNet

CPU = MeasureSpec(providers=(ProviderSpec("CPUExecutionProvider"),))


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    """A tiny ResNet, all int8 QDQ: on the CPU provider its convs fuse into QLinearConv."""
    out = tmp_path_factory.mktemp("int8")
    torch.manual_seed(0)
    x = torch.randn(16, 1, 16, 16)
    path = export_onnx(ResNet(num_classes=4, widths=(8, 8, 8)).eval(), x[:1], out / "m.onnx")
    calib = calibrate(path, x.numpy(), method="minmax", cache_dir=out / "calib")
    return quantize(calib, out / "m.q.onnx", plan={"all": "int8"}, groups={"all": ["*"]}).path


def test_kernel_counts_use_the_profiles_session_config(int8_model, tmp_path):
    fused = kernel_report(int8_model, CPU, tmp_path / "fused.opt.onnx")
    assert fused["integer_layers"] > 0 and fused["float_layers_after_dequantize"] == 0
    # With QDQ fusion off in the profile's session config, the measured session runs every conv
    # in float behind DequantizeLinear; the count must say so, not count another session.
    unfused = dataclasses.replace(CPU, session_config={"session.disable_quant_qdq": "1"})
    plain = kernel_report(int8_model, unfused, tmp_path / "plain.opt.onnx")
    assert plain["integer_layers"] == 0
    assert plain["float_layers_after_dequantize"] >= fused["integer_layers"]


def test_the_optimized_graph_is_saved_where_asked(int8_model, tmp_path):
    import onnx

    path = optimized_graph(int8_model, CPU, tmp_path / "deep" / "opt.onnx")
    report = kernel_report(int8_model, CPU, tmp_path / "again.opt.onnx")
    assert report.pop("optimized_graph") == str(tmp_path / "again.opt.onnx")
    assert report.pop("method") == "ONNX Runtime's optimized graph"
    assert count_kernels(onnx.load(str(path))) == report
    assert report["ops"]["QLinearConv"] >= 1 and report["dequantize_nodes"] >= 1
