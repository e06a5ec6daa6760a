"""Guards around torch-pruning's graph code, active only inside :func:`guarded_torch_pruning`.

Written and checked against torch-pruning 1.6.0/1.6.1 (the same code; ``pyproject.toml`` pins
``>=1.6,<1.7``); ``tests/compress/test_tp_patches.py`` fails when the patched internals change.
Three things go wrong in the library while a graph is built, each caught here:

* **Index-mapping code that raises** (``index_mapping.py:219``: ZeroDivisionError on
  ShuffleNet's channel shuffle; ``:244``: a TypeError in the concat mapping on swin_s/swin_b):
  the mapping of that one node is caught and the node marked opaque (``graph.opaque``); every
  group through it is left alone (:mod:`search.compress.prune.graph`).
* **Views mapped as flattens** (``index_mapping.py:168`` reads ``grad_fn._saved_self_sizes``,
  which torch 2 calls ``_saved_self_sym_sizes``, so its "only 2-D/4-D" guard never runs): the
  guard it meant to have is added here; a channel shuffle's view is made opaque.
* **Index lists that grow without bound** (a view mapped as a flatten inside a residual cycle
  multiplies indices by its stride on every pass: Swin ran past 16 GB in two minutes): capped at
  :data:`MAX_INDICES`; a group whose mapping raises is skipped and its root recorded in
  ``graph.failed``.

Every graph built inside the block is then repaired by
:func:`search.compress.prune.graph.repair_graph`. The patches replace module globals of
torch_pruning for the duration of the block only (one thread at a time).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from search.core.errors import describe

if TYPE_CHECKING:
    import torch_pruning as tp
    from torch import nn
    from torch_pruning._helpers import _HybridIndex
    from torch_pruning.dependency.index_mapping import _FlattenIndexMapping

# The torch-pruning internals replaced inside the block: (module, attribute). The test pins the
# source of each, and of the library functions the repairs call.
PATCHED = (
    ("torch_pruning.dependency.index_mapping", "update_concat_index_mapping"),
    ("torch_pruning.dependency.index_mapping", "update_split_index_mapping"),
    ("torch_pruning.dependency.index_mapping", "update_reshape_index_mapping"),
    ("torch_pruning.dependency.index_mapping", "update_unbind_index_mapping"),
    ("torch_pruning.dependency.index_mapping", "update_expand_index_mapping"),
    ("torch_pruning.dependency.index_mapping", "update_slice_index_mapping"),
    ("torch_pruning.dependency.index_mapping", "_FlattenIndexMapping.__call__"),
    ("torch_pruning.dependency.graph", "DependencyGraph.build_dependency"),
    ("torch_pruning.dependency.graph", "DependencyGraph.get_all_groups"),
)
_MAPPINGS = [n for m, n in PATCHED if m.endswith("index_mapping") and "." not in n]
MAX_INDICES = 1 << 18  # more indices than any layer has channels: a mapping gone wrong


def _guard(fname: str, original: Callable) -> Callable:
    def guarded(graph: tp.DependencyGraph, node: tp.dependency.Node) -> None:
        try:
            original(graph, node)
        except Exception as e:  # noqa: BLE001 - any failure makes this one node opaque
            graph.opaque[node] = f"{fname} failed ({describe(e, 160)})"

    return guarded


def _reshape_guard(original: Callable) -> Callable:
    """torch-pruning's reshape mapping with the guard it means to have.

    2-D/3-D views map nothing (as the library intends); a view that leaves the channel
    dimension where it was (first, or last as in Swin's and ConvNeXt's (B, H, W, C)) maps
    nothing; a view of (N, g, C/g, H, W) back to C channels (a channel shuffle) is opaque; the
    rest (a real flatten, attention's heads x head_dim merge) keeps the library's mapping.
    """
    from torch_pruning.dependency import shape_infer

    def guarded(graph: tp.DependencyGraph, node: tp.dependency.Node) -> None:
        sizes = getattr(node.grad_fn, "_saved_self_sym_sizes", None)
        if sizes is None or len(sizes) == 1:
            return original(graph, node)
        if len(sizes) < 4:
            return None
        outs = [shape_infer.infer_in_channels_recursively(graph, n, [0]) for n in node.outputs]
        out = next((c for c in outs if c), None)
        if out is None:
            return None
        # Only 5-D: Swin's and MaxViT's window partitions are 6-D, and (N, 8, 8, 7, 7, 64)
        # would match by coincidence (8 * 8 = 64).
        if len(sizes) == 5 and min(sizes[1], sizes[2]) > 1 and out == sizes[1] * sizes[2]:
            shape = tuple(int(s) for s in sizes)
            graph.opaque[node] = f"channel shuffle: a view of {shape} merges groups into {out}"
            return None
        if out in (sizes[1], sizes[-1]):
            return None
        return original(graph, node)

    return guarded


def _capped(call: Callable) -> Callable:
    def capped(self: _FlattenIndexMapping, idxs: list[_HybridIndex]) -> list[_HybridIndex]:
        if not self.reverse and len(idxs) * self._stride > MAX_INDICES:
            raise OverflowError(f"index mapping would produce {len(idxs) * self._stride} indices")
        return call(self, idxs)

    return capped


def _build_and_repair(original: Callable) -> Callable:
    from search.compress.prune.graph import repair_graph

    def build(
        self: tp.DependencyGraph, *args: object, **kwargs: object
    ) -> tp.DependencyGraph:  # arguments passed through unread
        self.opaque, self.failed = {}, {}
        original(self, *args, **kwargs)
        repair_graph(self)
        return self

    return build


def _all_groups(
    self: tp.DependencyGraph,
    ignored_layers: Iterable[nn.Module] = (),
    root_module_types: Iterable[type[nn.Module]] = (),
) -> Iterator[tp.dependency.Group]:
    """``DependencyGraph.get_all_groups`` (graph.py:278) with each group built under a guard: a
    group whose index mapping raises is skipped and its root recorded in ``self.failed``."""
    visited: set[nn.Module] = set()
    ignored = list(ignored_layers) + self.IGNORED_LAYERS_IN_TRACING
    for m in list(self.module2node):
        if m in ignored or not isinstance(m, tuple(root_module_types)) or m in visited:
            continue
        pruner = self.get_pruner_of_module(m)
        if pruner is None or pruner.get_out_channels(m) is None:
            continue
        try:
            n = pruner.get_out_channels(m)
            group = self.get_pruning_group(m, pruner.prune_out_channels, list(range(n)))
        except Exception as e:  # noqa: BLE001 - a mapping raised: this root cannot be cut
            self.failed[m] = f"index mapping: {type(e).__name__}: {str(e)[:120]}"
            continue
        prunable = True
        for dep, _ in group:
            if self.is_out_channel_pruning_fn(dep.handler):
                visited.add(dep.target.module)
                prunable = prunable and dep.target.module not in ignored
        if prunable:
            yield group


@contextlib.contextmanager
def guarded_torch_pruning() -> Iterator[None]:
    """Within the block, torch-pruning's index mappings cannot raise (the node is marked opaque
    in ``graph.opaque``), index growth is capped, and every graph built is repaired.

    Example:
        >>> with guarded_torch_pruning():
        ...     pruner = tp.pruner.MetaPruner(model, x, ...)
        ...     pruner.step()
    """
    from torch_pruning.dependency import graph as tp_graph
    from torch_pruning.dependency import index_mapping as tp_index_mapping

    saved = {f: getattr(tp_index_mapping, f) for f in _MAPPINGS}
    graph_cls, flatten = tp_graph.DependencyGraph, tp_index_mapping._FlattenIndexMapping
    saved_build, saved_groups = graph_cls.build_dependency, graph_cls.get_all_groups
    saved_flatten = flatten.__call__
    try:
        for f, fn in saved.items():
            inner = _reshape_guard(fn) if f == "update_reshape_index_mapping" else fn
            setattr(tp_index_mapping, f, _guard(f, inner))
        flatten.__call__ = _capped(saved_flatten)
        graph_cls.build_dependency = _build_and_repair(saved_build)
        graph_cls.get_all_groups = _all_groups
        yield
    finally:
        for f, fn in saved.items():
            setattr(tp_index_mapping, f, fn)
        graph_cls.build_dependency = saved_build
        graph_cls.get_all_groups = saved_groups
        flatten.__call__ = saved_flatten
