"""Pruning that never crashes because of the architecture: a dry run finds what torch-pruning
cannot cut, and every trial prunes the rest.

:func:`plan_pruning` (once per model, before the study; the study runs it in a child process
under a memory and time limit, :mod:`search.core.limits`):

1. exact rewrites the library maps right (``nn.GLU`` -> ``ChunkGLU``, :mod:`.tp_modules`);
2. the graph is built inside :func:`~search.compress.prune.patches.guarded_torch_pruning` and
   repaired (:func:`~search.compress.prune.graph.repair_graph`);
3. static pass: every group with a known-wrong mapping (:func:`~.tp_graph.group_fault`);
4. dynamic pass: every remaining group cut at the planning ratio, one at a time, locally, and
   the model run after each cut; a group that raises or changes the output shape is left alone
   with the error, its file:line and the ops that route its channels.

:func:`prune_with_plan` then prunes a copy at a trial's ratio with ``plan.left_alone`` ignored;
a failure still raises :class:`PruneError` naming the group's layers.

Example:
    >>> plan = plan_pruning(model, x, ignored_layers=["fc"])
    >>> plan.left_alone   # {"fc": "output layer: ...", "conv1": "GluBackward0: ..."}
    >>> small = prune_with_plan(model, x, ratio=0.3, plan=plan, round_to=8)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch_pruning as tp
from torch import nn

from search.compress.prune.graph import OPTYPE, ROOTS, group_fault, members, routing_ops
from search.compress.prune.modules import (
    LSTMPruner,
    attention_heads,
    default_fixups,
    rewrite_for_pruning,
    undo_rewrites,
)
from search.compress.prune.patches import guarded_torch_pruning
from search.core.errors import describe

OUTPUT_LAYER = "output layer: must keep its output size"


class PruneError(RuntimeError):
    """A cut failed in a trial although the plan allowed it; the message names the layers."""


@dataclass
class PrunePlan:
    """Modules to leave alone (name -> reason naming the op that forced it) and what the dry
    run did: ``rewrites`` (modules swapped for exact equivalents while pruning), ``dry_runs``
    (graphs built), ``error`` (why nothing at all can be pruned, '' otherwise)."""

    left_alone: dict[str, str] = field(default_factory=dict)
    rewrites: list[str] = field(default_factory=list)
    dry_runs: int = 0
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "left_alone": dict(self.left_alone),
            "rewrites": list(self.rewrites),
            "dry_runs": self.dry_runs,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrunePlan:
        return cls(
            left_alone=dict(data.get("left_alone", {})),
            rewrites=list(data.get("rewrites", [])),
            dry_runs=int(data.get("dry_runs", 0)),
            error=str(data.get("error", "")),
        )


def _chunk_groups(pruner: tp.pruner.MetaPruner) -> None:
    """A producer split into k equal parts (``chunk``) loses the same channels in each part:
    the library's ``out_channel_groups`` does exactly that."""
    graph = pruner.DG
    for group in graph.get_all_groups(
        ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types
    ):
        for item in group:
            node = item.dep.target
            sizes = getattr(node.module, "split_sizes", None)
            if node.type == OPTYPE.SPLIT and sizes and len(set(sizes)) == 1 and len(sizes) > 1:
                root = group[0].dep.target.module
                k = pruner.out_channel_groups.get(root, 1)
                pruner.out_channel_groups[root] = math.lcm(k, len(sizes))


def unwrapped_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter, int]]:
    """Parameters outside standard layers (position embeddings, class tokens, scales), each with
    the dim the library starts from: its last non-singleton one, as the library's default
    (graph.py:395); :func:`~search.compress.prune.graph.repair_graph` corrects it where the
    partner's channels say otherwise. Given explicitly, the library does not warn about them."""
    standard = set(tp.pruner.function.PrunerBox) - {tp.ops.OPTYPE.ELEMENTWISE}
    out = []
    for mod_name, m in model.named_modules():
        if tp.ops.module2type(m) in standard:
            continue
        for p_name, p in m.named_parameters(recurse=False):
            dims = [i for i, s in enumerate(p.shape) if s > 1]
            if dims:
                out.append((f"{mod_name}.{p_name}" if mod_name else p_name, p, dims[-1]))
    return out


