"""Peak memory of inference, measured in a fresh child process built from the spec."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from search.measure import MeasureSettings, MeasureSpec, ProviderSpec, Threads
from search.measure.memory import measure_peak_memory

SPEC = MeasureSpec(
    providers=(ProviderSpec("CPUExecutionProvider"),), measure=MeasureSettings(memory_runs=2)
)


def _matmul(path, n: int):
    """y = x @ W with an n x n float weight (4 n^2 bytes)."""
    w = helper.make_tensor("W", TensorProto.FLOAT, [n, n], np.ones(n * n, np.float32))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["output"])],
        "mm",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", n])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", n])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_a_bigger_model_costs_more_memory_whatever_the_working_directory(tmp_path, monkeypatch):
    small = _matmul(tmp_path / "small.onnx", 64)
    big = _matmul(tmp_path / "big.onnx", 2048)  # a 16 MiB weight
    monkeypatch.chdir(tmp_path)  # the child still runs this package's code
    s = measure_peak_memory(small, feed={"input": np.ones((1, 64), np.float32)}, spec=SPEC)
    b = measure_peak_memory(big, feed={"input": np.ones((1, 2048), np.float32)}, spec=SPEC)
    assert b.inference_mb > s.inference_mb + 12
    assert s.peak_mb > s.idle_mb > 0 and s.inference_mb == pytest.approx(s.peak_mb - s.idle_mb)
    assert b.method == "VmHWM after clear_refs" and b.device_mb is None


def test_the_child_builds_its_session_from_the_spec(tmp_path):
    # An affinity string ONNX Runtime cannot parse: only a session built with the spec's session
    # config entries (and its two threads) fails on it.
    bad = MeasureSpec(
        providers=(ProviderSpec("CPUExecutionProvider"),),
        threads=Threads(intra_op=2),
        session_config={"session.intra_op_thread_affinities": "not-a-core-list"},
    )
    path = _matmul(tmp_path / "m.onnx", 8)
    with pytest.raises(RuntimeError, match="memory measurement failed"):
        measure_peak_memory(path, feed={"input": np.ones((1, 8), np.float32)}, spec=bad)
