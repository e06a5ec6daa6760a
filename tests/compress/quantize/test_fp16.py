"""fp16 layer groups: only the chosen nodes change type, and the graph stays valid around them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from search.compress.quantize.fp16 import half_nodes
from search.compress.quantize.qdq import half_only

RNG = np.random.default_rng(0)
X = RNG.standard_normal((1, 4, 8, 8)).astype(np.float32)
W = nh.from_array(RNG.standard_normal((4, 4, 3, 3)).astype(np.float32), "W")
SHAPE = [1, 4, 8, 8]


def _vi(name: str, shape: list[int] = SHAPE) -> onnx.ValueInfoProto:
    return h.make_tensor_value_info(name, T.FLOAT, shape)


def _model(nodes, outputs, inits=(), inputs=None) -> onnx.ModelProto:
    graph = h.make_graph(nodes, "g", inputs or [_vi("x")], outputs, initializer=list(inits))
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 21)])
    model.ir_version = 10
    return model


def _conv(x: str, w: str, y: str, name: str) -> onnx.NodeProto:
    return h.make_node("Conv", [x, w], [y], pads=[1] * 4, name=name)


def _run(model: onnx.ModelProto) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": X})


def _halved(model: onnx.ModelProto, nodes: set[str]) -> onnx.ModelProto:
    """Convert ``nodes``, check the graph, and compare every output with the float model's."""
    half = half_nodes(model, nodes)
    onnx.checker.check_model(half, full_check=True)
    assert [o.type.tensor_type.elem_type for o in half.graph.output] == [T.FLOAT] * len(
        model.graph.output
    )
    for ref, out in zip(_run(model), _run(half), strict=True):
        assert out.dtype == np.float32
        assert np.abs(out - ref).max() <= 2e-2 * max(1.0, np.abs(ref).max())
    return half


def _casts(model: onnx.ModelProto) -> list[tuple[str, str, int]]:
    return [
        (n.input[0], n.output[0], n.attribute[0].i)
        for n in model.graph.node
        if n.op_type == "Cast"
    ]


def test_a_tensor_entering_the_island_and_used_outside_is_cast_once() -> None:
    model = _model(
        [
            h.make_node("Relu", ["x"], ["a"], name="relu"),
            _conv("a", "W", "b", "conv1"),
            _conv("a", "W", "c", "conv2"),
            h.make_node("Add", ["a", "b"], ["y"], name="add"),
        ],
        [_vi("y"), _vi("c")],
        [W],
    )
    half = _halved(model, {"conv1", "conv2"})
    # One Cast into float16 for ``a`` (shared by both convs); one back for each leaving output.
    assert sorted(c[2] for c in _casts(half)) == [T.FLOAT, T.FLOAT, T.FLOAT16]
    add = next(n for n in half.graph.node if n.name == "add")
    assert add.input[0] == "a"  # the float node still reads the float tensor
    assert {i.name: i.data_type for i in half.graph.initializer} == {"W": T.FLOAT16}


def test_a_weight_shared_with_a_float_node_gets_a_float16_copy() -> None:
    model = _model([_conv("x", "W", "a", "c1"), _conv("a", "W", "y", "c2")], [_vi("y")], [W])
    half = _halved(model, {"c1"})
    types = {i.name: i.data_type for i in half.graph.initializer}
    assert types == {"W": T.FLOAT, "W_fp16": T.FLOAT16}
    c1 = next(n for n in half.graph.node if n.name == "c1")
    assert c1.input[1] == "W_fp16"


def test_island_outputs_that_are_graph_outputs_keep_their_name_and_float_type() -> None:
    model = _model(
        [_conv("x", "W", "a", "c1"), h.make_node("Relu", ["a"], ["b"], name="r")],
        [_vi("a"), _vi("b")],
        [W],
    )
    half = _halved(model, {"c1", "r"})
    assert [o.name for o in half.graph.output] == ["a", "b"]


def test_float_constants_inside_the_island_become_float16() -> None:
    model = _model(
        [
            h.make_node("Constant", [], ["k"], value_float=2.0, name="k"),
            h.make_node("Shape", ["x"], ["s"], name="shape"),
            h.make_node("ConstantOfShape", ["s"], ["z"], name="zeros"),
            h.make_node("Mul", ["x", "k"], ["m"], name="mul"),
            h.make_node("Add", ["m", "z"], ["y"], name="add"),
        ],
        [_vi("y")],
    )
    _halved(model, {"k", "shape", "zeros", "mul", "add"})


def test_a_subgraph_reading_an_island_tensor_reads_the_float_copy() -> None:
    then = h.make_graph([h.make_node("Relu", ["a"], ["t"])], "then", [], [_vi("t")])
    other = h.make_graph([h.make_node("Neg", ["a"], ["e"])], "else", [], [_vi("e")])
    cond = nh.from_array(np.array(True), "cond")
    model = _model(
        [
            _conv("x", "W", "a", "c1"),
            h.make_node("If", ["cond"], ["y"], then_branch=then, else_branch=other, name="if"),
        ],
        [_vi("y")],
        [W, cond],
    )
    half = _halved(model, {"c1", "if"})  # the If itself stays float
    assert ("a_fp16", "a", T.FLOAT) in _casts(half)


def test_new_names_never_clash_with_existing_ones() -> None:
    model = _model(
        [
            h.make_node("Relu", ["x"], ["a"], name="r"),
            h.make_node("Sigmoid", ["a"], ["a_fp16"], name="s"),
            h.make_node("Add", ["a", "a_fp16"], ["y"], name="add"),
        ],
        [_vi("y")],
    )
    _halved(model, {"r"})


def test_half_only_names_unnamed_nodes_before_grouping(tmp_path: Path) -> None:
    wa = nh.from_array(RNG.standard_normal((4, 4, 3, 3)).astype(np.float32), "a.weight")
    wb = nh.from_array(RNG.standard_normal((4, 4, 3, 3)).astype(np.float32), "b.weight")
    model = _model([_conv("x", "a.weight", "t", ""), _conv("t", "b.weight", "y", "")], [_vi("y")])
    model.graph.initializer.extend([wa, wb])
    src = tmp_path / "unnamed.onnx"
    onnx.save(model, str(src))
    groups = {"a": ["a"], "b": ["b"]}
    for plan, want in (
        ({"a": "fp16", "b": "float"}, {"a.weight": "fp16", "b.weight": "float"}),
        ({"a": "float", "b": "fp16"}, {"a.weight": "float", "b.weight": "fp16"}),
    ):
        q = half_only(src, tmp_path / "half.onnx", plan=plan, groups=groups)
        assert q.layer_types == want
        onnx.checker.check_model(onnx.load(str(q.path)), full_check=True)


@pytest.mark.parametrize("op", ["Resize"])
def test_inputs_the_op_needs_in_float_stay_float(op: str) -> None:
    scales = nh.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    model = _model(
        [
            h.make_node("Relu", ["x"], ["a"], name="r"),
            h.make_node(op, ["a", "", "scales"], ["y"], mode="linear", name="resize"),
        ],
        [_vi("y", [1, 4, 16, 16])],
        [scales],
    )
    half = _halved(model, {"r", "resize"})
    assert {i.name: i.data_type for i in half.graph.initializer} == {"scales": T.FLOAT}
