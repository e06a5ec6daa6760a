"""The precision every layer ran at on OpenVINO, from OpenVINO's own runtime view.

ONNX Runtime's profiler shows one ``OpenVINO-EP-subgraph`` node per partition and its optimized
graph is not what OpenVINO compiles, so neither says what ran. What does: the EP exports the
partitions it compiled as an EPContext model (session config ``ep.context_enable``), the
compiled blobs are read back by the ``openvino`` package in a child process
(:mod:`search.measure.openvino_reader`; the two OpenVINO builds cannot share a process), and
each runtime op's ``runtimePrecision`` is mapped back to the ONNX node it came from (by node
name, the name before ``/``, or an output tensor name, in ``originalLayersNames``).

The export session is built like the measured one (the profile's providers, provider options,
threads and session config entries), because ONNX Runtime's own graph rewrites run before the
EP sees the graph and change what it compiles: the basic-level ``WeightBiasQuantization``
turns a Conv whose activation comes from a DequantizeLinear but whose weight is float (a layer
the plan kept in float between int8 ones) into an int8-weight Conv, and OpenVINO then runs it in
u8 (measured on onnxruntime-openvino 1.24.1; compiling the file with plain OpenVINO said f32).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import onnx
import onnxruntime as ort

from search.core.errors import first_line
from search.measure.runtime import available_providers, requested_providers, session_options
from search.measure.spec import MeasureSpec

PROVIDER = "OpenVINOExecutionProvider"
READER = Path(__file__).with_name("openvino_reader.py")
# ONNX ops that compute a layer with weights, and the OpenVINO layer types that compute them.
COMPUTE_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
COMPUTE_LAYERS = {
    "Convolution",
    "GroupConvolution",
    "Deconvolution",
    "GroupDeconvolution",
    "FullyConnected",
    "FullyConnectedCompressed",
    "MatMul",
}


def kind_of(precision: str) -> str:
    """``integer``, ``fp16`` (any 16-bit float: f16, bf16), ``float`` or ``other`` for one of
    OpenVINO's ``runtimePrecision`` names (u8, i8, u4, f32, bf16, ...)."""
    p = precision.lower()
    if p[:1] in ("u", "i") and p[1:].isdigit():
        return "integer"
    if p in ("f16", "bf16"):
        return "fp16"
    if p.startswith("f"):
        return "float"
    return "other"


