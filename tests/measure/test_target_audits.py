"""The per-target kernel audits' own logic: OpenVINO's runtime precisions mapped back to the
file's nodes, its EPContext container read, QNN's node placement counted, and the per-layer
reports turned into what each layer ran at. The audits on the real runtimes run in
tests/test_targets.py (they need ./setup.sh --target ...)."""

from __future__ import annotations

import struct

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from search.compress.quantize.audit import layer_kernels_reported
from search.measure.latency import cpu_timed
from search.measure.openvino_audit import kind_of, summarize
from search.measure.openvino_reader import read_container
from search.measure.qnn_audit import summarize as qnn_summarize
from search.measure.runtime import available_providers, register_plugins
from search.measure.spec import MeasureSpec, ProviderSpec, Threads


def _qdq_model() -> onnx.ModelProto:
    """x -> Conv(int8 weight via DequantizeLinear) -> Relu -> Gemm(float weight) -> y."""
    w8 = helper.make_tensor("conv.weight_quantized", TensorProto.INT8, [4, 1, 3, 3], [1] * 36)
    scale = helper.make_tensor("s", TensorProto.FLOAT, [], [0.1])
    fc = helper.make_tensor("fc.weight", TensorProto.FLOAT, [2, 4], np.ones(8, np.float32))
    nodes = [
        helper.make_node("DequantizeLinear", ["conv.weight_quantized", "s"], ["w"], name="dq"),
        helper.make_node("Conv", ["x", "w"], ["c"], name="node_conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="node_relu"),
        helper.make_node("ReduceMean", ["r"], ["m"], name="node_mean", axes=[2, 3], keepdims=0),
        helper.make_node("Gemm", ["m", "fc.weight"], ["logits"], name="node_linear", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])],
        [w8, scale, fc],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_openvino_precisions_map_back_to_the_files_nodes():
    layers = [  # as OpenVINO's runtime model names them (compute op first in fusions)
        {"name": "node_conv", "type": "Convolution", "precision": "u8",
         "primitive": "brgconv_avx512_I8", "original": ["node_conv", "node_relu"]},
        {"name": "node_linear/WithoutBiases", "type": "Eltwise", "precision": "f32",
         "primitive": "jit", "original": []},
        # The float Gemm appears under its output tensor's name.
        {"name": "logits", "type": "FullyConnected", "precision": "f32",
         "primitive": "gemm_mlas_f32", "original": ["logits"]},
    ]  # fmt: skip
    report = summarize(_qdq_model(), layers, cpu_nodes=[])
    assert report["layers"] == {"node_conv": "u8", "node_linear": "f32"}
    assert (report["integer_layers"], report["float_layers"], report["fp16_layers"]) == (1, 1, 0)
    assert report["integer_kernels"] == 1 and report["unmapped_layers"] == 0
    assert report["ran_weights"] == {"conv.weight": "integer", "fc.weight": "float"}
    assert report["primitives"] == {"brgconv_avx512_I8": 1, "gemm_mlas_f32": 1}


def test_openvino_nodes_left_to_the_cpu_provider_or_unseen_are_counted_apart():
    layers = [{"name": "node_conv", "type": "Convolution", "precision": "f32",
               "primitive": "x", "original": []}]  # fmt: skip
    report = summarize(_qdq_model(), layers, cpu_nodes=["node_linear"])
    assert report["cpu_ep_layers"] == 1 and report["layers"]["node_linear"] == "cpu_ep"
    # A float conv that reads a dequantized weight: asked for int8, ran float.
    assert report["float_layers_after_dequantize"] == 1
    assert summarize(_qdq_model(), [], cpu_nodes=[])["unmapped_layers"] == 2


@pytest.mark.parametrize(
    ("precision", "kind"),
    [("u8", "integer"), ("i8", "integer"), ("u4", "integer"), ("f32", "float"),
     ("bf16", "fp16"), ("f16", "fp16"), ("dynamic", "other")],
)  # fmt: skip
def test_openvino_precision_names(precision, kind):
    assert kind_of(precision) == kind


def _bson(doc: dict) -> bytes:
    body = b""
    for key, value in doc.items():
        name = key.encode() + b"\0"
        if isinstance(value, dict):
            body += b"\x03" + name + _bson(value)
        elif isinstance(value, str):
            text = value.encode() + b"\0"
            body += b"\x02" + name + struct.pack("<i", len(text)) + text
        else:
            body += b"\x12" + name + struct.pack("<q", value)
    return struct.pack("<i", len(body) + 5) + body + b"\0"


