"""Hostile ONNX models for the agent's tests and for benchmarks/agent_probe.py.

Every model takes ``input`` (float, ``[batch, 1, 4, 4]``) and returns ``output`` of the same
shape, so only what it does on the way differs: external data in any place a tensor can be,
an EPContext node, tensors of gigabytes from a few bytes (built at session creation or at run
time), and ops that run for days.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]
X = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 4, 4])
Y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1, 4, 4])


def _model(nodes, inits=(), *, functions=(), sparse=()) -> bytes:
    graph = helper.make_graph(list(nodes), "g", [X], [Y], initializer=list(inits))
    graph.sparse_initializer.extend(sparse)
    opsets = OPSET + ([helper.make_opsetid("local", 1)] if functions else [])
    model = helper.make_model(graph, opset_imports=opsets, functions=list(functions))
    return model.SerializeToString()


def relu() -> bytes:
    """The valid control model."""
    return _model([helper.make_node("Relu", ["input"], ["output"])])


def _external(name: str, location: str) -> TensorProto:
    t = numpy_helper.from_array(np.zeros(40, np.uint8), name)
    t.ClearField("raw_data")
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "40")):
        t.external_data.add(key=key, value=value)
    return t


def _added(tensor_name: str) -> list:
    """Nodes that fold ``tensor_name`` into the output: output = input + sum(cast(tensor))."""
    return [
        helper.make_node("Cast", [tensor_name], ["c"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["c"], ["s"], keepdims=0),
        helper.make_node("Add", ["input", "s"], ["output"]),
    ]


def _subgraph(inits=(), nodes=(), out: str = "w") -> object:
    """A graph with no inputs that returns ``out`` (an If branch)."""
    value = helper.make_tensor_value_info(out, TensorProto.UINT8, None)
    return helper.make_graph(list(nodes), "sub", [], [value], initializer=list(inits))


def external_data(where: str, location: str = "secret.txt") -> bytes:
    """A model whose tensor ``W`` keeps its 40 bytes in ``location``, held ``where``:
    initializer, constant, sparse, if_branch, loop_body, scan_body, nested, function."""
    ext = _external("W", location)
    if where == "initializer":
        return _model(_added("W"), [ext])
    if where == "constant":
        return _model([helper.make_node("Constant", [], ["W"], value=ext), *_added("W")])
    if where == "sparse":
        idx = numpy_helper.from_array(np.arange(40, dtype=np.int64), "W_idx")
        sparse = helper.make_sparse_tensor(ext, idx, [40])
        return _model([helper.make_node("Constant", [], ["W"], sparse_value=sparse),
                       *_added("W")])  # fmt: skip
    if where == "sparse_initializer":
        idx = numpy_helper.from_array(np.arange(40, dtype=np.int64), "W_idx")
        sparse = helper.make_sparse_tensor(ext, idx, [40])
        return _model(_added("W"), sparse=[sparse])
    if where == "if_branch":
        cond = numpy_helper.from_array(np.array(True), "cond")
        branch = _subgraph([ext], [helper.make_node("Identity", ["W"], ["w"])])
        node = helper.make_node("If", ["cond"], ["W2"], then_branch=branch, else_branch=branch)
        return _model([node, *_added("W2")], [cond])
    if where in ("loop_body", "nested"):
        body = _loop_body([ext], "W", p="in_" if where == "nested" else "")
        if where == "nested":  # a Loop inside the body of a Loop
            body = _loop_body([_i64("inner_trips", 1)], inner=body)
        return _loop_model(body, trips=1)
    if where == "scan_body":
        state = helper.make_tensor_value_info("st", TensorProto.FLOAT, None)
        elem = helper.make_tensor_value_info("el", TensorProto.FLOAT, None)
        body = helper.make_graph(
            [helper.make_node("Cast", ["W"], ["wc"], to=TensorProto.FLOAT),
             helper.make_node("ReduceSum", ["wc"], ["ws"], keepdims=0),
             helper.make_node("Add", ["st", "ws"], ["st2"]),
             helper.make_node("Identity", ["el"], ["el2"])],
            "scan", [state, elem],
            [helper.make_tensor_value_info("st2", TensorProto.FLOAT, None),
             helper.make_tensor_value_info("el2", TensorProto.FLOAT, None)],
            initializer=[ext],
        )  # fmt: skip
        zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
        scan = helper.make_node("Scan", ["zero", "input"], ["s", "ys"], body=body,
                                num_scan_inputs=1)  # fmt: skip
        return _model([scan, helper.make_node("Add", ["input", "s"], ["output"])], [zero])
    if where == "function":
        const = helper.make_node("Constant", [], ["W"], value=ext)
        fn = helper.make_function("local", "Leak", [], ["W"], [const], OPSET)
        return _model([helper.make_node("Leak", [], ["W"], domain="local"), *_added("W")],
                      functions=[fn])  # fmt: skip
    raise ValueError(where)


EXTERNAL_PLACES = ("initializer", "constant", "sparse", "sparse_initializer", "if_branch",
                   "loop_body", "scan_body", "nested", "function")  # fmt: skip


def _loop_body(inits=(), tensor: str = "", *, inner=None, p: str = "") -> object:
    """A Loop body: ``x_out`` = Relu(``x_in``), or ``x_in`` + sum(``tensor``) when named, or
    what the Loop ``inner`` (run ``inner_trips`` times on ``x_in``) makes; names start with
    ``p`` (a body inside a body needs names of its own)."""
    nodes = [helper.make_node("Identity", [p + "cond_in"], [p + "cond_out"])]
    if inner is not None:
        nodes.append(helper.make_node("Loop", ["inner_trips", p + "cond_in", p + "x_in"],
                                      [p + "x_out"], body=inner))  # fmt: skip
    elif tensor:
        nodes += [helper.make_node("Cast", [tensor], [p + "wc"], to=TensorProto.FLOAT),
                  helper.make_node("ReduceSum", [p + "wc"], [p + "ws"], keepdims=0),
                  helper.make_node("Add", [p + "x_in", p + "ws"], [p + "x_out"])]  # fmt: skip
    else:
        nodes.append(helper.make_node("Relu", [p + "x_in"], [p + "x_out"]))
    return helper.make_graph(
        nodes, p + "body",
        [helper.make_tensor_value_info(p + "i", TensorProto.INT64, []),
         helper.make_tensor_value_info(p + "cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info(p + "x_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(p + "cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info(p + "x_out", TensorProto.FLOAT, None)],
        initializer=list(inits),
    )  # fmt: skip


def _loop_model(body, *, trips: int | None) -> bytes:
    inits = [numpy_helper.from_array(np.array(True), "cond")]
    trip = ""
    if trips is not None:
        inits.append(numpy_helper.from_array(np.array(trips, np.int64), "trips"))
        trip = "trips"
    return _model([helper.make_node("Loop", [trip, "cond", "input"], ["output"], body=body)],
                  inits)  # fmt: skip


def ep_context() -> bytes:
    """A model with an EPContext node naming a context file beside the model."""
    node = helper.make_node("EPContext", ["input"], ["output"], domain="com.microsoft",
                            embed_mode=0, ep_cache_context="../../etc/passwd")  # fmt: skip
    graph = helper.make_graph([node], "g", [X], [Y])
    opsets = [*OPSET, helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets).SerializeToString()


def _big_then_added(nodes, inits=()) -> bytes:
    """``nodes`` make ``big``; output = input + sum(big)."""
    return _model([*nodes, helper.make_node("ReduceSum", ["big"], ["s"], keepdims=0),
                   helper.make_node("Add", ["input", "s"], ["output"])], inits)  # fmt: skip


def _i64(name: str, values) -> TensorProto:
    return numpy_helper.from_array(np.array(values, np.int64), name)


def memory_bomb(kind: str, floats: int) -> bytes:
    """A model of a few hundred bytes that makes a float tensor of ``floats`` elements:
    constant_of_shape, expand, range (at session creation, by constant folding), tile, pad,
    resize, outer (from the input, at run time)."""
    f32 = lambda n, v: numpy_helper.from_array(np.array(v, np.float32), n)  # noqa: E731
    if kind == "constant_of_shape":
        return _big_then_added([helper.make_node("ConstantOfShape", ["shape"], ["big"])],
                               [_i64("shape", [floats])])  # fmt: skip
    if kind == "expand":
        return _big_then_added([helper.make_node("Expand", ["one", "shape"], ["big"])],
                               [f32("one", [1.0]), _i64("shape", [floats])])  # fmt: skip
    if kind == "range":
        ends = [f32("a", 0.0), f32("b", float(floats)), f32("d", 1.0)]
        return _big_then_added([helper.make_node("Range", ["a", "b", "d"], ["big"])], ends)
    if kind == "tile":  # the input is [batch, 1, 4, 4]: 16 floats per row
        return _big_then_added([helper.make_node("Tile", ["input", "reps"], ["big"])],
                               [_i64("reps", [1, max(1, floats // 16), 1, 1])])  # fmt: skip
    if kind == "pad":
        side = max(1, int((floats / 2) ** 0.5))
        return _big_then_added([helper.make_node("Pad", ["input", "pads"], ["big"])],
                               [_i64("pads", [0, 0, side, side, 0, 0, side, side])])  # fmt: skip
    if kind == "resize":
        k = max(1.0, (floats / 16) ** 0.5)
        return _big_then_added(
            [helper.make_node("Resize", ["input", "", "scales"], ["big"], mode="nearest")],
            [f32("scales", [1.0, 1.0, k, k])],
        )
    if kind == "outer":  # a column of the input times a row of ones
        return _big_then_added(
            [helper.make_node("Reshape", ["input", "col"], ["c"]),
             helper.make_node("ConstantOfShape", ["rowshape"], ["row"],
                              value=f32("v", [1.0])),
             helper.make_node("MatMul", ["c", "row"], ["big"])],
            [_i64("col", [-1, 1]), _i64("rowshape", [1, max(1, floats // 16)])],
        )  # fmt: skip
    raise ValueError(kind)


BOMBS = ("constant_of_shape", "expand", "range", "tile", "pad", "resize", "outer")


def long_running(kind: str) -> bytes:
    """A model that runs for days: loop (trip count 2**40), while_true (no trip count, the
    condition never false), nested (2**20 x 2**20), scan (2**24 steps over an expanded input)."""
    if kind == "loop":
        return _loop_model(_loop_body(), trips=2**40)
    if kind == "while_true":
        return _loop_model(_loop_body(), trips=None)
    if kind == "nested":
        inner = _loop_body(p="in_")
        return _loop_model(_loop_body([_i64("inner_trips", 2**20)], inner=inner), trips=2**20)
    if kind == "scan":
        state = helper.make_tensor_value_info("st", TensorProto.FLOAT, None)
        elem = helper.make_tensor_value_info("el", TensorProto.FLOAT, None)
        body = helper.make_graph(
            [helper.make_node("Add", ["st", "el"], ["st2"])], "scan", [state, elem],
            [helper.make_tensor_value_info("st2", TensorProto.FLOAT, None)],
        )  # fmt: skip
        zero = numpy_helper.from_array(np.zeros((), np.float32), "zero")
        nodes = [
            helper.make_node("ReduceSum", ["input"], ["r"], keepdims=0),
            helper.make_node("Expand", ["r", "n"], ["seq"]),
            helper.make_node("Scan", ["zero", "seq"], ["s"], body=body, num_scan_inputs=1),
            helper.make_node("Add", ["input", "s"], ["output"]),
        ]
        return _model(nodes, [zero, _i64("n", [2**24])])
    raise ValueError(kind)


LONG = ("loop", "while_true", "nested", "scan")
