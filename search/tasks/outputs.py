"""How the study reads what a task's model returns: which outputs are exported, distilled and
scored.

The model the study compresses returns one tensor, or a tuple of tensors, each with the batch
first: its *raw outputs*. They are what the ONNX file exports (one ONNX output each, named by
:attr:`Outputs.names`), what pruning keeps the shape of, what distillation compares with the
teacher's (:attr:`Outputs.loss`) and what the metric is computed from, after
:attr:`Outputs.decode` (post-processing outside the graph: box decoding, NMS).

A model that returns a dict or a nested structure says which entries are its raw outputs with
:attr:`Outputs.select` (``("out",)`` for a torchvision segmentation model's
``OrderedDict({"out": ...})``); the study then compresses the model with a ``forward`` that
returns only those entries (:func:`select_outputs`), and everything else of the structure is
dropped from the exported graph.

Example:
    >>> Outputs().read([np.zeros((2, 10))]).shape
    (2, 10)
    >>> Outputs(select=("out",)).output_names(1)
    ('out',)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from search.compress.kd_losses import ClassKD, DistillLoss, as_loss

if TYPE_CHECKING:
    from torch import nn

Key = str | int  # a dict key or a tuple/list index into what the model returns
Path = Key | tuple[Key, ...]  # a key, or keys into nested structures


@dataclass(frozen=True)
class Outputs:
    """How a task's model outputs are read (see the module docstring).

    Attributes:
        select: The entries of the model's return value that are its raw outputs (dict keys,
            tuple indices; a tuple of keys reaches into nested structures). None: the model
            returns one tensor or a tuple of tensors, and all of them are raw outputs.
        names: ONNX output names, one per raw output (default: the selected keys, else
            ``output`` for one output and ``output_0``, ``output_1``, ... for several).
        loss: The distillation loss (:mod:`search.compress.kd_losses`), or a function
            ``loss(student, teacher, labels, *, temperature, alpha) -> scalar`` of the
            student's and the teacher's raw outputs (tuples) and the labels.
        decode: Post-processing outside the exported graph: the raw outputs as numpy arrays
            (batch first) -> what the task's metric takes. None: the metric gets the one
            output as an array, or a tuple of arrays for several.
        exported: What the exported graph computes, for the record (``the model``
            by default).
        scored: What the metric receives, for the record.
    """

    select: tuple[Path, ...] | None = None
    names: tuple[str, ...] | None = None
    loss: DistillLoss | Callable[..., Any] = field(default_factory=ClassKD)
    decode: Callable[[list[np.ndarray]], Any] | None = None
    exported: str = ""
    scored: str = ""

    @property
    def distill_loss(self) -> DistillLoss:
        return as_loss(self.loss)

    def output_names(self, count: int) -> tuple[str, ...]:
        """The ONNX output names for ``count`` raw outputs."""
        if self.names is not None:
            return tuple(self.names)
        if self.select is not None:
            return tuple(_path_name(p) for p in self.select)
        return ("output",) if count == 1 else tuple(f"output_{i}" for i in range(count))

    def read(self, arrays: Sequence[np.ndarray]) -> Any:
        """What the metric takes from the raw outputs ``arrays`` (ONNX Runtime's or torch's,
        as numpy, batch first)."""
        arrays = list(arrays)
        if self.decode is not None:
            return self.decode(arrays)
        return arrays[0] if len(arrays) == 1 else tuple(arrays)

    def describe(self, shapes: Sequence[tuple[int, ...]]) -> dict[str, Any]:
        """The record of how outputs were read: names, shapes, loss, what was exported and
        what the metric received."""
        names = self.output_names(len(shapes))
        return {
            "outputs": {n: list(s) for n, s in zip(names, shapes, strict=False)},
            "exported": self.exported or "the model's forward",
            "scored": self.scored
            or ("the output as an array" if len(shapes) == 1 else "a tuple of arrays"),
            "distillation": self.distill_loss.describe(),
        }


def _path_name(path: Path) -> str:
    parts = path if isinstance(path, tuple) else (path,)
    return ".".join(str(p) for p in parts)


def pick(out: Any, paths: Sequence[Path]) -> Any:
    """The entries ``paths`` of ``out``: one tensor for one path, else a tuple.

    Raises:
        KeyError, IndexError, TypeError: a path that ``out`` does not have.
    """
    picked = []
    for path in paths:
        value = out
        for key in path if isinstance(path, tuple) else (path,):
            value = value[key]
        picked.append(value)
    return picked[0] if len(picked) == 1 else tuple(picked)


_SELECTING: dict[type, type] = {}


def select_outputs(model: nn.Module, paths: Sequence[Path]) -> nn.Module:
    """``model`` itself, whose ``forward`` now returns only the entries ``paths`` of what it
    returned (:func:`pick`).

    The module's class is swapped for a subclass of the same name, so module and parameter
    names (``ignored_layers``, precision groups, state_dicts) stay as they were; exporting
    traces only what the selected outputs need.
    """
    cls = type(model)
    if getattr(cls, "_selects_outputs", False):
        cls = cls.__mro__[1]
    if cls not in _SELECTING:
        base = cls

        # One named input: torch.export matches dynamic_shapes to forward's parameters, and a
        # *args parameter would take the batch as a tuple.
        def forward(self: nn.Module, x: Any) -> Any:
            return pick(base.forward(self, x), self.__dict__["_search_select"])

        _SELECTING[cls] = type(
            cls.__name__,
            (cls,),
            {"forward": forward, "_selects_outputs": True, "__module__": cls.__module__},
        )
    model.__class__ = _SELECTING[cls]
    model.__dict__["_search_select"] = tuple(paths)
    return model
