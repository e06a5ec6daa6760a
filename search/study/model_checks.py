"""Checks of the user's model before a study exists, and the settings the trials take from it.

:func:`check_model` runs once, after the task is loaded and before the study is created or
opened, so a model the search cannot work with stops with one line and exit 2 and nothing on
disk. In order, cheapest first:

1. the task's metric of the uncompressed model on the validation split is a finite number;
2. every low-rank pattern of the space selects a Linear or Conv layer of the model;
3. the model exports to ONNX with a batch dimension that really is dynamic
   (:func:`~search.compress.onnx_export.export_with_report`);
4. the space's precision groups own layers of that file: a group that matches no layer is an
   error, or (``quantize.unmatched_groups: derive``, as in the default space) groups are derived
   from the model's structure (:mod:`search.compress.quantize.derive_groups`);
5. the pruning dry run (:func:`~search.compress.prune.plan.plan_pruning`) in a child process
   under a memory and a time limit (:mod:`search.core.limits`): what torch-pruning cannot cut is
   left alone, printed here once and recorded in every trial; when nothing can be pruned, the prune
   ratio is fixed at 0 and the other techniques are searched.

The result (:class:`ModelChecks`) is stored with the study (user attribute ``model``): which
groups the trials use and where they came from, what pruning leaves alone and why, how the model
was exported.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.compress.prune.plan import OUTPUT_LAYER, PrunePlan
from search.compress.prune.step import PruneSpace
from search.config import Space
from search.core.errors import describe
from search.core.progress import console
from search.core.schema import FloatRange
from search.errors import ConfigError, SearchError, TaskError
from search.trial.context import MetricError, checked_metric

if TYPE_CHECKING:
    import optuna
    import torch
    from torch import nn

    from search.tasks import Task

DRY_RUN_TIMEOUT_S = 600.0  # maxvit_t planned in 187 s on a shared 2-core machine
DRY_RUN_MEMORY_BYTES = 6 << 30  # above what the process maps; at most half the free memory


class ModelError(TaskError):
    """The model cannot be searched as it is (it does not export with a dynamic batch)."""


@dataclass
class ModelChecks:
    """What :func:`check_model` found and the space the trials use (groups fitted to the model;
    prune ratio fixed at 0 when nothing can be pruned)."""

    space: Space
    groups_source: str  # "space" or "derived"
    prune_plan: PrunePlan
    export: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        return {
            "groups": {g: list(p) for g, p in self.space.quantize.groups.items()},
            "groups_source": self.groups_source,
            "pruning": self.prune_plan.to_dict(),
            "export": self.export,
            "notes": list(self.notes),
        }

    def store(self, study: optuna.Study) -> None:
        """Keep the record with the study (attribute ``model``)."""
        import json

        study.set_user_attr("model", json.loads(json.dumps(self.record(), default=str)))


def top_level(model: nn.Module) -> str:
    return ", ".join(name for name, _ in model.named_children()) or "(none)"


def check_model(task: Task, space: Space) -> ModelChecks:
    """Run the checks of the module docstring on ``task``'s model; print what was decided.

    Raises:
        MetricError: the metric of the uncompressed model is not a finite number.
        ConfigError: a precision group or low-rank pattern matches no layer of the model.
        ModelError: no exporter made an ONNX file with a dynamic batch that agrees with torch.
    """
    model, x = task.model, task.example_input
    check_metric(task)
    outputs = check_loss(task)
    check_lowrank_patterns(model, space)
    names = task.outputs.output_names(len(outputs["outputs"]))
    with tempfile.TemporaryDirectory(prefix="search-check.") as tmp:
        export = _export(model, x, Path(tmp) / "model.onnx", names)
        export["outputs"] = outputs
        groups, source, notes = fit_groups(model, x, space, Path(tmp) / "model.onnx")
    plan = dry_run(task, space)
    quantize = space.quantize.model_copy(update={"groups": groups})
    update: dict[str, Any] = {
        "quantize": quantize,
        "prune": _prune_groups(model, space, groups, plan),
    }
    if plan.error:  # nothing can be pruned: no prune ratio to search
        no_pruning = FloatRange(low=0.0, high=0.0)
        update["prune"] = space.prune.model_copy(update={"ratio": no_pruning, "groups": {}})
    checks = ModelChecks(space.model_copy(update=update), source, plan, export, notes)
    _say(checks)
    return checks


def check_metric(task: Task) -> float:
    """The task's metric of the uncompressed model on the validation split, in torch.

    Raises:
        MetricError: the metric raised, or returned something that is not a finite number.
    """
    from search.compress import distill as kd

    where = "the validation split (the uncompressed model, in torch)"
    try:
        outs, labels = kd.outputs_and_labels(task.model, task.val)
    except Exception as e:  # noqa: BLE001 - the user's model or data failed on their data
        raise ModelError(f"the model failed on {where}: {describe(e)}") from None
    try:
        value = task.metric(task.outputs.read(outs), labels)
    except SearchError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's metric failed on their outputs
        shapes = ", ".join(str(o.shape) for o in outs)
        raise MetricError(
            f"the task's metric {task.metric_name!r} raised {describe(e)} on {where} "
            f"(outputs {shapes}, labels {labels.shape})"
        ) from None
    return checked_metric(value, task.metric_name, where)


def check_loss(task: Task) -> dict[str, Any]:
    """One distillation loss on two training items, the teacher against itself: the loss must
    read the model's outputs with the task's labels. Returns the record of how outputs are read
    (:meth:`~search.tasks.outputs.Outputs.describe`).

    Raises:
        ModelError: the loss raised or is not a finite number (one line naming the shapes).
    """
    import math

    import torch

    from search.compress.distill import as_tuple
    from search.tasks import stack

    x, y = stack(task.train, limit=2)
    loss = task.outputs.distill_loss
    with torch.no_grad():
        out = as_tuple(task.model.eval()(x))
        shapes = [tuple(o.shape) for o in out]
        try:
            value = float(loss(out, out, y, temperature=2.0, alpha=0.5))
        except Exception as e:  # noqa: BLE001 - the loss does not fit these outputs or labels
            raise ModelError(
                f"distillation ({loss.describe()}) cannot read the outputs "
                f"{', '.join(map(str, shapes))} with the training labels {tuple(y.shape)} "
                f"{y.dtype}: {describe(e)}; give the task a loss that fits its outputs, "
                "Task(outputs=Outputs(loss=...)) (see docs/your-own-model.md)"
            ) from None
    if not math.isfinite(value):
        raise ModelError(f"distillation ({loss.describe()}) gives {value} on two training items")
    return task.outputs.describe([s[1:] for s in shapes])


def check_lowrank_patterns(model: nn.Module, space: Space) -> None:
    """Every low-rank pattern selects a Linear/Conv layer (when low-rank is searched at all)."""
    from torch import nn

    lowrank = space.lowrank
    if True not in lowrank.apply:
        return
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    names = [n for n, m in model.named_modules() if n and type(m) in kinds]
    wanted = [("lowrank.layers", p) for p in lowrank.layers]
    wanted += [(f"lowrank.groups.{g}", p) for g, grp in lowrank.groups.items() for p in grp.layers]
    for key, pattern in wanted:
        if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
            raise ConfigError(
                f"{key}: pattern {pattern!r} matches no Linear or Conv layer of the model; its "
                f"top-level modules are: {top_level(model)}"
            )


def _export(
    model: nn.Module, x: torch.Tensor, path: Path, names: tuple[str, ...]
) -> dict[str, Any]:
    from search.compress.onnx_export import ExportError, export_with_report

    try:
        result = export_with_report(model, x, path, names=names)
    except ExportError as e:
        why = f"the model cannot be exported to ONNX with a dynamic batch: {e}"
        raise ModelError(why) from None
    return {
        "exporter": result.exporter,
        "trace_batch": result.trace_batch,
        "verified": {str(b): err for b, err in result.verified.items()},
        "notes": result.notes,
    }


def fit_groups(
    model: nn.Module, x: torch.Tensor, space: Space, onnx_path: Path
) -> tuple[dict[str, list[str]], str, list[str]]:
    """The precision groups the trials use, where they came from, and what to say about it."""
    import onnx

    from search.compress.quantize.derive_groups import derive_groups
    from search.compress.quantize.groups import owned_layers

    graph = onnx.load(str(onnx_path), load_external_data=False)
    named = space.quantize.groups
    unmatched = [g for g, nodes in owned_layers(graph, named).items() if not nodes]
    if not unmatched:
        return dict(named), "space", []
    if space.quantize.unmatched_groups == "error":
        g = unmatched[0]
        raise ConfigError(
            f"quantize.groups: group {g!r} {named[g]} matches no layer of the model; its "
            f"top-level modules are: {top_level(model)}"
        )
    derived = derive_groups(model, x, n_groups=space.quantize.derived_groups)
    owned = owned_layers(graph, derived)
    derived = {g: pats for g, pats in derived.items() if owned[g]} or {"all": ["*"]}
    note = (
        f"precision groups: the space's {', '.join(unmatched)} match no layer of this model; "
        f"{len(derived)} groups derived from its structure: {', '.join(derived)}"
    )
    return derived, "derived", [note]


def _prune_groups(
    model: nn.Module, space: Space, groups: dict[str, list[str]], plan: PrunePlan
) -> PruneSpace:
    """The prune section with ``groups: quantize`` resolved: the precision groups that own
    layers pruning may cut (the output layer and what the plan leaves alone do not count);
    groups the space names itself stay as they are."""
    from search.compress.prune.groups import prunable_groups

    prune = space.prune
    if prune.groups != "quantize":
        return prune
    return prune.resolved(prunable_groups(model, groups, plan.left_alone))


def dry_run(task: Task, space: Space) -> PrunePlan:
    """The pruning plan of ``task``'s model, made in a child process under a memory and time
    limit (in this process where there is no fork); a plan with ``error`` when it failed."""
    from search.compress.prune.plan import plan_pruning
    from search.compress.prune.step import ignored_names
    from search.core.limits import run_limited

    model, x = task.model, task.example_input
    names = ignored_names(model, x, task.ignored_layers or None)  # a misspelt name: exit 2
    if space.prune.ratio.high == 0.0:
        return PrunePlan(left_alone=dict.fromkeys(names, OUTPUT_LAYER))
    ratio = space.prune.max_ratio

    def plan() -> dict[str, Any]:
        return plan_pruning(model, x, ignored_layers=names, ratio=ratio).to_dict()

    if not hasattr(os, "fork"):
        return PrunePlan.from_dict(plan())
    result = run_limited(plan, memory_bytes=_memory_budget(), timeout_s=DRY_RUN_TIMEOUT_S)
    if result.ok:
        return PrunePlan.from_dict(result.value)
    return PrunePlan(
        left_alone=dict.fromkeys(names, OUTPUT_LAYER), error=f"pruning dry run: {result.error}"
    )


def _memory_budget() -> int:
    """:data:`DRY_RUN_MEMORY_BYTES`, or half the memory still available when that is less."""
    try:
        for line in open("/proc/meminfo").read().splitlines():
            if line.startswith("MemAvailable:"):
                return min(DRY_RUN_MEMORY_BYTES, int(line.split()[1]) * 1024 // 2)
    except OSError:
        pass
    return DRY_RUN_MEMORY_BYTES


def _say(checks: ModelChecks) -> None:
    """Print once what the study takes from the model (derived groups, layers left alone)."""
    say = functools.partial(console.print, markup=False, highlight=False)  # reasons hold [..]
    for note in checks.notes + checks.export.get("notes", []):
        say(f"note: {note}")
    read = checks.export.get("outputs") or {}
    if read:
        shapes = ", ".join(f"{n} {tuple(s)}" for n, s in read["outputs"].items())
        say(f"outputs: {shapes}; distillation: {read['distillation']}")
    plan = checks.prune_plan
    for rewrite in plan.rewrites:
        say(f"pruning rewrites {rewrite} (the same function, prunable)")
    if plan.error:
        say(
            f"pruning: nothing of this model can be pruned ({plan.error}); prune ratio fixed "
            "at 0, the other techniques are searched"
        )
        return
    alone: dict[str, list[str]] = {}
    for name, why in plan.left_alone.items():
        if why != OUTPUT_LAYER:
            alone.setdefault(why, []).append(name)
    if not alone:
        return
    n = sum(len(v) for v in alone.values())
    say(f"pruning leaves {n} layer(s) alone (recorded in every trial):")
    for why, names in list(alone.items())[:5]:
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        say(f"  {', '.join(names[:3])}{more}: {why}")
    if len(alone) > 5:
        say(f"  ... {len(alone) - 5} more reason(s); see the study's 'model' record")
