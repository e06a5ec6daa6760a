"""One-off per-group pruning sensitivity pass, and the prune scales it seeds (AMC-style).

For each prune group alone (:mod:`search.compress.prune.groups`), the pass cuts ``probe_ratio``
of the group's channels, leaves every other layer whole, lets the model recover briefly
(``recover``: BatchNorm statistics and a short distillation; right after pruning a model is at
chance, facts), and records two things: the validation metric lost (``drop``) and the share of
the baseline's latency the cut saved on the target (``saved``, from a latency paired with the
baseline there). It runs once per study, like the precision groups' sensitivity pass
(:mod:`search.compress.quantize.sensitivity`), and is plain data stored with the study.

:func:`seed_scales` turns it into one scale per group. With a drop that grows with the square of
the share cut and a saving that grows linearly (to first order), removing a given share of the
latency at the least accuracy means cutting each group in proportion to ``saved / drop``
(Lagrange: minimize ``sum d_g x_g^2`` subject to ``sum s_g x_g = const`` gives
``x_g ~ s_g / d_g``); the scales are normalized so that their mean weighted by ``saved`` is 1,
so the global ratio removes the same latency as cutting every group alike. The same
allocation AMC learns with a reinforcement-learning agent per layer (He et al., ECCV 2018), here
in closed form per group from two measurements, on the target's own latency.

The pass takes callables, so it knows no study, trial or target: where the model is recovered,
scored and timed is the caller's (:mod:`search.study.references`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from search.compress.prune.step import prune_with_report

if TYPE_CHECKING:
    import torch
    from torch import nn

    from search.compress.prune.plan import PrunePlan

# Drops smaller than this are taken as this: below one accuracy point, a few hundred validation
# images cannot tell a drop from noise (binomial standard error 1.3 points at 85 % on 718).
DROP_FLOOR = 0.01
# Savings smaller than this are taken as none: a paired ratio's interval is about +-1-2 %.
SAVED_FLOOR = 0.01


def group_cutter(
    model: nn.Module,
    groups: Mapping[str, list[str]],
    *,
    example_input: torch.Tensor,
    ignored_layers: list[str] | None,
    round_to: int | None,
    plan: PrunePlan | None,
    importance: str = "l2",
    max_layer_ratio: float = 0.9,
) -> Callable[[str, float], nn.Module]:
    """``cut(group, ratio)``: a copy of ``model`` with only ``group`` pruned at ``ratio``
    (:func:`~search.compress.prune.step.prune_with_report`, the trials' settings)."""

    def cut(group: str, ratio: float) -> nn.Module:
        pruned, _ = prune_with_report(
            model,
            ratio=0.0,
            example_input=example_input,
            ignored_layers=ignored_layers,
            round_to=round_to,
            importance=importance,
            max_layer_ratio=max_layer_ratio,
            plan=plan,
            groups={group: list(groups[group])},
            group_ratios={group: ratio},
        )
        return pruned

    return cut


def prune_sensitivity_pass(
    model: nn.Module,
    *,
    groups: Mapping[str, list[str]],
    probe_ratio: float,
    cut: Callable[[str, float], nn.Module],
    recover: Callable[[nn.Module], nn.Module],
    evaluate: Callable[[nn.Module], float],
    latency: Callable[[nn.Module, str], float],
    base_metric: float,
) -> dict[str, Any]:
    """Each group cut alone at ``probe_ratio``, recovered, scored and timed; plain data.

    Args:
        model: The uncompressed model (not changed).
        groups: Group -> module patterns (the prunable groups).
        cut: ``cut(group, ratio)``: a copy of ``model`` with that group pruned
            (:func:`group_cutter`).
        recover: Returns the cut model after a short recovery (it may train it in place).
        evaluate: The validation metric of a model (higher is better).
        latency: ``latency(model, group)``: its latency relative to the uncompressed model's,
            measured paired on the target (1.0: no faster).
        base_metric: The uncompressed model's validation metric, as ``evaluate`` computes it.

    Returns:
        ``{"probe_ratio", "patterns", "base_metric", "seconds", "groups": {group: {"metric",
        "drop", "relative_latency", "saved", "params_removed"}}, "order"}``; ``order`` lists
        the groups from most to least sensitive (largest drop first).
    """
    from search.compress.prune.step import count_params

    start = time.perf_counter()
    base_params = count_params(model)
    out: dict[str, Any] = {}
    for group in groups:
        pruned = cut(group, probe_ratio)
        removed = base_params - count_params(pruned)
        pruned = recover(pruned)
        metric = evaluate(pruned)
        relative = latency(pruned, group)
        out[group] = {
            "metric": metric,
            "drop": base_metric - metric,
            "relative_latency": relative,
            "saved": 1.0 - relative,
            "params_removed": removed,
        }
    return {
        "probe_ratio": probe_ratio,
        "patterns": {g: list(p) for g, p in groups.items()},
        "base_metric": base_metric,
        "seconds": round(time.perf_counter() - start, 1),
        "groups": out,
        "order": sorted(out, key=lambda g: out[g]["drop"], reverse=True),
    }


def seed_scales(
    sensitivity: Mapping[str, Any], *, low: float, high: float, floor: float = DROP_FLOOR
) -> dict[str, float]:
    """Optuna params ``prune_scale_<group>``: each group's scale in proportion to the latency
    its cut saved per metric it lost, normalized to a ``saved``-weighted mean of 1, clipped to
    ``[low, high]``. A group whose cut saved less than :data:`SAVED_FLOOR` (or slowed the
    model) gets ``low``; where no group's did, there is nothing to allocate by and every scale
    is 1 (clipped).

    Example:
        >>> s = {"groups": {"a": {"saved": 0.2, "drop": 0.01}, "b": {"saved": 0.2, "drop": 0.04}}}
        >>> seed_scales(s, low=0.25, high=1.75)
        {'prune_scale_a': 1.6, 'prune_scale_b': 0.4}
    """
    groups = sensitivity["groups"]
    saved = {g: float(v["saved"]) if v["saved"] >= SAVED_FLOOR else 0.0 for g, v in groups.items()}
    if not any(saved.values()):
        return {f"prune_scale_{g}": min(max(1.0, low), high) for g in groups}
    efficiency = {g: saved[g] / max(float(v["drop"]), floor) for g, v in groups.items()}
    weight = sum(saved[g] * efficiency[g] for g in groups)
    total = sum(saved.values())
    out = {}
    for g in groups:
        raw = efficiency[g] * total / weight if weight > 0 else 1.0
        out[f"prune_scale_{g}"] = round(min(max(raw if saved[g] > 0 else low, low), high), 4)
    return out
