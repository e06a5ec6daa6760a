"""What the provider really executes: integer kernels against float ops fed by DequantizeLinear.

Each target is audited where its model runs, by what that provider can show
(:func:`kernel_report` picks by the first provider): ONNX Runtime's own providers (CPU, CUDA, ...)
by their optimized graph (below); OpenVINO by its runtime model's precision per layer
(:mod:`search.measure.openvino_audit`); Qualcomm's QNN by the graph partition, node by node
(:mod:`search.measure.qnn_audit`). Every report has ``integer_layers``, ``float_layers`` and
``fp16_layers`` and says its ``method``.

A QDQ file only says what *may* run in integer arithmetic. ONNX Runtime fuses a
DequantizeLinear -> Conv -> QuantizeLinear pattern into QLinearConv only when it has a kernel for
those types on the provider; otherwise the DequantizeLinear stays and the op runs in float. This
module saves the optimized graph of a session built by the one session factory
(:func:`search.measure.runtime.create_session`, so with the profile's providers, threads and
session config entries) and counts both kinds.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import onnx

from search.core.errors import first_line
from search.core.ort_ops import (
    FLOAT_LAYER_OPS,
    INTEGER_LAYER_OPS,
    INTEGER_OPS,
    INTEGER_WEIGHT_INPUT,
)
from search.errors import ProviderError
from search.measure.runtime import (
    available_providers,
    check_providers,
    create_session,
    requested_providers,
)
from search.measure.spec import MeasureSpec

# Plugin providers audited by their graph assignment (:mod:`search.measure.qnn_audit`).
PLUGIN_AUDITS = frozenset({"QnnHtpExecutionProvider"})
_LAYOUT_OPS = {"ReorderInput", "ReorderOutput", "Transpose", "Reshape", "Squeeze", "Unsqueeze"}


def optimized_graph(path: Path | str, spec: MeasureSpec, out_path: Path | str) -> Path:
    """Build the session the measurement builds for ``path`` and save its optimized graph."""
    create_session(path, spec, optimized_path=out_path)
    return Path(out_path)


def count_kernels(model: onnx.ModelProto) -> dict[str, Any]:
    """Counts of integer kernels and float layer ops in an optimized graph (a ModelProto).

    ``float_layers`` counts floating-point layer ops of any width; ``fp16_layers`` those of them
    whose weight the provider kept in float16.
    ``float_layers_after_dequantize`` are float layer ops with an input (weight or activation)
    from a DequantizeLinear, seen through layout changes: DequantizeLinear + float op, where the
    file asked for quantization (or a float layer sits between quantized ones).
    ``ran_weights`` names the weight of every integer layer kernel (``{weight: "integer"}``,
    the file's weight name without ``_quantized``), so what each layer ran at is known where the
    graph itself stays on the target (an agent).
    """
    producers = {o: n for n in model.graph.node for o in n.output}

    def source(tensor: str) -> str:
        node = producers.get(tensor)
        while node is not None and node.op_type in _LAYOUT_OPS and node.input:
            tensor = node.input[0]
            node = producers.get(tensor)
        return tensor.removesuffix("_quantized")

    def dequantized(tensor: str) -> bool:
        node = producers.get(tensor)
        # Layout changes the provider inserts (NCHWc reorders) sit between DQ and the layer.
        while node is not None and node.op_type in _LAYOUT_OPS and node.input:
            node = producers.get(node.input[0])
        return node is not None and node.op_type == "DequantizeLinear"

    ops = Counter(n.op_type for n in model.graph.node)
    float_layers = [n for n in model.graph.node if n.op_type in FLOAT_LAYER_OPS]
    after_dq = [n for n in float_layers if any(dequantized(i) for i in n.input)]
    # A layer runs in float16 when the provider kept its weight in float16; the CPU provider
    # casts float16 layers it has no kernel for back to float, and folds the weight to float.
    f16 = onnx.TensorProto.FLOAT16
    half_inits = {i.name for i in model.graph.initializer if i.data_type == f16}
    half = [n for n in float_layers if len(n.input) > 1 and n.input[1] in half_inits]
    integer_weights = {
        source(n.input[INTEGER_WEIGHT_INPUT[n.op_type]]): "integer"
        for n in model.graph.node
        if n.op_type in INTEGER_WEIGHT_INPUT and len(n.input) > INTEGER_WEIGHT_INPUT[n.op_type]
    }
    return {
        "integer_kernels": sum(ops[o] for o in INTEGER_OPS),
        "integer_layers": sum(ops[o] for o in INTEGER_LAYER_OPS),
        "float_layers": len(float_layers),
        "float_layers_after_dequantize": len(after_dq),
        "fp16_layers": len(half),
        "dequantize_nodes": ops["DequantizeLinear"],
        "quantize_nodes": ops["QuantizeLinear"],
        "ops": dict(sorted(ops.items())),
        "ran_weights": dict(sorted(integer_weights.items())),
    }


def kernel_report(path: Path | str, spec: MeasureSpec, out_path: Path | str) -> dict[str, Any]:
    """What ``path`` ran as on ``spec``'s first provider, in this process: OpenVINO's and QNN's
    own audits, else the optimized graph saved to ``out_path`` and its kernels counted.

    The count needs a session on the spec's providers here. Where the provider compiles the
    graph and cannot save it (as TensorRT does) the report says why instead of failing the trial.

    Raises:
        ProviderError: a provider is missing or fell back (the measurement would fail too).
    """
    check_providers(spec)
    first = requested_providers(spec, available_providers())[0][0]
    try:
        if first == "OpenVINOExecutionProvider":
            from search.measure.openvino_audit import openvino_report

            return openvino_report(path, spec)
        if first in PLUGIN_AUDITS:
            from search.measure.qnn_audit import qnn_report

            return qnn_report(path, spec)
        saved = optimized_graph(path, spec, out_path)
    except ProviderError:
        raise
    except Exception as e:  # noqa: BLE001 - a missing count must not fail the measured trial
        return {"unavailable": f"{type(e).__name__}: {first_line(e, 200)}"}
    return {
        **count_kernels(onnx.load(str(saved))),
        "optimized_graph": str(saved),
        "method": "ONNX Runtime's optimized graph",
    }