def build_pruner(
    model: nn.Module, x: torch.Tensor, *, ratio: float, ignored: list[str], **settings: object
) -> tp.pruner.MetaPruner:
    """The library's MetaPruner with our settings (call inside ``guarded_torch_pruning``):
    heads, an LSTM pruner, equal chunks, L2 group importance, global ranking by default.
    ``scopes`` (``{(module names): ratio}``, :func:`~search.compress.prune.groups.ratio_scopes`)
    becomes the library's ``pruning_ratio_dict`` on this model's modules."""
    found = dict(model.named_modules())
    options: dict[str, Any] = {"round_to": None, "global_pruning": True, **settings}
    scopes = cast(dict[tuple[str, ...], float], options.pop("scopes", None) or {})
    if scopes:
        options["pruning_ratio_dict"] = {
            tuple(found[n] for n in names if n in found): r for names, r in scopes.items()
        }
    heads, groups, _ = attention_heads(model)
    pruner = tp.pruner.MetaPruner(
        model,
        x,
        importance=options.pop("importance", tp.importance.GroupMagnitudeImportance(p=2)),
        pruning_ratio=ratio,
        ignored_layers=[found[n] for n in ignored if n in found],
        # The library declares these as mutable defaults and writes into them: fresh dicts
        # keep one trial's modules from leaking into (and staying alive in) the next.
        in_channel_groups={},
        out_channel_groups=groups,
        num_heads=heads,
        customized_pruners={nn.LSTM: LSTMPruner()},
        unwrapped_parameters=[(p, dim) for _, p, dim in unwrapped_parameters(model)],
        **options,
    )
    _chunk_groups(pruner)
    return pruner


def output_shapes(model: nn.Module, x: torch.Tensor) -> list[tuple[int, ...]]:
    """The shape of every raw output of ``model`` at ``x`` (one tensor or a tuple of them)."""
    with torch.no_grad():
        out = model.eval()(x)
    return [tuple(o.shape) for o in (out if isinstance(out, tuple | list) else (out,))]


def dry_run_ratios(ratio: float) -> tuple[float, ...]:
    """The prune ratios a dry run cuts at for a search up to ``ratio``: 0.5 (a group that
    survives half its channels cut survives any lower ratio), and the search's largest ratio
    (at most 0.9: every group keeps channels to map) where that is higher, since some groups
    fail only when cut deep. Both, not only the largest: torch-pruning skips a group it would
    cut too deep (a [8, 16] channel split at 0.8 is left whole), so a single deep dry run
    missed the split that every ratio up to 0.75 breaks."""
    high = min(max(ratio, 0.5), 0.9)
    return (0.5, high) if high > 0.5 else (0.5,)


def plan_pruning(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    ignored_layers: list[str],
    ratio: float = 0.5,
    max_rounds: int = 30,
) -> PrunePlan:
    """Dry-run pruning on copies of ``model`` at each of :func:`dry_run_ratios` of ``ratio``;
    what must be left alone, and why.

    Raises nothing for the architecture: when the graph cannot be built at all, every
    conv/linear/LSTM layer is left alone with that reason and ``error`` says it.
    """
    plan = PrunePlan(left_alone=dict.fromkeys(ignored_layers, OUTPUT_LAYER))
    plan.left_alone.update(attention_heads(model)[2])
    expected = output_shapes(model, example_input)
    with guarded_torch_pruning():
        for r in dry_run_ratios(ratio):
            _dry_runs(model, example_input, r, expected, plan, max_rounds=max_rounds)
            if plan.error:
                break
    return plan


def _dry_runs(
    model: nn.Module,
    example_input: torch.Tensor,
    ratio: float,
    expected: list[tuple[int, ...]],
    plan: PrunePlan,
    *,
    max_rounds: int,
) -> None:
    """Dry runs at ``ratio`` until every group left in ``plan`` passes (or ``max_rounds``);
    each failure adds its layers to ``plan.left_alone``."""
    for _ in range(max_rounds):
        plan.dry_runs += 1
        work = copy.deepcopy(model)
        plan.rewrites = rewrite_for_pruning(work, example_input)
        try:
            ignored = list(plan.left_alone)
            pruner = build_pruner(
                work, example_input, ratio=ratio, ignored=ignored, global_pruning=False
            )
        except Exception as e:  # noqa: BLE001 - the graph cannot be built at all
            plan.error = f"dependency graph: {describe(e, 160)}"
            for name, m in work.named_modules():
                if isinstance(m, ROOTS):
                    plan.left_alone.setdefault(name, plan.error)
            return
        if _static_pass(pruner, plan):
            continue  # new layers left alone: rebuild, the groups change
        if _dynamic_pass(pruner, work, example_input, expected, plan):
            return


