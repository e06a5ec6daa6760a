"""Run chosen nodes of an ONNX graph in float16: the ``fp16`` precision of a layer group.

ONNX Runtime's converter (``onnxruntime.transformers.float16.convert_float_to_float16``) converts
a whole model; its ``node_block_list`` keeps nodes in float by wrapping *each blocked node* in
casts. Blocking most of a graph that way (every node outside the fp16 groups, Q/DQ included)
wrote two Cast nodes with the same output name where a tensor feeds two blocked nodes (an invalid
graph), and rounds every float-to-float edge through float16 (measured with onnxruntime 1.31;
onnxconverter-common 1.16 raised instead). So the island is converted here, the other way round:
only the named nodes change, with one Cast into float16 per tensor that enters them and one back
to float per tensor that leaves. What may be float16 is still the library's word: its op block
list, its always-float inputs and its clamping initializer conversion are reused.

Example:
    >>> model = half_nodes(model, {"/layers.2/conv1/Conv", "/layers.2/relu/Relu"})
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import onnx
from onnx import TensorProto, helper

_FLOAT, _HALF = TensorProto.FLOAT, TensorProto.FLOAT16
# The library's convert_tensor_float_to_float16: a float tensor stored as float16.
_ToHalf = Callable[[TensorProto], TensorProto]


def _library() -> tuple[set[str], dict[str, list[int]], _ToHalf]:
    from onnxruntime.transformers.float16 import (
        ALWAYS_FLOAT_INPUTS,
        DEFAULT_OP_BLOCK_LIST,
        convert_tensor_float_to_float16,
    )

    return (
        set(DEFAULT_OP_BLOCK_LIST) | _ALSO_FLOAT,
        dict(ALWAYS_FLOAT_INPUTS),
        convert_tensor_float_to_float16,
    )


# Kept float as well: ops with subgraphs (their bodies would need converting too) and ops whose
# output type is an attribute this module does not rewrite.
_ALSO_FLOAT = {
    "If",
    "Loop",
    "Scan",
    "EyeLike",
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "Multinomial",
    "Bernoulli",
    "SequenceEmpty",
}


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> element type, from shape inference, graph inputs and initializers."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output, *g.value_info)}
    types.update({i.name: i.data_type for i in g.initializer})
    return types


def _subgraph_reads(node: onnx.NodeProto) -> set[str]:
    """Every tensor name read inside ``node``'s subgraphs (outer-scope reads among them)."""
    names: set[str] = set()
    for attr in node.attribute:
        for sub in (*([attr.g] if attr.HasField("g") else []), *attr.graphs):
            for n in sub.node:
                names.update(n.input)
                names |= _subgraph_reads(n)
    return names


