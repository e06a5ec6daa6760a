"""Repairs of torch-pruning's dependency graph, and the check of one group before it is cut.

Checked against torch-pruning 1.6.0/1.6.1 (see :mod:`search.compress.prune.patches`). After a graph
is built (inside :func:`~search.compress.prune.patches.guarded_torch_pruning`),
:func:`repair_graph` fixes what the library maps wrongly:

* **Split parts in trace order** (``index_mapping.py`` ``update_split_index_mapping`` pairs
  ``Node.outputs``, filled in the order the tracer meets consumers, with the parts in split
  order: silently wrong channels): consumers are reordered by autograd's ``output_nr``; part
  sizes are read from ``_saved_split_size(s)`` and ``_saved_self_sym_sizes`` (torch 2 names);
  a split whose parts cannot be matched one to one to consumers is made opaque.
* **Broadcasts coupled as if channel-aligned** (a one-channel gate multiplied into N channels;
  a mean over channels): those edges are cut, so the N-channel producer is pruned on its own.
* **Bare parameters pruned along their last dim** (graph.py:395): a (1, C, T) position bias is
  pruned along the dim that matches its partner's channels; a (1, 1, H, W) map is cut loose.

:func:`group_fault` says why a group would be cut wrongly (an opaque node, an op that changes
the channel count such as ``F.glu``, a layer written by hand with ``F.conv2d``, an index past a
layer's channels), naming the op.
"""

from __future__ import annotations

import contextlib

import torch
import torch_pruning as tp
from torch import nn

OPTYPE = tp.ops.OPTYPE
# Module types torch-pruning roots groups at (MetaPruner's root_module_types), LSTM included.
ROOTS: tuple[type, ...] = (nn.modules.conv._ConvNd, nn.Linear, nn.LSTM)
# grad_fns torch-pruning maps as element-wise but that change or mix the channel dimension.
CHANNEL_CHANGING = {
    "GluBackward0": "GLU halves its input channels",
    "PixelShuffleBackward0": "pixel shuffle moves channels into space",
    "PixelUnshuffleBackward0": "pixel unshuffle moves space into channels",
    "ChannelShuffleBackward0": "channel shuffle permutes channels",
    "NativeChannelShuffleBackward0": "channel shuffle permutes channels",
    "BmmBackward0": "batched matmul mixes the channel dimension",
}
# grad_fns of weighted ops; fed by a bare nn.Parameter they are a layer written by hand
# (``F.conv2d(x, self.weight)``) that torch-pruning maps as element-wise.
WEIGHTED_FNS = ("Convolution", "Mm", "Addmm", "Bmm", "Baddbmm", "Matmul", "Linear", "Einsum")
# Reductions whose ``_saved_dim`` may remove the channel dimension.
REDUCTIONS = ("Mean", "Sum", "Amax", "Amin", "Max", "Min", "Std", "Var", "Norm", "Logsumexp")
_ROUTING = (
    OPTYPE.SPLIT,
    OPTYPE.CONCAT,
    OPTYPE.RESHAPE,
    OPTYPE.UNBIND,
    OPTYPE.EXPAND,
    OPTYPE.SLICE,
)


def _infer_out(graph: tp.DependencyGraph, node: tp.dependency.Node) -> int | None:
    """The library's channel inference for ``node``, or None where it raises (its legacy
    recursion indexes a split's parts per consumer, shape_infer.py:68, and runs past the
    parts of a split read by more consumers than it has parts: a C2f with two bottlenecks)."""
    from torch_pruning.dependency import shape_infer

    try:
        return shape_infer.infer_out_channels_recursively(graph, node, [0])
    except (IndexError, KeyError, TypeError, ValueError):
        return None


def _output_nr(
    split_node: tp.dependency.Node, consumer: tp.dependency.Node, limit: int = 64
) -> int | None:
    """Which output of ``split_node``'s grad_fn ``consumer`` reads (autograd's output_nr)."""
    target, stack = split_node.grad_fn, [consumer.grad_fn]
    seen: set[object] = set()  # autograd Nodes
    while stack and len(seen) < limit:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        for nxt, nr in getattr(fn, "next_functions", ()):
            if nxt is target:
                return nr
            stack.append(nxt)
    return None


