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

from collections.abc import Iterable
from typing import Any

import onnx
from onnx import TensorProto, helper

_FLOAT, _HALF = TensorProto.FLOAT, TensorProto.FLOAT16


def _library() -> tuple[set[str], dict[str, list[int]], Any]:
    from onnxruntime.transformers.float16 import (
        ALWAYS_FLOAT_INPUTS,
        DEFAULT_OP_BLOCK_LIST,
        convert_tensor_float_to_float16,
    )

    return set(DEFAULT_OP_BLOCK_LIST), dict(ALWAYS_FLOAT_INPUTS), convert_tensor_float_to_float16


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Tensor name -> element type, from shape inference, graph inputs and initializers."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*g.input, *g.output, *g.value_info)}
    types.update({i.name: i.data_type for i in g.initializer})
    return types


def half_nodes(model: onnx.ModelProto, nodes: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``model`` where the nodes named in ``nodes`` compute in float16.

    Their float initializers are stored as float16 (a copy is made when a node outside shares
    one), float ``Constant``/``Cast`` nodes among them produce float16, every float tensor that
    enters them from outside passes one Cast to float16, and every float tensor they hand to the
    rest of the graph (or to the graph outputs) one Cast back to float, so the graph's interface
    and everything outside keep their types. Ops ONNX Runtime's converter keeps in float (its
    op block list) and non-ONNX-domain nodes stay float.
    """
    block, always_float, to_half = _library()
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    types = _elem_types(model)
    wanted = set(nodes)
    island = [
        n
        for n in g.node
        if n.name in wanted and n.op_type not in block and n.domain in ("", "ai.onnx")
    ]
    island_ids = {id(n) for n in island}
    produced = {o for n in island for o in n.output if o}
    consumers_outside = {i for n in g.node if id(n) not in island_ids for i in n.input} | {
        o.name for o in g.output
    }
    inits = {i.name: i for i in g.initializer}
    init_users: dict[str, list[Any]] = {}
    for n in g.node:
        for i in n.input:
            if i in inits:
                init_users.setdefault(i, []).append(n)

    def is_float(name: str) -> bool:
        return types.get(name) == _FLOAT

    # Island outputs that leave it: the producer writes <name>_fp16, a Cast restores <name>.
    leaving = {t for t in produced if is_float(t) and t in consumers_outside}
    half_name = {t: f"{t}_fp16" for t in leaving}
    entering: dict[str, str] = {}  # outside float tensor -> its float16 copy
    back: dict[str, str] = {}  # inside float16 tensor -> its float copy for always-float inputs
    after: dict[int, list[Any]] = {}  # id(producer) -> Cast nodes to place right after it
    first: list[Any] = []  # Casts of graph inputs, placed before every node
    producer = {o: n for n in g.node for o in n.output}

    for node in island:
        _fix_types(node, to_half)
        keep_float = set(always_float.get(node.op_type, []))
        for idx, name in enumerate(node.input):
            if not name or not is_float(name):
                continue
            if idx in keep_float:
                # A float16 value where the op requires float: read the float copy.
                if name in produced and name not in half_name:
                    if name not in back:
                        back[name] = _cast(name, f"{name}_fp32", _FLOAT, producer, after, first)
                    node.input[idx] = back[name]
                continue
            if name in produced:
                node.input[idx] = half_name.get(name, name)
            elif name in inits:
                node.input[idx] = _half_initializer(
                    g, inits[name], init_users[name], island_ids, to_half, always_float
                )
            else:
                if name not in entering:
                    entering[name] = _cast(name, f"{name}_fp16in", _HALF, producer, after, first)
                node.input[idx] = entering[name]
        for idx, name in enumerate(node.output):
            if name in half_name:
                node.output[idx] = half_name[name]
                cast = helper.make_node(
                    "Cast", [half_name[name]], [name], to=_FLOAT, name=f"{name}_fp16_to_fp32"
                )
                after.setdefault(id(node), []).append(cast)

    # Types changed inside the island and of its weights: drop their stale value_info.
    stale = (
        produced
        | set(half_name.values())
        | {i.name for i in g.initializer if i.data_type == _HALF}
    )
    kept = [v for v in g.value_info if v.name not in stale]
    del g.value_info[:]
    g.value_info.extend(kept)
    ordered = list(first)
    for n in g.node:
        ordered.append(n)
        ordered.extend(after.get(id(n), []))
    del g.node[:]
    g.node.extend(ordered)
    return model


def _cast(
    src: str,
    dst: str,
    to: int,
    producer: dict[str, Any],
    after: dict[int, list[Any]],
    first: list[Any],
) -> str:
    """Add a Cast ``src`` -> ``dst`` right after ``src``'s producer; returns ``dst``."""
    node = helper.make_node("Cast", [src], [dst], to=to, name=f"{dst}_cast")
    maker = producer.get(src)
    (after.setdefault(id(maker), []) if maker is not None else first).append(node)
    return dst


def _half_initializer(
    g: Any,
    init: Any,
    users: list[Any],
    island_ids: set[int],
    to_half: Any,
    always_float: dict[str, list[int]],
) -> str:
    """Store ``init`` as float16; keep a float original when a node outside still reads it."""
    shared = any(
        id(u) not in island_ids
        or any(
            i == init.name and k in always_float.get(u.op_type, []) for k, i in enumerate(u.input)
        )
        for u in users
    )
    if not shared:
        if init.data_type == _FLOAT:
            init.CopyFrom(to_half(init))
        return init.name
    name = f"{init.name}_fp16"
    if not any(i.name == name for i in g.initializer):
        copy = onnx.TensorProto()
        copy.CopyFrom(init)  # the library converts in place
        copy = to_half(copy)
        copy.name = name
        g.initializer.append(copy)
    return name


def _fix_types(node: Any, to_half: Any) -> None:
    """Float-producing attributes of an island node produce float16 instead."""
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == _FLOAT:
            attr.i = _HALF
        elif node.op_type in ("Constant", "ConstantOfShape") and attr.name == "value":
            if attr.t.data_type == _FLOAT:
                attr.t.CopyFrom(to_half(attr.t))