class _Names:
    """Fresh tensor and node names that clash with nothing in the graph."""

    def __init__(self, g: onnx.GraphProto) -> None:
        self.used = {i.name for i in (*g.input, *g.output, *g.initializer, *g.value_info)}
        for n in g.node:
            self.used.update((*n.input, *n.output, n.name))

    def new(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name


def half_nodes(model: onnx.ModelProto, nodes: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``model`` where the nodes named in ``nodes`` compute in float16.

    Their float initializers are stored as float16 (a copy is made when a node outside shares
    one), float ``Constant``/``ConstantOfShape``/``Cast`` nodes among them produce float16, every
    float tensor that enters them from outside passes one Cast to float16, and every float tensor
    they hand to the rest of the graph (or to the graph outputs) one Cast back to float, so the
    graph's interface and everything outside keep their types. Ops ONNX Runtime's converter keeps
    in float (its op block list), ops with subgraphs and non-ONNX-domain nodes stay float.
    """
    block, always_float, to_half = _library()
    model = onnx.ModelProto.FromString(model.SerializeToString())
    island = _Island(model, set(nodes), block=block, always_float=always_float, to_half=to_half)
    for node in island.nodes:
        _fix_types(node, to_half)
        island.half_inputs(node)
        island.half_outputs(node)
    island.finish()
    return model


class _Island:
    """The nodes turned float16 and the bookkeeping of one :func:`half_nodes` rewrite."""

    def __init__(
        self,
        model: onnx.ModelProto,
        wanted: set[str],
        *,
        block: set[str],
        always_float: dict[str, list[int]],
        to_half: _ToHalf,
    ) -> None:
        g = self.g = model.graph
        self.types = _elem_types(model)
        self.names = _Names(g)
        self.always_float, self.to_half = always_float, to_half
        self.nodes = [
            n
            for n in g.node
            if n.name in wanted and n.op_type not in block and n.domain in ("", "ai.onnx")
        ]
        self.ids = {id(n) for n in self.nodes}
        self.produced = {o for n in self.nodes for o in n.output if o}
        outside = [n for n in g.node if id(n) not in self.ids]
        read_outside = {i for n in outside for i in n.input} | {o.name for o in g.output}
        for n in outside:
            read_outside |= _subgraph_reads(n)
        self.graph_inputs = {i.name for i in g.input}
        self.inits = {i.name: i for i in g.initializer}
        self.init_users: dict[str, list[onnx.NodeProto]] = {}
        for n in g.node:
            for i in n.input:
                if i in self.inits:
                    self.init_users.setdefault(i, []).append(n)
        # Island outputs that leave it: the producer writes a float16 copy, a Cast restores
        # the name.
        self.half_name = {
            t: self.names.new(f"{t}_fp16")
            for t in self.produced
            if self.is_float(t) and t in read_outside
        }
        self.entering: dict[str, str] = {}  # outside float tensor -> its float16 copy
        self.back: dict[str, str] = {}  # inside float16 tensor -> float copy for float inputs
        self.halved: dict[str, str] = {}  # float initializer -> the float16 one island reads
        self.after: dict[
            int, list[onnx.NodeProto]
        ] = {}  # id(producer) -> Casts to place right after it
        self.first: list[onnx.NodeProto] = []  # Casts of graph inputs, placed before every node
        self.producer = {o: n for n in g.node for o in n.output}

    def is_float(self, name: str) -> bool:
        return self.types.get(name) == _FLOAT

    def cast(self, src: str, dst: str, to: int) -> str:
        node = helper.make_node("Cast", [src], [dst], to=to, name=self.names.new(f"{dst}_cast"))
        maker = self.producer.get(src)
        (self.after.setdefault(id(maker), []) if maker is not None else self.first).append(node)
        return dst

    def half_inputs(self, node: onnx.NodeProto) -> None:
        """Point ``node``'s float inputs at float16 values (or float ones where it needs float)."""
        keep_float = set(self.always_float.get(node.op_type, []))
        for idx, name in enumerate(node.input):
            if not name or not self.is_float(name):
                continue
            if idx in keep_float:
                # A float16 value where the op requires float: read the float copy.
                if name in self.produced and name not in self.half_name:
                    if name not in self.back:
                        self.back[name] = self.cast(name, self.names.new(f"{name}_fp32"), _FLOAT)
                    node.input[idx] = self.back[name]
                continue
            if name in self.produced:
                node.input[idx] = self.half_name.get(name, name)
            elif name in self.inits and name not in self.graph_inputs:
                if name not in self.halved:
                    self.halved[name] = _half_initializer(
                        self.g, self.inits[name], self.shared(name), self.to_half, self.names
                    )
                node.input[idx] = self.halved[name]
            else:
                if name not in self.entering:
                    copy = self.names.new(f"{name}_fp16in")
                    self.entering[name] = self.cast(name, copy, _HALF)
                node.input[idx] = self.entering[name]

    def shared(self, init: str) -> bool:
        """Whether a node outside the island, or one that needs float there, reads ``init``."""
        return any(
            id(u) not in self.ids
            or any(
                i == init and k in self.always_float.get(u.op_type, [])
                for k, i in enumerate(u.input)
            )
            for u in self.init_users[init]
        )

    def half_outputs(self, node: onnx.NodeProto) -> None:
        """Outputs read outside get a float16 name and a Cast back to their float name."""
        for idx, name in enumerate(node.output):
            if name in self.half_name:
                node.output[idx] = self.half_name[name]
                back = helper.make_node(
                    "Cast",
                    [self.half_name[name]],
                    [name],
                    to=_FLOAT,
                    name=self.names.new(f"{name}_cast"),
                )
                self.after.setdefault(id(node), []).append(back)

    def finish(self) -> None:
        """Drop stale value_info and put every Cast next to its producer."""
        g = self.g
        # Types changed inside the island and of its weights: drop their stale value_info.
        stale = self.produced | set(self.half_name.values()) | set(self.halved.values())
        kept = [v for v in g.value_info if v.name not in stale]
        del g.value_info[:]
        g.value_info.extend(kept)
        ordered = list(self.first)
        for n in g.node:
            ordered.append(n)
            ordered.extend(self.after.get(id(n), []))
        del g.node[:]
        g.node.extend(ordered)


def _half_initializer(
    g: onnx.GraphProto, init: TensorProto, shared: bool, to_half: _ToHalf, names: _Names
) -> str:
    """Store ``init`` as float16, or add a float16 copy when a float reader still needs it."""
    if not shared:
        init.CopyFrom(to_half(init))
        return init.name
    copy = onnx.TensorProto()
    copy.CopyFrom(init)  # the library converts in place
    copy = to_half(copy)
    copy.name = names.new(f"{init.name}_fp16")
    g.initializer.append(copy)
    return copy.name


def _fix_types(node: onnx.NodeProto, to_half: _ToHalf) -> None:
    """Float-producing attributes of an island node produce float16 instead."""
    if node.op_type == "ConstantOfShape" and not any(a.name == "value" for a in node.attribute):
        zero = helper.make_tensor("value", _HALF, [1], [0.0])
        node.attribute.append(helper.make_attribute("value", zero))  # the default is float zeros
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == _FLOAT:
            attr.i = _HALF
        elif node.op_type in ("Constant", "ConstantOfShape") and attr.name == "value":
            if attr.t.data_type == _FLOAT:
                attr.t.CopyFrom(to_half(attr.t))
        elif node.op_type == "Constant" and attr.name in ("value_float", "value_floats"):
            values = [attr.f] if attr.name == "value_float" else list(attr.floats)
            dims = [] if attr.name == "value_float" else [len(values)]
            tensor = to_half(helper.make_tensor("value", _FLOAT, dims, values))
            attr.CopyFrom(helper.make_attribute("value", tensor))
