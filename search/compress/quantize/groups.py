"""Which layer group an ONNX node belongs to, by the PyTorch module it came from, and which
element type each weighted layer computes with in a quantized graph.

Layers are named by their PyTorch module path, which the dynamo exporter keeps (weights are
``layers.0.conv1.weight``; every node carries ``pkg.torch.onnx.name_scopes`` metadata). A group is
a list of patterns; a pattern matches a module and everything under it (``layers.0`` matches
``layers.0.conv1``) and may use shell wildcards. The first group that matches a node owns it.

Example:
    >>> owner = assign_groups(onnx.load("model.onnx"), {"stem": ["stem"], "rest": ["*"]})
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

# Ops whose second input is a weight that gets a per-layer type; weightless ops follow their group.
WEIGHTED_OPS = {"Conv": 0, "ConvTranspose": 1, "Gemm": None, "MatMul": 1}
SCOPES = "pkg.torch.onnx.name_scopes"


def _matches(key: str, pattern: str) -> bool:
    return fnmatchcase(key, pattern) or fnmatchcase(key, pattern + ".*")


def weight_name(node: onnx.NodeProto, initializers: set[str]) -> str | None:
    """The initializer holding ``node``'s weight, or None for weightless nodes."""
    if node.op_type in WEIGHTED_OPS and len(node.input) > 1 and node.input[1] in initializers:
        return node.input[1]
    return None


def _keys(node: onnx.NodeProto, initializers: set[str]) -> list[str]:
    """Module paths a node belongs to: its weight's module first, then its name scopes."""
    keys = []
    weight = weight_name(node, initializers)
    if weight is not None:
        keys.append(weight.rsplit(".", 1)[0] if "." in weight else weight)
    for prop in node.metadata_props:
        if prop.key == SCOPES:
            # The last scope is the op itself (``relu_1``), the empty one is the root module.
            scopes = [s for s in json.loads(prop.value.replace("'", '"'))[:-1] if s]
            keys.extend(reversed(scopes))
    return keys or [node.name]


def name_nodes(model: onnx.ModelProto) -> int:
    """Give unnamed nodes and repeated names unique ones (groups are keyed by node name).

    Returns how many nodes were renamed.
    """
    seen: set[str] = set()
    renamed = 0
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            base = f"{node.name or node.op_type}_{i}"
            name, k = base, 1
            while name in seen:
                name, k = f"{base}_{k}", k + 1
            node.name, renamed = name, renamed + 1
        seen.add(node.name)
    return renamed


def assign_groups(
    model: onnx.ModelProto, groups: Mapping[str, list[str]]
) -> dict[str, str | None]:
    """Node name -> the first group whose patterns match it (None when none does)."""
    inits = {i.name for i in model.graph.initializer}
    out: dict[str, str | None] = {}
    for node in model.graph.node:
        keys = _keys(node, inits)
        out[node.name] = next(
            (g for g, pats in groups.items() if any(_matches(k, p) for k in keys for p in pats)),
            None,
        )
    return out


def layer_types(model: onnx.ModelProto) -> dict[str, str]:
    """Weight name -> the element type its layer computes with in ``model`` (a QDQ graph).

    A weight fed to its op directly is ``float`` (``fp16`` when stored as float16); one fed
    through DequantizeLinear is the type of the stored integer initializer (``int8``, ...).
    """
    import onnx

    inits = {i.name: i for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    out: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS or len(node.input) < 2:
            continue
        src = node.input[1]
        if src in inits:
            dtype = inits[src].data_type
            # A float16 copy of a weight a float node shares is named <weight>_fp16.
            stem = src.rsplit("_fp16", 1)[0]
            name = stem if stem in inits and stem != src else src
            out[name] = "fp16" if dtype == onnx.TensorProto.FLOAT16 else "float"
            continue
        dq = producers.get(src)
        if dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in inits:
            name = dq.input[0].removesuffix("_quantized")
            dtype = inits[dq.input[0]].data_type
            out[name] = onnx.TensorProto.DataType.Name(dtype).lower()
    return out


# Layer ops of an exported float model that a precision group can act on.
LAYER_OPS = {*WEIGHTED_OPS, "LSTM", "GRU", "RNN"}


def layer_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The nodes of an exported float model that compute a layer with weights."""
    inits = {i.name for i in model.graph.initializer}
    return [
        n for n in model.graph.node if n.op_type in LAYER_OPS and any(i in inits for i in n.input)
    ]


def owned_layers(model: onnx.ModelProto, groups: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """Group -> the names of the layer nodes it owns in ``model`` (first matching group wins,
    as in quantization); a group that owns none would search a precision that does nothing."""
    owner = assign_groups(model, groups)
    out: dict[str, list[str]] = {g: [] for g in groups}
    for node in layer_nodes(model):
        group = owner.get(node.name)
        if group is not None:
            out[group].append(node.name)
    return out
