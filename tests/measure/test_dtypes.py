"""Inputs of other dtypes (int64 token ids) and files with several outputs, through
measurement, confirmation and the agent (text-transformer case: ids were cast to float32)."""

from __future__ import annotations

import threading

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from search.config import load_profile
from search.measure import MeasureSettings, measure_onnx
from search.measure.confirmation import time_files
from search.measure.measurement import pack_outputs, unpack_outputs

QUICK = {"warmup_runs": 1, "warmup_seconds": 0.0, "min_runs": 5, "min_seconds": 0.0,
         "memory_runs": 1, "paired_runs": 3, "confirm_rounds": 2}  # fmt: skip


@pytest.fixture
def ids_onnx(tmp_path):
    """ids (batch, 6) int64 -> embeddings (batch, 6, 4) and their mean (batch, 4)."""
    table = helper.make_tensor(
        "table", TensorProto.FLOAT, [10, 4], np.arange(40, dtype=np.float32)
    )
    axes = helper.make_tensor("axes", TensorProto.INT64, [1], [1])
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "input"], ["tokens"]),
            helper.make_node("ReduceMean", ["tokens", "axes"], ["pooled"], keepdims=0),
        ],
        "ids",
        [helper.make_tensor_value_info("input", TensorProto.INT64, ["batch", 6])],
        [
            helper.make_tensor_value_info("tokens", TensorProto.FLOAT, ["batch", 6, 4]),
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["batch", 4]),
        ],
        [table, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    path = tmp_path / "ids.onnx"
    onnx.save(model, path)
    return path


def _spec():
    base = load_profile("cpu")
    return base.model_copy(update={"measure": MeasureSettings(**QUICK)}).measure_spec()


def test_int64_ids_are_measured_as_ids_with_every_output(ids_onnx):
    ids = np.array([[1, 2, 3, 4, 5, 6], [0, 0, 0, 9, 9, 9]], np.int64)
    m = measure_onnx(ids_onnx, spec=_spec(), eval_inputs=ids, latency_input=ids[:1],
                     reference=ids_onnx)  # fmt: skip
    tokens, pooled = m.outputs
    assert tokens.shape == (2, 6, 4) and pooled.shape == (2, 4)
    assert np.array_equal(tokens[0, 1], [8, 9, 10, 11])  # row 2 of the table: ids stayed ids
    assert m.extra["paired"]["relative"] > 0


def test_confirmation_times_an_int64_model_with_or_without_a_kept_input(ids_onnx):
    for latency_input in (np.ones((1, 6), np.int64), None):
        out = time_files({"a": ids_onnx}, reference=ids_onnx, spec=_spec(),
                         latency_input=latency_input)  # fmt: skip
        assert out["paired"]["a"]["relative"] > 0


def test_packed_outputs_come_back_exactly():
    outputs = [np.random.default_rng(0).normal(size=(3, 2, 5)).astype(np.float32),
               np.arange(6, dtype=np.int64).reshape(3, 2), np.ones(3, np.float16)]  # fmt: skip
    packed, layout = pack_outputs(outputs)
    assert packed.dtype == np.uint8 and packed.shape[0] == 3
    back = unpack_outputs(packed, layout)
    for a, b in zip(outputs, back, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)


def test_the_agent_measures_int64_ids_and_returns_every_output(ids_onnx):
    from search.measure.agent.client import AgentClient
    from search.measure.agent.server import AgentSettings, serve

    srv = serve(AgentSettings(token="test-token-0123456789", port=0))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        host, port = srv.server_address[:2]
        client = AgentClient(f"http://{host}:{port}", token="test-token-0123456789")
        client.spec = _spec()
        ids = np.array([[1, 2, 3, 4, 5, 6]], np.int64)
        m = client.measure(ids_onnx, eval_inputs=ids, latency_input=ids)
    finally:
        srv.shutdown()
        srv.server_close()
    assert [o.shape for o in m.outputs] == [(1, 6, 4), (1, 4)]
    assert np.array_equal(m.outputs[0][0, 0], [4, 5, 6, 7])