def _split_sizes(node: tp.dependency.Node) -> list[int] | None:
    """Part sizes of a split along dim 1, read from its grad_fn (torch 2 attribute names)."""
    fn = node.grad_fn
    if getattr(fn, "_saved_dim", 1) != 1:
        return None
    if hasattr(fn, "_saved_split_sizes"):
        return list(fn._saved_split_sizes)
    size = getattr(fn, "_saved_split_size", None)
    shape = getattr(fn, "_saved_self_sym_sizes", None)
    if size is None or shape is None or len(shape) < 2 or size < 1:
        return None
    total = int(shape[1])
    return [size] * (total // size) + ([total % size] if total % size else [])


def _fix_split(graph: tp.DependencyGraph, node: tp.dependency.Node) -> None:
    sizes = _split_sizes(node) or node.module.split_sizes
    if not sizes:
        return
    node.module.split_sizes = sizes
    node.module.offsets = [sum(sizes[:i]) for i in range(len(sizes) + 1)]
    nrs = [_output_nr(node, out) for out in node.outputs]
    known = [nr for nr in nrs if nr is not None]
    if len(known) < len(nrs) or sorted(known) != list(range(len(sizes))):
        why = f"split into {len(sizes)} parts whose consumers cannot be matched one to one"
        make_opaque(graph, node, why)
        return
    node.outputs[:] = [out for _, out in sorted(zip(known, node.outputs, strict=True))]


def make_opaque(graph: tp.DependencyGraph, node: tp.dependency.Node, reason: str) -> None:
    """No index mapping through ``node``; every group that reaches it is left alone."""
    graph.opaque.setdefault(node, reason)
    node.enable_index_mapping = False
    for n in [node, *node.inputs, *node.outputs]:
        for d in n.dependencies:
            if d.source is node or d.target is node:
                d.index_mapping = [None, None]


def _cut(a: tp.dependency.Node, b: tp.dependency.Node) -> None:
    a.dependencies[:] = [d for d in a.dependencies if d.target is not b]
    b.dependencies[:] = [d for d in b.dependencies if d.target is not a]


def _reduces_channels(graph: tp.DependencyGraph, node: tp.dependency.Node) -> bool:
    fn = node.grad_fn
    if fn is None or not fn.name().startswith(REDUCTIONS):
        return False
    dims = getattr(fn, "_saved_dim", None)
    sizes = getattr(fn, "_saved_self_sym_sizes", None)
    if sizes is None and isinstance(getattr(fn, "_saved_self", None), torch.Tensor):
        sizes = fn._saved_self.shape
    if dims is None or sizes is None or len(sizes) < 3:
        return False
    dims = [dims] if isinstance(dims, int) else list(dims)
    channels = [_infer_out(graph, n) for n in node.inputs]
    return any(d % len(sizes) == 1 and sizes[1] in channels for d in dims)


def _producer_channels(
    graph: tp.DependencyGraph, node: tp.dependency.Node, limit: int = 32
) -> int | None:
    """Channels of the module that produced ``node``'s tensor, followed up through one-input
    element-wise ops only (no concat, split or view, where the library's inference guesses)."""
    for _ in range(limit):
        if isinstance(node.module, nn.Module) and node.type != OPTYPE.ELEMENTWISE:
            with contextlib.suppress(Exception):
                return graph.get_out_channels(node)
            return None
        if node.type != OPTYPE.ELEMENTWISE or len(node.inputs) != 1:
            return None
        node = node.inputs[0]
    return None


def _fix_parameter_dim(graph: tp.DependencyGraph, node: tp.dependency.Node) -> None:
    """Prune a bare nn.Parameter along the dim that matches the channels it meets; cut a
    parameter with no such dim (a broadcast spatial map) loose."""
    param, channels = node.module, set()
    for op in node.outputs:
        if op.type != OPTYPE.ELEMENTWISE:
            return  # concat/expand (ViT tokens): the library's own handling
        for other in op.inputs:
            if other is not node:
                channels.add(_producer_channels(graph, other))
    if len(channels) != 1 or None in channels:
        return  # unknown partner (behind a concat, a view, ...): keep the library's choice
    (c,) = channels
    dims = [i for i, s in enumerate(param.shape) if s == c]
    if node.pruning_dim in dims:
        return
    if dims:
        node.pruning_dim = 1 if 1 in dims and param.dim() >= 3 else dims[-1]
    else:
        for op in list(node.outputs):
            _cut(op, node)


def _cut_broadcasts(graph: tp.DependencyGraph, node: tp.dependency.Node) -> None:
    if _reduces_channels(graph, node):
        for n in node.inputs:
            _cut(node, n)
        return
    if len(node.inputs) < 2:
        return
    chans = {n: _infer_out(graph, n) for n in node.inputs}
    widest = max((c for c in chans.values() if c), default=0)
    for n, c in chans.items():
        if c == 1 and widest > 1:  # a one-channel map broadcast over many channels
            _cut(node, n)


def repair_graph(graph: tp.DependencyGraph) -> None:
    """Fix split sizes and order, cut broadcast and channel-reduction edges, fix bare parameter
    dims, and disable the mapping of nodes whose mapping raised (see the module docstring)."""
    for node, reason in list(graph.opaque.items()):
        make_opaque(graph, node, reason)
    nodes = list(graph.module2node.values())
    for node in nodes:  # splits first: the channel inference below reads their part sizes
        if node.type == OPTYPE.SPLIT:
            _fix_split(graph, node)
    for node in nodes:
        if node.type == OPTYPE.PARAMETER:
            _fix_parameter_dim(graph, node)
        elif node.type == OPTYPE.ELEMENTWISE:
            _cut_broadcasts(graph, node)


# ------------------------------------------------------------------------------ group checks


def node_label(node: tp.dependency.Node) -> str:
    """A node as the reasons name it: its module name, or ``Type(GradFn)``."""
    if node._name:
        return node._name
    fn = node.grad_fn.name() if node.grad_fn is not None else type(node.module).__name__
    return f"{type(node.module).__name__.strip('_')}({fn})"


def _channels(graph: tp.DependencyGraph, dep: tp.dependency.Dependency) -> int | None:
    with contextlib.suppress(Exception):
        if graph.is_out_channel_pruning_fn(dep.handler):
            return graph.get_out_channels(dep.target.module)
        return graph.get_in_channels(dep.target.module)
    return None


def _op_fault(graph: tp.DependencyGraph, node: tp.dependency.Node) -> str | None:
    if node in graph.opaque:
        return f"{node_label(node)}: {graph.opaque[node]}"
    fn = node.grad_fn.name() if node.grad_fn is not None else ""
    if node.type != OPTYPE.ELEMENTWISE:
        return None
    if fn in CHANNEL_CHANGING:
        return f"{fn}: {CHANNEL_CHANGING[fn]}"
    if fn.startswith(WEIGHTED_FNS):
        params = [
            graph._param_to_name.get(n.module, "?")
            for n in node.inputs
            if n.type == OPTYPE.PARAMETER
        ]
        if params:
            return (
                f"{fn} with parameter {', '.join(params)}: a layer written by hand "
                "(functional conv/matmul), not a standard module"
            )
    return None


def group_fault(graph: tp.DependencyGraph, group: tp.dependency.Group) -> str | None:
    """Why torch-pruning would cut ``group`` (built with all root channels) wrongly, or None."""
    for item in group:
        dep, idxs = item.dep, item.idxs
        for node in (dep.source, dep.target):
            fault = _op_fault(graph, node)
            if fault:
                return fault
        n = _channels(graph, dep)
        if n is None or not idxs or isinstance(dep.target.module, nn.Parameter):
            continue
        if max(idxs) >= n:
            return (
                f"channel index {max(idxs)} mapped onto {node_label(dep.target)} which has "
                f"{n} channels (an op between them changes the channel count)"
            )
        # A producer (conv/linear) must lose whole channels of its own; a norm layer after a
        # concat (DenseNet's norm1, Swin's patch merging) legitimately sees part of a group.
        producer = isinstance(dep.target.module, ROOTS)
        if producer and graph.is_out_channel_pruning_fn(dep.handler) and len(set(idxs)) != n:
            return (
                f"{node_label(dep.target)} would lose {len(set(idxs))} of {n} channels "
                "together (an op between them is not channel-aligned)"
            )
    return None


def members(graph: tp.DependencyGraph, group: tp.dependency.Group) -> list[str]:
    """Names of the conv/linear/LSTM layers whose output channels ``group`` cuts."""
    names = []
    for item in group:
        m = item.dep.target.module
        if isinstance(m, ROOTS) and graph.is_out_channel_pruning_fn(item.dep.handler):
            name = graph._module2name.get(m)
            if name and name not in names:
                names.append(name)
    return names


def routing_ops(group: tp.dependency.Group, limit: int = 4) -> list[str]:
    """grad_fn names of the ops in ``group`` that route channels (split, cat, view, ...)."""
    names: list[str] = []
    for item in group:
        node = item.dep.target
        if node.type in _ROUTING and node.grad_fn is not None:
            fn = node.grad_fn.name()
            if fn not in names:
                names.append(fn)
    return names[:limit]