def _static_pass(pruner: tp.pruner.MetaPruner, plan: PrunePlan) -> bool:
    graph, found = pruner.DG, False
    for m, reason in graph.failed.items():
        name = graph._module2name.get(m)
        if name and name not in plan.left_alone:
            plan.left_alone[name], found = reason, True
    for group in graph.get_all_groups(
        ignored_layers=pruner.ignored_layers, root_module_types=pruner.root_module_types
    ):
        reason = group_fault(graph, group)
        if reason is None:
            continue
        for name in members(graph, group):
            if name not in plan.left_alone:
                plan.left_alone[name], found = reason, True
    return found


def _tracked_groups(
    pruner: tp.pruner.MetaPruner, current: dict[str, tp.dependency.Group | None]
) -> Iterator[tp.dependency.Group]:
    """The pruner's groups one at a time; ``current["group"]`` is the one being ranked or cut,
    so a failure can be pinned on it."""
    rank = pruner.estimate_importance

    def tracked(group: tp.dependency.Group) -> torch.Tensor:
        current["group"] = group
        return rank(group)

    pruner.estimate_importance = tracked
    for group in pruner.step(interactive=True):
        current["group"] = group
        yield group


def _blame(
    pruner: tp.pruner.MetaPruner, group: tp.dependency.Group | None, model: nn.Module
) -> tuple[list[str], str]:
    """The layers of ``group`` (every root layer when unknown) and the ops routing it."""
    names = members(pruner.DG, group) if group is not None else []
    if not names:
        names = [n for n, m in model.named_modules() if isinstance(m, ROOTS)]
    ops = routing_ops(group) if group is not None else []
    return names, f" (the group passes through {', '.join(ops)})" if ops else ""


def _dynamic_pass(
    pruner: tp.pruner.MetaPruner,
    work: nn.Module,
    x: torch.Tensor,
    expected: list[tuple[int, ...]],
    plan: PrunePlan,
) -> bool:
    """Cut group by group; True when every group passed, False after leaving one alone."""
    current: dict[str, tp.dependency.Group | None] = {"group": None}
    try:
        for group in _tracked_groups(pruner, current):
            group.prune()
            default_fixups(work)
            got = output_shapes(work, x)
            if got != expected:
                raise RuntimeError(f"output shape changed from {expected} to {got}")
        return True
    except Exception as e:  # noqa: BLE001 - any failure is this group's fault
        names, via = _blame(pruner, current["group"], work)
        for name in names:
            plan.left_alone.setdefault(name, f"dry run: {describe(e, 160)}{via}")
        return False


def prune_with_plan(
    model: nn.Module,
    example_input: torch.Tensor,
    *,
    ratio: float,
    plan: PrunePlan,
    **settings: object,
) -> nn.Module:
    """A pruned copy of ``model`` with ``plan.left_alone`` untouched; ``settings`` go to the
    library's MetaPruner (round_to, importance, max_pruning_ratio, unwrapped_parameters, ...).

    Raises:
        PruneError: a cut failed; the message names the group's layers and the ops routing it.
    """
    work = copy.deepcopy(model).eval()
    if ratio == 0 and not any(cast(dict, settings.get("scopes") or {}).values()):
        return work
    current: dict[str, tp.dependency.Group | None] = {"group": None}
    with guarded_torch_pruning():
        rewrite_for_pruning(work, example_input)
        pruner = build_pruner(
            work, example_input, ratio=ratio, ignored=list(plan.left_alone), **settings
        )
        try:
            for group in _tracked_groups(pruner, current):
                group.prune()
        except Exception as e:
            names, via = _blame(pruner, current["group"], work)
            raise PruneError(
                f"{describe(e, 160)} in the group of {', '.join(names[:4])}{via}"
            ) from e
    default_fixups(work)
    undo_rewrites(work)
    return work
