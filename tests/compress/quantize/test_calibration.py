"""Quantization never takes the run down: pre-processing falls back (and says so once),
calibration takes any number of samples with every method, and a group that cannot be quantized
stays float with the reason."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch

from search.compress.onnx_export import export_onnx
from search.compress.quantize.calibration import calibrate, equal_batch
from search.compress.quantize.qdq import QuantizeConfig, QuantizeSpace, quantize
from search.compress.quantize.step import quantize_step
from tests.fault_models import example


@pytest.mark.parametrize(("n", "batch"), [(60, 30), (48, 24), (61, 1), (128, 32), (7, 7), (1, 1)])
def test_equal_batches_divide_the_samples(n, batch):
    assert equal_batch(n) == batch


@pytest.fixture(scope="module")
def upnet(tmp_path_factory):
    """The case model of resize-symbolic-shape-crash: nn.Upsample is an ONNX Resize."""
    folder = tmp_path_factory.mktemp("upnet")
    model, x = example("upsample")
    return export_onnx(model, x, folder / "model.onnx"), x


@pytest.mark.parametrize("method", ["minmax", "entropy", "percentile"])
@pytest.mark.parametrize("n", [48, 60, 7])
def test_any_number_of_samples_calibrates_with_every_method(upnet, method, n, tmp_path):
    path, x = upnet
    inputs = np.random.default_rng(n).standard_normal((n, *x.shape[1:])).astype("f4")
    calib = calibrate(path, inputs, method=method, cache_dir=tmp_path)
    ranges = json.loads(calib.ranges.read_text())["data"]
    assert ranges and all(len(v) >= 2 for v in ranges.values())


def test_pre_processing_falls_back_says_so_and_leaves_the_working_directory_clean(
    upnet, tmp_path, monkeypatch
):
    path, x = upnet
    monkeypatch.chdir(tmp_path)
    inputs = np.random.default_rng(0).standard_normal((16, *x.shape[1:])).astype("f4")
    first = calibrate(path, inputs, method="minmax", cache_dir=tmp_path / "calib")
    assert len(first.notes) == 1 and "without symbolic shape inference" in first.notes[0]
    assert "Incomplete symbolic shape inference" in first.notes[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib"]  # no sym_shape_infer_temp
    again = calibrate(path, inputs, method="minmax", cache_dir=tmp_path / "calib")
    assert not again.computed and again.notes == first.notes  # the note travels with the cache
    q = quantize(again, tmp_path / "q.onnx", plan={"all": "int8"}, groups={"all": ["*"]})
    assert "int8" in q.layer_types.values()


def test_a_group_that_cannot_be_quantized_stays_float_with_the_reason(tmp_path):
    """A group whose activations have no calibrated range cannot be quantized statically:
    ONNX Runtime raises for the whole plan; the step keeps that group float and says why."""
    torch.manual_seed(0)
    model, x = example("conv1d")
    path = export_onnx(model, x, tmp_path / "m.onnx")
    inputs = np.random.default_rng(0).standard_normal((8, *x.shape[1:])).astype("f4")
    calib = calibrate(path, inputs, method="minmax", cache_dir=tmp_path / "c")
    pre = onnx.load(str(calib.model))
    last = next(n for n in pre.graph.node if "features.6.weight" in n.input)
    data = json.loads(calib.ranges.read_text())
    del data["data"][last.output[0]]
    holed = tmp_path / "holed.json"
    holed.write_text(json.dumps(data))
    calib = dataclasses.replace(calib, ranges=holed)
    groups = {"front": ["features.0", "features.2"], "back": ["features.6"], "fc": ["classifier"]}
    cfg = QuantizeConfig(precision=dict.fromkeys(groups, "int8"))
    with pytest.raises(KeyError):  # ONNX Runtime looks the missing range up
        quantize(calib, tmp_path / "all.onnx", plan=cfg.precision, groups=groups)
    q = quantize_step(
        path, cfg, space=QuantizeSpace(groups=groups), calibration=calib,
        out_path=tmp_path / "q.onnx", int8_runs=True,
    )  # fmt: skip
    assert set(q.kept_float) == {"back"}
    assert "cannot be quantized to int8" in q.kept_float["back"]
    assert q.layer_types["features.6.weight"] == "float"
    assert q.layer_types["features.0.weight"] == "int8"
    assert q.to_dict()["kept_float"] == q.kept_float


OOM_CHILD = """
import resource, sys
from pathlib import Path
import numpy as np, torch
from torch import nn
from search.compress.quantize.calibration import calibrate
from search.compress.onnx_export import export_onnx

out, method = Path(sys.argv[1]), sys.argv[2]
conv = lambda i: [nn.Conv2d(i, 32, 3, padding=1), nn.ReLU()]
model = nn.Sequential(*conv(3), *conv(32), *conv(32), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(32, 4)).eval()
export_onnx(model, torch.randn(1, 3, 256, 256), out / "m.onnx")
inputs = np.random.default_rng(0).random((32, 3, 256, 256), dtype=np.float32)
# About 50 MB of intermediate tensors per input: all 32 in one collect_data call need 1.6 GB.
vm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status")
          if line.startswith("VmSize"))
resource.setrlimit(resource.RLIMIT_AS, (vm + 2**30, vm + 2**30))
print(calibrate(out / "m.onnx", inputs, method=method, cache_dir=out / "cache").notes[-1])
"""


@pytest.mark.parametrize("method", ["minmax", "entropy"])
def test_calibration_that_runs_out_of_memory_goes_on_in_smaller_batches(method, tmp_path):
    """Under a 1 GB address-space limit (a child process), calibrating 32 inputs of 256x256 in
    one call fails to allocate; the calibration goes on one smaller batch per call and says so."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-c", OOM_CHILD, str(tmp_path), method],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "inputs at a time: more ran out of memory" in proc.stdout


def test_one_call_per_batch_gives_the_same_minmax_ranges(tmp_path):
    """The fallback's chunked collection merges ranges across calls: MinMax ranges identical."""
    from search.compress.quantize.calibration import _collect, _preprocessed

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU()).eval()
    export_onnx(model, torch.randn(1, 3, 8, 8), tmp_path / "m.onnx")
    (tmp_path / "cache").mkdir()
    pre, _ = _preprocessed(tmp_path / "m.onnx", tmp_path / "cache")
    name = onnx.load(str(pre)).graph.input[0].name
    x = np.random.default_rng(0).normal(size=(12, 3, 8, 8)).astype(np.float32)
    _collect(pre, name, x, batch=12, chunked=False, method="minmax", out=tmp_path / "one.json")
    _collect(pre, name, x, batch=3, chunked=True, method="minmax", out=tmp_path / "four.json")
    one = json.loads((tmp_path / "one.json").read_text())
    four = json.loads((tmp_path / "four.json").read_text())
    assert one == four
