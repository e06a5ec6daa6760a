"""A trial's label states what ran, read from ONNX Runtime's optimized graph, not the plan."""

from __future__ import annotations

import onnx
import pytest
import torch

from search.compress.onnx_export import export_onnx
from search.compress.quantize.audit import OUTSIDE_GROUPS, group_labels, layer_kernels
from search.compress.quantize.calibration import calibrate
from search.compress.quantize.qdq import quantize
from search.measure.runtime import create_session
from search.report import precision_summary
from search.tasks.models import ResNet
from tests.conftest import quick_profile, trial_record

GROUPS = {
    "stem": ["stem"],
    "b0": ["layers.0"],
    "b1": ["layers.1"],
    "b2": ["layers.2"],
    "fc": ["fc"],
}


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audit")
    torch.manual_seed(0)
    model = ResNet(num_classes=4, widths=(8, 16, 16), blocks_per_stage=1).eval()
    x = torch.randn(16, 1, 16, 16)
    path = export_onnx(model, x[:1], folder / "m.onnx")
    return calibrate(path, x.numpy(), method="minmax", cache_dir=folder / "c"), folder


def _ran(calib, folder, plan, groups, name):
    q = quantize(calib, folder / f"{name}.q.onnx", plan=plan, groups=groups)
    opt = folder / f"{name}.opt.onnx"
    create_session(q.path, quick_profile().measure_spec(), optimized_path=opt)
    return group_labels(layer_kernels(onnx.load(str(opt)), q.layer_types), q.weight_groups)


def test_groups_are_labelled_by_the_kernels_that_ran(calib):
    calib, folder = calib
    plan = {"stem": "int8", "b0": "float", "b1": "int8", "b2": "int4", "fc": "int8"}
    ran = _ran(calib, folder, plan, GROUPS, "mixed")
    # int4 weights have no integer kernel on the CPU provider: that group ran in float.
    assert ran == {"stem": "int8", "b0": "float", "b1": "int8", "b2": "float", "fc": "int8"}
    assert precision_summary(trial_record(ran=ran)) == "int8: stem, b1, fc; float: b0, b2"


def test_a_layer_the_plan_leaves_float_but_that_ran_int8_is_labelled_int8(calib):
    """Nodes outside every group follow ``ungrouped: quantize`` whenever anything is quantized:
    with the plan's groups mostly float, the blocks no group names still ran as integer kernels,
    and the label says so (the plan alone said "float x1, int8 x1")."""
    calib, folder = calib
    groups, plan = {"stem": ["stem"], "fc": ["fc"]}, {"stem": "float", "fc": "int8"}
    ran = _ran(calib, folder, plan, groups, "outside")
    assert ran == {"stem": "float", "fc": "int8", OUTSIDE_GROUPS: "int8"}
    record = trial_record(ran=ran, config={"quantize": {"precision": plan}})
    assert precision_summary(record) == f"float: stem; int8: {OUTSIDE_GROUPS}, fc"