def openvino_report(path: Path | str, spec: MeasureSpec) -> dict[str, Any]:
    """Per-layer precision of ``path`` as OpenVINO compiled it for ``spec`` (JSON-ready).

    Returns:
        ``integer_layers``, ``float_layers``, ``fp16_layers`` (counts of the file's
        Conv/ConvTranspose/Gemm/MatMul nodes by the precision OpenVINO ran them at),
        ``float_layers_after_dequantize`` (float ones that read a DequantizeLinear output),
        ``cpu_ep_layers`` (left to the CPU provider), ``unmapped_layers``, ``integer_kernels``
        (every compiled op in integer precision), ``partitions``, ``layers`` (node -> precision),
        ``ran_weights`` (weight -> integer/float/fp16), ``primitives`` (kernel implementations
        of the compute layers, e.g. ``brgconv_avx512_I8``), ``openvino`` and ``method``; or
        ``{"unavailable": why}`` where the export or the reader failed.
    """
    wanted = requested_providers(spec, available_providers())
    with tempfile.TemporaryDirectory(prefix="search-ov-audit-") as tmp:
        ctx = Path(tmp) / "model_ctx.onnx"
        options = session_options(spec.threads, spec.session_config, spec.free_dimensions)
        options.add_session_config_entry("ep.context_enable", "1")
        options.add_session_config_entry("ep.context_embed_mode", "0")
        options.add_session_config_entry("ep.context_file_path", str(ctx))
        try:
            ort.InferenceSession(str(path), sess_options=options, providers=wanted)
        except Exception as e:  # noqa: BLE001 - the measurement itself reports a real failure
            return {"unavailable": f"EPContext export failed: {first_line(e, 200)}"}
        blob = ctx.with_name(f"{ctx.stem}_{PROVIDER}.bin")
        if not blob.is_file():
            return {"unavailable": f"the EP wrote no {blob.name} (no OpenVINO partition)"}
        cpu_nodes = [
            n.name
            for n in onnx.load(str(ctx), load_external_data=False).graph.node
            if n.op_type != "EPContext"
        ]
        proc = subprocess.run(
            [sys.executable, str(READER), str(blob)],
            capture_output=True,
            text=True,
            timeout=600,
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        if "No module named 'openvino'" in proc.stderr:
            tail = "the openvino package is missing here (./setup.sh --target openvino adds it)"
        return {"unavailable": f"reading the compiled model failed: {tail[:200]}"}
    view = json.loads(lines[-1])
    model = onnx.load(str(path), load_external_data=False)
    return {
        **summarize(model, view["layers"], cpu_nodes),
        "partitions": view["partitions"],
        "openvino": view["openvino"],
        "method": "OpenVINO runtime model of the EP's compiled partitions (EPContext)",
    }


def summarize(
    model: onnx.ModelProto, layers: list[dict[str, Any]], cpu_nodes: list[str]
) -> dict[str, Any]:
    """Counts and per-node precisions of ``model``'s compute nodes from OpenVINO's runtime
    ``layers`` (:func:`search.measure.openvino_reader.runtime_layers`); ``cpu_nodes`` are the
    nodes ONNX Runtime left to its CPU provider."""
    graph = model.graph
    ran = _by_node(model, layers)
    producers = {o: n for n in graph.node for o in n.output}
    inits = {i.name for i in graph.initializer}
    per_node: dict[str, str] = {}
    ran_weights: dict[str, str] = {}
    counts: Counter[str] = Counter()
    primitives: Counter[str] = Counter()
    for node in graph.node:
        if node.op_type not in COMPUTE_OPS:
            continue
        if node.name in cpu_nodes:
            precision, kind = "cpu_ep", "cpu_ep"
        elif node.name in ran:
            precision = ran[node.name]["precision"]
            kind = kind_of(precision)
            primitives[ran[node.name]["primitive"]] += 1
        else:
            precision, kind = "unmapped", "unmapped"
        per_node[node.name] = precision
        counts[kind] += 1
        dequantized = any(
            producers.get(i) is not None and producers[i].op_type == "DequantizeLinear"
            for i in node.input
        )
        if kind == "float" and dequantized:
            counts["float_after_dq"] += 1
        weight = _weight(node, producers, inits)
        if weight and kind in ("integer", "float", "fp16"):
            ran_weights[weight] = kind
    return {
        "integer_layers": counts["integer"],
        "float_layers": counts["float"],
        "fp16_layers": counts["fp16"],
        "float_layers_after_dequantize": counts["float_after_dq"],
        "cpu_ep_layers": counts["cpu_ep"],
        "unmapped_layers": counts["unmapped"],
        "integer_kernels": sum(kind_of(layer["precision"]) == "integer" for layer in layers),
        "layers": per_node,
        "ran_weights": ran_weights,
        "primitives": dict(sorted(primitives.items())),
    }


def _by_node(model: onnx.ModelProto, layers: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """ONNX node name -> the runtime layer that computed it: a layer names its nodes by their
    name, the name before ``/``, or an output tensor's name (its own or in
    ``originalLayersNames``); compute layers first, so a node fused into several ops takes the
    precision of its compute op."""
    nodes = {n.name for n in model.graph.node if n.name}
    by_output = {o: n.name for n in model.graph.node for o in n.output if n.name}

    def resolve(token: str) -> str | None:
        for name in (token, token.split("/")[0]):
            if name in nodes:
                return name
            if name in by_output:
                return by_output[name]
        return None

    ran: dict[str, dict[str, Any]] = {}
    for layer in sorted(layers, key=lambda layer: layer["type"] not in COMPUTE_LAYERS):
        for token in [layer["name"], *layer["original"]]:
            node = resolve(token)
            if node is not None:
                ran.setdefault(node, layer)
    return ran


def _weight(
    node: onnx.NodeProto, producers: dict[str, onnx.NodeProto], inits: set[str]
) -> str | None:
    """The weight initializer of a compute node, named as the file's layer types name it:
    through a DequantizeLinear without its ``_quantized`` suffix, a float16 copy without
    ``_fp16``."""
    if len(node.input) < 2:
        return None
    src = node.input[1]
    if src in inits:
        stem = src.rsplit("_fp16", 1)[0]
        return stem if stem != src and stem in inits else src
    dq = producers.get(src)
    if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in inits:
        return dq.input[0].removesuffix("_quantized")
    return None
