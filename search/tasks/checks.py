"""What a task factory hands back, checked and made ready before any study exists.

:func:`prepare` runs right after the factory (:func:`search.tasks.load_task`): every way a
``Task`` can be unusable is one :class:`~search.errors.TaskError` line naming the field and
what to do (exit 2, nothing created). In order:

1. the fields: ``model`` an ``nn.Module``, ``example_input`` a tensor with a batch dimension,
   the splits datasets of ``(input, label)`` items (train, val and calibration not empty; an
   input shaped and typed like ``example_input``), ``metric`` callable, ``outputs`` an
   :class:`~search.tasks.outputs.Outputs`;
2. the model as the study compresses it: a torchvision detector or segmenter is adapted
   (:func:`search.tasks.torchvision_dense.adapt`), a declared ``outputs.select`` applied;
3. one forward pass at batch 2: the model must return a tensor, or a tuple of tensors when
   the task says how to read several (``outputs``), each floating point with the batch first.

Example:
    >>> prepare(task, "my_task.py:make_task")   # raises TaskError("task ...: ...") or returns
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sized
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from search.compress.kd_losses import ClassKD, DistillLoss, OutputMSE
from search.core.errors import describe
from search.errors import TaskError
from search.tasks.outputs import Outputs, select_outputs

if TYPE_CHECKING:
    from search.tasks.base import Task

_DOC = "see docs/your-own-model.md"


def prepare(task: Task, spec: str) -> Task:
    """``task`` checked (see the module docstring), with the model the study compresses and
    how its outputs are read.

    Raises:
        TaskError: one line naming what is unusable and how to fix it.
    """
    from search.tasks.torchvision_dense import adapt

    def fail(what: str) -> TaskError:
        return TaskError(f"task {spec!r}: {what}")

    _check_fields(task, fail)
    label = _check_items(task, fail)
    model, outputs = adapt(task.model, task.example_input, task.outputs)
    if outputs.select is not None and not getattr(type(model), "_selects_outputs", False):
        model = select_outputs(model, outputs.select)
    shapes = _check_outputs(model, task.example_input, outputs, fail)
    if outputs.loss == ClassKD():  # not chosen by the task: the loss that fits the labels
        outputs = dataclasses.replace(outputs, loss=default_loss(shapes[0], label))
    return dataclasses.replace(task, model=model.eval(), outputs=outputs)


def default_loss(shape: tuple[int, ...], label: torch.Tensor) -> DistillLoss:
    """The distillation loss for one output of per-item ``shape`` and a label like ``label``:
    class KD over dim 1 when the labels are one integer per position without dim 1 ((N, C)
    logits with (N,) labels, (N, C, H, W) with (N, H, W)); over the last dim when they fit
    that ((N, L, C) with (N, L)); else MSE to the teacher's output (the labels are something
    else: boxes, grids, ...)."""
    whole = tuple(label.shape)
    integer = not label.is_floating_point() or not bool((label >= 0).any())
    if integer and shape and whole == shape[1:]:
        return ClassKD(class_dim=1)
    if integer and shape and whole == shape[:-1]:
        return ClassKD(class_dim=-1)
    return OutputMSE()


def _check_fields(task: Task, fail: Callable[[str], TaskError]) -> None:
    if not isinstance(task.model, nn.Module):
        raise fail(f"Task.model is a {type(task.model).__name__}, not a torch nn.Module")
    x = task.example_input
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] < 1:
        what = f"a {type(x).__name__}" if not isinstance(x, torch.Tensor) else f"{tuple(x.shape)}"
        raise fail(
            f"Task.example_input is {what}: it must be one input as a tensor with a batch "
            "dimension of 1 first, e.g. dataset[0][0].unsqueeze(0)"
        )
    if not callable(task.metric):
        raise fail(f"Task.metric is a {type(task.metric).__name__}, not a function")
    if not isinstance(task.outputs, Outputs):
        raise fail(
            f"Task.outputs is a {type(task.outputs).__name__}, not search.tasks.Outputs ({_DOC})"
        )
    bad = [n for n in task.ignored_layers if not isinstance(n, str)]
    if not isinstance(task.ignored_layers, list | tuple) or bad:
        raise fail("Task.ignored_layers must be a list of module names (strings)")
    for split in ("train", "val", "test", "calibration"):
        data = getattr(task, split)
        if not (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
            raise fail(
                f"Task.{split} is a {type(data).__name__}, not a dataset with __len__ and "
                "__getitem__ (a torch Dataset of (input, label) items)"
            )
        if len(cast(Sized, data)) == 0 and (split != "test" or task.has_test_split):
            raise fail(f"the {split} split is empty: it needs at least one (input, label) item")


def _check_items(task: Task, fail: Callable[[str], TaskError]) -> torch.Tensor:
    """The first item of each split is ``(input, label)`` with an input like the example;
    the first training label as a tensor."""
    x = task.example_input
    labels = []
    for split in ("train", "val", "calibration"):
        try:
            item = getattr(task, split)[0]
        except Exception as e:  # noqa: BLE001 - the user's dataset failed to give an item
            raise fail(f"reading item 0 of the {split} split raised {describe(e)}") from None
        if not isinstance(item, tuple | list) or len(item) != 2:
            size = f" of {len(item)}" if isinstance(item, tuple | list) else ""
            raise fail(
                f"items of the {split} split must be (input, label) pairs, but item 0 is a "
                f"{type(item).__name__}{size}"
            )
        inp = item[0]
        if not isinstance(inp, torch.Tensor):
            raise fail(f"inputs of the {split} split are {type(inp).__name__}, not tensors")
        if tuple(inp.shape) != tuple(x.shape[1:]) or inp.dtype != x.dtype:
            raise fail(
                f"inputs of the {split} split are {inp.dtype} {tuple(inp.shape)}, but "
                f"example_input is {x.dtype} {tuple(x.shape)}: the example must be one item "
                "of the data with a batch dimension of 1"
            )
        try:
            labels.append(torch.as_tensor(item[1]))
        except Exception as e:  # noqa: BLE001 - a label torch cannot hold
            raise fail(
                f"labels of the {split} split are {type(item[1]).__name__}: labels must be "
                f"numbers or tensors ({describe(e)})"
            ) from None
    return labels[0]


def _structure(out: Any) -> str:
    """What a model returned, in a few words: ``a dict with keys 'out', 'aux'``."""
    if isinstance(out, torch.Tensor):
        return f"a tensor {tuple(out.shape)}"
    if isinstance(out, dict):
        return f"a dict with keys {', '.join(repr(k) for k in list(out)[:6])}"
    if isinstance(out, tuple | list):
        kinds = ", ".join(
            str(tuple(o.shape)) if isinstance(o, torch.Tensor) else type(o).__name__
            for o in out[:4]
        )
        more = ", ..." if len(out) > 4 else ""
        return f"a {type(out).__name__} of {len(out)} ({kinds}{more})"
    return f"a {type(out).__name__}"


def _check_outputs(
    model: nn.Module,
    example: torch.Tensor,
    outputs: Outputs,
    fail: Callable[[str], TaskError],
) -> list[tuple[int, ...]]:
    """One forward pass at batch 2; the raw outputs' shapes. Raises ``fail(...)`` for an
    output the study cannot read."""
    x = example[:1].repeat(2, *([1] * (example.dim() - 1)))
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except Exception as e:  # noqa: BLE001 - the user's forward pass is theirs to fix
        raise fail(
            f"the model's forward raised {describe(e)} on example_input repeated to a batch "
            f"of 2 {tuple(x.shape)}"
        ) from None
    declared = outputs != Outputs()
    several = isinstance(out, tuple | list) and all(isinstance(o, torch.Tensor) for o in out)
    if isinstance(out, dict) or (isinstance(out, tuple | list) and not several):
        nested = isinstance(out, tuple | list) and bool(out) and isinstance(out[0], dict)
        hint = (
            "return the raw head tensors from forward and decode them outside the graph with "
            "Outputs(decode=...)"
            if nested
            else "say which entries are its outputs, e.g. Task(outputs=Outputs(select=("
            + (repr(next(iter(out))) if isinstance(out, dict) and out else "0")
            + ",)))"
        )
        raise fail(
            f"the model returns {_structure(out)}; the study exports tensors: {hint} ({_DOC})"
        )
    tensors = list(out) if several else [out]
    if not all(isinstance(o, torch.Tensor) for o in tensors):
        raise fail(f"the model returns {_structure(out)}, not tensors")
    if len(tensors) > 1 and not declared:
        raise fail(
            f"the model returns {_structure(out)}: say how to read several outputs "
            "(Task(outputs=Outputs(select=(0,))) keeps the first; Outputs(loss=..., "
            f"decode=...) keeps all), or return one tensor ({_DOC})"
        )
    names = outputs.output_names(len(tensors))
    for name, o in zip(names, tensors, strict=False):
        if o.dim() == 0 or o.shape[0] != 2:
            raise fail(
                f"output {name!r} has shape {tuple(o.shape)} at a batch of 2: every output "
                "must have the batch dimension first"
            )
        if not o.is_floating_point():
            raise fail(
                f"output {name!r} is {o.dtype}: outputs must be floating point (logits, "
                "scores, boxes); take argmax or thresholds in the metric, not in forward"
            )
    if len(names) != len(tensors):
        raise fail(f"Outputs.names has {len(names)} names for {len(tensors)} outputs")
    return [tuple(o.shape[1:]) for o in tensors]
