"""Once per study: the per-group pruning sensitivity pass and the prune scales it seeds.

Like the precision groups' sensitivity pass (:mod:`search.study.references`), it runs once, is
kept with the study (user attributes ``prune_sensitivity`` and ``prune_seed``) and seeds the warm
start: the hand-built recipes then cut each group in proportion to the latency it saves on this
target per accuracy it costs (:func:`search.compress.prune.sensitivity.seed_scales`) instead of
all alike. The benchmark measures it once with the same function and hands it to its studies.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from search.compress import distill as kd
from search.compress.onnx_export import export_onnx
from search.compress.prune.sensitivity import (
    group_cutter,
    prune_sensitivity_pass,
    seed_scales,
)

if TYPE_CHECKING:
    from torch import nn

    from search.trial.context import Context

# The recovery after a probe cut: one epoch over this many training items. Enough to bring a
# cut MobileNetV2 from chance back to a metric that ranks the groups; a full distillation per
# group would cost as much as a trial each.
RECOVER_ITEMS = 1024


@dataclass
class PruneReferences:
    """The pass (None when the space prunes with one global ratio or turns it off) and the
    Optuna params it seeds (``prune_scale_<group>``)."""

    sensitivity: dict[str, Any] | None = None
    seed: dict[str, float] = field(default_factory=dict)


def pass_groups(ctx: Context) -> dict[str, list[str]]:
    """The groups the pass cuts one by one: none where the space prunes with one global
    ratio, turns the pass off or prunes nothing."""
    space = ctx.space.prune
    groups = space.groups if isinstance(space.groups, dict) else {}
    if not space.sensitivity or space.ratio.high == 0.0:
        return {}
    return groups


def _quiet(_: str) -> None:
    """Say nothing (the benchmark and the tests run the pass without a ticker)."""


def prune_references(
    ctx: Context, out_dir: Path, *, say: Callable[[str], None] = _quiet
) -> PruneReferences:
    """The per-group pruning sensitivity pass on ``ctx``'s model, where the space searches
    per-group scales and asks for it (:func:`pass_groups`); latencies paired with
    ``ctx.reference``. ``say(line)`` is told each group as its cut starts.

    Raises:
        ValueError: ``ctx`` is not paired with a baseline yet (``ctx.reference`` unset).
    """
    space, groups = ctx.space.prune, pass_groups(ctx)
    if not groups:
        return PruneReferences()
    if ctx.reference is None:
        raise ValueError("the pruning sensitivity pass times files paired with the baseline")
    task, folder, d = ctx.task, out_dir / "prune_sensitivity", ctx.space.distill
    folder.mkdir(parents=True, exist_ok=True)

    def recover(model: nn.Module) -> nn.Module:
        from torch import nn
        from torch.utils.data import Subset

        n = min(RECOVER_ITEMS, len(task.train))  # type: ignore[arg-type]
        teacher = ctx.teacher_logits  # precomputed outputs (one row per item), or the teacher
        rows = teacher if isinstance(teacher, nn.Module) else tuple(t[:n] for t in teacher)
        return kd.train(
            model,
            data=Subset(task.train, range(n)),
            epochs=1,
            lr=math.sqrt(d.lr.low * d.lr.high),
            batch_size=d.batch_size,
            seed=ctx.seed,
            teacher_logits=rows,
            alpha=0.5,
            loss=task.outputs.distill_loss,
        )

    def latency(model: nn.Module, group: str) -> float:
        path = export_onnx(model, task.example_input, folder / f"{group}.onnx")
        return float(ctx.measure(path).extra["paired"]["relative"])  # ctx.reference is set

    sensitivity = prune_sensitivity_pass(
        task.model,
        groups=groups,
        probe_ratio=space.probe_ratio,
        cut=_cutter(ctx, groups, say),
        recover=recover,
        evaluate=lambda m: kd.evaluate(m, task.val, task.metric, read=task.outputs.read),
        latency=latency,
        base_metric=ctx.baseline_val,
    )
    searched = space.scale.low != space.scale.high
    seed = seed_scales(sensitivity, low=space.scale.low, high=space.scale.high) if searched else {}
    return PruneReferences(sensitivity=sensitivity, seed=seed)


def _cutter(
    ctx: Context, groups: dict[str, list[str]], say: Callable[[str], None]
) -> Callable[[str, float], nn.Module]:
    """``cut(group, ratio)`` (:func:`group_cutter` on ``ctx``'s model) that first says which
    group it cuts, of how many, and what follows."""
    task, space = ctx.task, ctx.space.prune
    cut = group_cutter(
        task.model,
        groups,
        example_input=task.example_input,
        ignored_layers=task.ignored_layers or None,
        round_to=ctx.profile.round_to,
        plan=ctx.prune_plan,
        importance=space.hand_importance,
        max_layer_ratio=space.max_layer_ratio,
    )
    names = list(groups)

    def announced(group: str, ratio: float) -> nn.Module:
        say(
            f"group {group} ({names.index(group) + 1}/{len(names)}): cut {ratio:g}, one "
            f"recovery epoch on {RECOVER_ITEMS} items at most, score, time"
        )
        return cut(group, ratio)

    return announced


def describe(sensitivity: dict[str, Any], seed: dict[str, float]) -> str:
    """One line for the console: each group's drop, latency saved and seeded scale."""
    rows = sensitivity["groups"]
    parts = [
        f"{g} {rows[g]['drop']:+.4f}/{rows[g]['saved']:+.1%}"
        + (f" x{seed[f'prune_scale_{g}']:.2f}" if f"prune_scale_{g}" in seed else "")
        for g in rows
    ]
    return (
        f"prune sensitivity (each group cut {sensitivity['probe_ratio']:g} alone: accuracy "
        f"drop/latency saved, seeded scale): {', '.join(parts)} ({sensitivity['seconds']:.0f} s)"
    )
