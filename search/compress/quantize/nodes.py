"""Which node of a graph gets which precision: the nodes a plan leaves out of quantization, the
tensor overrides that give int4/int16 groups their weight type, and each weight's group.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from search.compress.quantize.groups import WEIGHTED_OPS, weight_name
from search.errors import ConfigError

if TYPE_CHECKING:
    import onnx
    from onnxruntime.quantization import QuantType


def weight_groups(
    model: onnx.ModelProto, owner: Mapping[str, str | None]
) -> dict[str, str | None]:
    """Weight name -> the group of the layer that reads it."""
    inits = {i.name for i in model.graph.initializer}
    out: dict[str, str | None] = {}
    for node in model.graph.node:
        weight = weight_name(node, inits)
        if weight is not None:
            out[weight] = owner.get(node.name)
    return out


def qtype(bits: str, signed: bool) -> QuantType:
    from onnxruntime.quantization import QuantType

    return getattr(QuantType, f"Q{'' if signed else 'U'}Int{bits}")


def _weight_axis(node: onnx.NodeProto) -> int:
    axis = WEIGHTED_OPS[node.op_type]
    if axis is not None:
        return axis
    trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
    return 0 if trans_b else 1


def node_plan(
    model: onnx.ModelProto,
    owner: Mapping[str, str | None],
    plan: Mapping[str, str],
    *,
    ungrouped: str,
    signed: bool,
) -> tuple[list[str], dict[str, list[dict[str, Any]]]]:
    """Nodes to leave out of quantization (float and fp16 groups) and the tensor overrides
    that give int4/int16 groups their weight type."""
    inits = {i.name for i in model.graph.initializer}
    excluded, overrides = [], {}
    for node in model.graph.node:
        group = owner[node.name]
        precision = (
            plan.get(group, "float") if group else ("int8" if ungrouped == "quantize" else "float")
        )
        if precision in ("float", "fp16"):
            if not node.name:
                raise ConfigError(f"an unnamed {node.op_type} node cannot be left {precision}")
            excluded.append(node.name)
            continue
        weight = weight_name(node, inits)
        if weight is not None and precision in ("int4", "int16"):
            kind = qtype(precision.removeprefix("int"), signed)
            overrides[weight] = [{"quant_type": kind, "axis": _weight_axis(node)}]
    return excluded, overrides
