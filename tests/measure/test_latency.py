"""Latency and memory measurement on a real ONNX Runtime session of a tiny model."""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from search.config import load_profile
from search.measure import MeasureSettings, measure_onnx
from search.measure.latency import measure_latency, summarize


@pytest.fixture
def matmul_onnx(tmp_path):
    """y = x @ W, with a dynamic batch: small, but real work for ONNX Runtime."""
    w = helper.make_tensor("W", TensorProto.FLOAT, [64, 64], np.ones(64 * 64, np.float32))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["output"])],
        "mm",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 64])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "mm.onnx"
    onnx.save(model, path)
    return path


def _settings(**kw):
    base = dict(
        warmup_runs=3,
        warmup_seconds=0.0,
        min_runs=20,
        min_seconds=0.0,
        max_runs=10000,
        memory_runs=1,
    )
    return MeasureSettings(**{**base, **kw})


def test_repeats_until_both_count_and_time(matmul_onnx):
    import onnxruntime as ort

    session = ort.InferenceSession(str(matmul_onnx), providers=["CPUExecutionProvider"])
    feed = {"input": np.ones((1, 64), np.float32)}
    by_count = measure_latency(session, feed, _settings(min_runs=25))
    assert by_count.runs == 25
    # A warm-up of a few runs only, so the wall time below is the timed runs' own.
    forever = _settings(min_runs=5, min_seconds=0.2, max_runs=10**7, warmup_max_runs=1)
    t0 = time.perf_counter()
    by_time = measure_latency(session, feed, forever)
    # The timed runs went on for min_seconds of wall time (their own latencies may sum to less:
    # the loop between runs and a busy machine's preemptions are not part of a run).
    assert by_time.runs > 5 and time.perf_counter() - t0 >= 0.2
    capped = measure_latency(session, feed, _settings(min_runs=5, min_seconds=60, max_runs=50))
    assert capped.runs == 50  # max_runs bounds a measurement whatever min_seconds asks
    assert by_time.p50_ms <= by_time.p90_ms <= by_time.p99_ms


def test_summary_statistics():
    s = summarize(np.array([1.0, 2.0, 3.0, 4.0]), batch_size=2)
    assert s.p50_ms == 2.5 and s.runs == 4 and s.min_ms == 1.0
    assert s.cv == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2.5)
    # One preempted run moves the plain CV a lot and the robust one not at all.
    calm = summarize(np.array([1.0, 1.1, 0.9, 1.0, 1.05, 0.95]), batch_size=1)
    noisy = summarize(np.array([1.0, 1.1, 0.9, 1.0, 1.05, 0.95, 20.0]), batch_size=1)
    assert noisy.cv > 10 * calm.cv
    assert noisy.robust_cv == pytest.approx(calm.robust_cv, rel=0.5)


def test_measure_onnx_records_where_it_ran(matmul_onnx):
    base = load_profile("cpu")
    profile = base.model_validate({**base.model_dump(), "batch_sizes": [1, 4]})
    m = measure_onnx(
        matmul_onnx,
        spec=profile.model_copy(update={"measure": _settings()}).measure_spec(),
        eval_inputs=np.ones((10, 64), np.float32),
        latency_input=np.ones((1, 64), np.float32),
        device_label="bench-label",
    )
    assert len(m.outputs) == 1  # every output of the file; this one has one
    assert np.allclose(m.outputs[0], 64.0) and m.outputs[0].shape == (10, 64)
    assert [s.batch_size for s in m.latency] == [1, 4]
    assert m.providers == ["CPUExecutionProvider"] and m.onnxruntime
    assert m.device.endswith("bench-label") and "cores" in m.device
    assert m.memory.method.startswith("VmHWM") and m.memory.peak_mb > m.memory.idle_mb > 0
    assert m.memory.device_mb is None  # no GPU provider, no device memory
