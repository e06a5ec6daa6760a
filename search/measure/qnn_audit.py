"""Which nodes Qualcomm's QNN provider took (HTP, or its x86 simulator) and which it left to the
CPU provider, node by node.

ONNX Runtime records each execution provider's part of the partitioned graph when the session
config entry ``session.record_ep_graph_assignment_info`` is set;
``InferenceSession.get_provider_graph_assignment_info()`` then lists one subgraph per QNN
partition (run as one QNN graph) and one per node left to the CPU provider (onnxruntime 1.24+).
Names are those after the QNN provider's NHWC layout rewrite, which renames a Conv
``node_Conv_21`` to ``node_Conv_21_token_1``; a node of the file is matched by its name or that
prefix.

HTP also takes float graphs and runs them in float16 (QNN 2.51), so "all nodes on QNN" does not
mean "int8 on the NPU": a compute node whose weight does not come from a DequantizeLinear is
counted as float16 on QNN (``fp16_layers``), not as integer.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort

from search.measure.runtime import available_providers, requested_providers, session_options
from search.measure.spec import MeasureSpec

COMPUTE_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
_QDQ = {"QuantizeLinear", "DequantizeLinear"}
CPU = "CPUExecutionProvider"


def qnn_report(path: Path | str, spec: MeasureSpec) -> dict[str, Any]:
    """Node placement of ``path`` on ``spec``'s QNN provider (JSON-ready).

    Returns:
        ``partitions`` (QNN graphs), ``offloaded_nodes`` and ``cpu_nodes`` (of the graph ONNX
        Runtime partitioned), ``cpu_compute`` (op types of CPU nodes other than Q/DQ: the real
        fallbacks), ``fully_offloaded`` (one QNN graph, no CPU node but the graph's input
        quantize and output dequantize), ``integer_layers`` (compute nodes of the file on QNN
        reading a DequantizeLinear weight), ``fp16_layers`` (float compute nodes on QNN),
        ``float_layers`` (float compute nodes anywhere), ``cpu_layers`` (compute nodes on the
        CPU provider), ``layers`` (node -> provider and precision), ``ran_weights`` and
        ``method``.
    """
    wanted = requested_providers(spec, available_providers())
    qnn = wanted[0][0]
    options = session_options(spec.threads, spec.session_config, spec.free_dimensions)
    options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    session = ort.InferenceSession(str(path), sess_options=options, providers=wanted)
    placed: dict[str, tuple[str, str]] = {}
    partitions = 0
    for subgraph in session.get_provider_graph_assignment_info():
        partitions += subgraph.ep_name == qnn
        for node in subgraph.get_nodes():
            placed[node.name] = (subgraph.ep_name, node.op_type)
    model = onnx.load(str(path), load_external_data=False)
    return summarize(model, placed, qnn=qnn, partitions=partitions)


def summarize(
    model: onnx.ModelProto,
    placed: dict[str, tuple[str, str]],
    *,
    qnn: str,
    partitions: int,
) -> dict[str, Any]:
    """Counts from ``placed`` (assigned node name -> (provider, op type)) for ``model``'s
    nodes, of which ``partitions`` QNN graphs were made."""
    graph = model.graph
    on_cpu = [op for provider, op in placed.values() if provider == CPU]

    def provider_of(name: str) -> str | None:
        if name in placed:
            return placed[name][0]
        renamed = [p for n, (p, _) in placed.items() if n.startswith(f"{name}_token")]
        return renamed[0] if renamed else None

    cpu_compute = sorted({op for op in on_cpu if op not in _QDQ})
    cpu_qdq = sum(op in _QDQ for op in on_cpu)
    inits = {i.name for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    counts: Counter[str] = Counter()
    layers: dict[str, str] = {}
    ran_weights: dict[str, str] = {}
    for node in graph.node:
        if node.op_type not in COMPUTE_OPS or len(node.input) < 2:
            continue
        dq = producers.get(node.input[1])
        quantized = dq is not None and dq.op_type == "DequantizeLinear"
        weight = dq.input[0].removesuffix("_quantized") if quantized and dq else node.input[1]
        provider = provider_of(node.name)
        if provider == qnn:
            kind = "integer" if quantized else "fp16"
        elif provider == CPU:
            kind, counts["cpu"] = "float", counts["cpu"] + 1
        else:
            kind = "unmapped"
        counts[kind] += 1
        counts["float_any"] += not quantized
        layers[node.name] = f"{provider or '?'} {kind}"
        if kind != "unmapped" and (weight in inits or quantized):
            ran_weights[weight] = kind
    io = len(graph.input) + len(graph.output)
    return {
        "partitions": partitions,
        "offloaded_nodes": sum(p == qnn for p, _ in placed.values()),
        "cpu_nodes": len(on_cpu),
        "cpu_compute": cpu_compute,
        "fully_offloaded": partitions == 1 and not cpu_compute and cpu_qdq <= io,
        "integer_layers": counts["integer"],
        "fp16_layers": counts["fp16"],
        "float_layers": counts["float_any"],
        "cpu_layers": counts["cpu"],
        "unmapped_layers": counts["unmapped"],
        "layers": layers,
        "ran_weights": ran_weights,
        "method": "ONNX Runtime's graph assignment (session.record_ep_graph_assignment_info)",
    }