def test_the_epcontext_container_is_read_by_its_offsets(tmp_path):
    blob_a, blob_b = b"AAAA-compiled", b"BB"
    header = b"OVEP_BIN" + struct.pack("<QQQ", 1, 0, 0)
    meta = {"blob_metadata_map": {"p0": {"data_offset": 0, "size": 0}}, "producer": "ep-1.24"}
    size = len(header) + len(_bson(meta)) + 64  # offsets are known once the document is
    meta["blob_metadata_map"] = {
        "p0": {"data_offset": size, "size": len(blob_a)},
        "p1": {"data_offset": size + len(blob_a), "size": len(blob_b)},
    }
    doc = _bson(meta)
    data = header + doc + b"\0" * (size - len(header) - len(doc)) + blob_a + blob_b
    (tmp_path / "m.bin").write_bytes(data)
    info, blobs = read_container(str(tmp_path / "m.bin"))
    assert info["producer"] == "ep-1.24" and blobs == {"p0": blob_a, "p1": blob_b}
    (tmp_path / "bad.bin").write_bytes(b"NOT_OVEP" + data[8:])
    with pytest.raises(ValueError, match="not an OVEP_BIN"):
        read_container(str(tmp_path / "bad.bin"))


def test_qnn_placement_counts_offload_precision_and_fallbacks():
    qnn = "QnnHtpExecutionProvider"
    # After QNN's layout rewrite the conv is named node_conv_token_1; the graph's input
    # quantize and output dequantize stay on the CPU provider by default.
    placed = {
        "node_conv_token_1": (qnn, "Conv"),
        "node_relu": (qnn, "Relu"),
        "node_linear": (qnn, "Gemm"),
        "q_in": ("CPUExecutionProvider", "QuantizeLinear"),
        "dq_out": ("CPUExecutionProvider", "DequantizeLinear"),
    }
    report = qnn_summarize(_qdq_model(), placed, qnn=qnn, partitions=1)
    assert report["fully_offloaded"] and report["cpu_compute"] == []
    assert (report["integer_layers"], report["fp16_layers"]) == (1, 1)  # float Gemm: fp16 on HTP
    assert report["ran_weights"] == {"conv.weight": "integer", "fc.weight": "fp16"}
    placed["node_linear"] = ("CPUExecutionProvider", "Gemm")
    split = qnn_summarize(_qdq_model(), placed, qnn=qnn, partitions=1)
    assert not split["fully_offloaded"] and split["cpu_compute"] == ["Gemm"]
    assert split["cpu_layers"] == 1 and split["ran_weights"]["fc.weight"] == "float"
    assert not qnn_summarize(_qdq_model(), {}, qnn=qnn, partitions=2)["fully_offloaded"]


def test_reported_kernels_give_each_layer_what_it_ran_at():
    stored = {"conv.weight": "int8", "fc.weight": "int8", "head.weight": "fp16", "x": "float"}
    ran = layer_kernels_reported({"conv.weight": "integer", "fc.weight": "float"}, stored)
    assert ran == {
        "conv.weight": "int8",
        "fc.weight": "float",
        "head.weight": "fp16",
        "x": "float",
    }


def test_openvino_with_one_thread_is_timed_by_the_callers_cpu_time():
    def spec(options, intra=1):
        provider = ProviderSpec("OpenVINOExecutionProvider", options)
        return MeasureSpec(providers=(provider,), threads=Threads(intra_op=intra))

    assert cpu_timed(spec({"device_type": "CPU", "num_of_threads": 1}))
    assert not cpu_timed(spec({"device_type": "CPU"}))  # OpenVINO's own thread pool
    assert not cpu_timed(spec({"device_type": "GPU", "num_of_threads": 1}))
    assert not cpu_timed(spec({"device_type": "CPU", "num_of_threads": 1}, intra=0))


def test_plugins_are_registered_only_where_installed():
    # This environment has no onnxruntime-qnn: nothing is registered, nothing claimed.
    assert "QnnHtpExecutionProvider" not in available_providers()
    assert register_plugins() == ()
