"""What the agent accepts as an upload: an ONNX model that names no file, or a plain array.

An ONNX tensor may keep its bytes in another file (``data_location: EXTERNAL`` with a
``location`` relative to the model, or to the folder a session option names): ONNX Runtime, and
``onnx.checker`` already, would read a file on the target that a client chose, and hand its
bytes back as the model's outputs. So every tensor of an upload is looked at before anything
else reads it: initializers and sparse initializers of the main graph, tensors held in node
attributes (``Constant``, ``ConstantOfShape``, ...), the graphs of control-flow nodes (``Loop``,
``If``, ``Scan``) at any depth, model-local functions and training graphs. A tensor with external
data anywhere refuses the upload, and so does an ``EPContext`` node (it names a compiled-context
file beside the model). Then ``onnx.checker`` checks the rest.

A ``.npy`` upload is read with ``allow_pickle=False`` after its header is checked against its
size, so a header that claims a huge shape cannot make the agent allocate it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from search.core.errors import first_line

if TYPE_CHECKING:
    import onnx


class UploadError(ValueError):
    """An upload the agent refuses (answered 400, one line)."""


def _graphs(model: onnx.ModelProto) -> Iterator[onnx.GraphProto]:
    """Every graph of ``model``: the main one, those of training, and all nested below them
    or in model-local functions (through node attributes)."""
    todo = [model.graph]
    for info in model.training_info:
        todo += [info.initialization, info.algorithm]
    nodes = [n for f in model.functions for n in f.node]
    while todo or nodes:
        if todo:
            graph = todo.pop()
            yield graph
            nodes.extend(graph.node)
            continue
        node = nodes.pop()
        for attr in node.attribute:
            todo.extend([attr.g] if attr.HasField("g") else [])
            todo.extend(attr.graphs)


def _tensors(model: onnx.ModelProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """(where, tensor) for every tensor ``model`` holds, nested graphs and functions included."""
    attributes = [(f"function {f.name}", a) for f in model.functions for a in f.attribute_proto]
    for graph in _graphs(model):
        of = f" of graph {graph.name!r}"
        for t in graph.initializer:
            yield f"initializer {t.name!r}{of}", t
        for s in graph.sparse_initializer:
            yield f"sparse initializer {s.values.name!r}{of}", s.values
            yield f"sparse initializer {s.values.name!r}{of}", s.indices
        for node in graph.node:
            name = node.name or node.op_type
            attributes += [(f"node {name!r}{of}", a) for a in node.attribute]
    for f in model.functions:
        attributes += [
            (f"node {n.name or n.op_type!r} of function {f.name!r}", a)
            for n in f.node
            for a in n.attribute
        ]
    for where, attr in attributes:
        held = [attr.t] if attr.HasField("t") else []
        held += list(attr.tensors)
        for sparse in ([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []) + list(
            attr.sparse_tensors
        ):
            held += [sparse.values, sparse.indices]
        yield from ((where, t) for t in held)


def _nodes(model: onnx.ModelProto) -> Iterator[onnx.NodeProto]:
    for graph in _graphs(model):
        yield from graph.node
    for f in model.functions:
        yield from f.node


def check_model(model: onnx.ModelProto) -> None:
    """Refuse a parsed ``onnx.ModelProto`` that names a file: external data anywhere, or an
    ``EPContext`` node.

    Raises:
        UploadError: one line naming the tensor or node.
    """
    from onnx import TensorProto

    for where, t in _tensors(model):
        if t.data_location == TensorProto.EXTERNAL or len(t.external_data) > 0:
            location = next((e.value for e in t.external_data if e.key == "location"), "?")
            raise UploadError(
                f"the model's {where} keeps its data in another file ({location!r}); the agent "
                "takes only self-contained models: save it with its weights inside "
                "(onnx.save(model, path, save_as_external_data=False))"
            )
    for node in _nodes(model):
        if node.op_type == "EPContext":
            raise UploadError(
                f"the model holds an EPContext node ({node.name!r}), which names a compiled "
                "context file; the agent takes only plain ONNX graphs"
            )


def check_onnx(data: bytes) -> None:
    """Parse ``data`` as ONNX, refuse it if it names a file (:func:`check_model`), then run
    ``onnx.checker`` on it.

    Raises:
        UploadError: one line.
    """
    import onnx

    try:
        model = onnx.load_from_string(data)
    except Exception as e:  # noqa: BLE001 - protobuf raises its own DecodeError and others
        raise UploadError(f"not an ONNX model: {first_line(e)}") from None
    check_model(model)
    try:
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001
        raise UploadError(f"not a valid ONNX model: {first_line(e)}") from None


def check_npy(data: bytes) -> None:
    """Refuse ``data`` unless it is a ``.npy`` array of numbers whose header matches its size
    (read with ``allow_pickle=False``).

    Raises:
        UploadError: one line.
    """
    buf = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(buf)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(buf)
    except Exception as e:  # noqa: BLE001 - anything the header parser rejects
        raise UploadError(f"not a .npy array: {first_line(e)}") from None
    if dtype.hasobject or dtype.kind not in "biuf":
        raise UploadError(f"a .npy upload must hold numbers, not {dtype} (no pickles)")
    expected = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if expected != len(data) - buf.tell():
        raise UploadError(
            f"the .npy header says {shape} of {dtype} ({expected} bytes) but "
            f"{len(data) - buf.tell()} bytes follow it"
        )
    try:
        np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - anything np.load rejects is a bad upload
        raise UploadError(f"not a .npy array without pickles: {first_line(e)}") from None
