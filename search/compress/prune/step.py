"""Structured pruning with torch-pruning's dependency graph: channels are really removed.

Coupled layers (a residual add, the BatchNorm after a conv) are pruned together, so the pruned
model is a smaller dense model and the exported ONNX graph shrinks with it. The step declares its
own space section (:class:`PruneSpace`) and the part of a trial's config it runs from
(:class:`PruneConfig`).

Example:
    >>> import torch
    >>> from search.tasks.models import ResNet
    >>> model = ResNet(num_classes=10, widths=(16, 32, 64))
    >>> small = prune(model, ratio=0.5, example_input=torch.zeros(1, 1, 32, 32),
    ...               ignored_layers=["fc"], round_to=8)
    >>> count_params(small) < count_params(model)
    True
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from search.compress.forward import observe
from search.compress.prune.importance import IMPORTANCES, channel_importance
from search.core.schema import Bounds, FloatRange, Section, choose
from search.errors import ConfigError

if TYPE_CHECKING:
    import optuna
    import torch
    from torch import nn

    from search.compress.prune.plan import PrunePlan

# torch and torch-pruning are imported inside the functions: config.py imports this module for
# PruneSpace, and loading a space must stay cheap and possible without torch.


# The share of channels removed: 1.0 would remove every channel.
PRUNE_RATIO = Bounds(0.0, 1.0, hi_open=True)


class PruneSpace(Section):
    """Structured pruning with torch-pruning: the share of channels removed, globally ranked,
    or per group of layers (:mod:`search.compress.prune.groups`).

    ``groups``: ``{}`` prunes with one global ratio; a mapping names groups by module patterns;
    ``quantize`` takes the study's precision groups (resolved against the model before the
    study, :func:`resolve_groups`). Each group that owns prunable layers gets a searched
    ``prune_scale_<group>`` in ``scale``; ``sensitivity`` runs the one-off per-group pruning
    sensitivity pass (:mod:`search.compress.prune.sensitivity`) that seeds the warm start's
    scales, cutting each group alone at ``probe_ratio``. ``importance`` lists the channel
    rankings searched (:data:`IMPORTANCES`; one name fixes it; Optuna parameter
    ``prune_importance`` where there are several).
    """

    ratio: FloatRange = FloatRange(low=0.0, high=0.7)
    importance: list[Literal["l1", "l2", "lamp"]] = Field(["l2"], min_length=1)
    max_layer_ratio: float = Field(0.9, gt=0.0, le=1.0)
    groups: dict[str, list[str]] | Literal["quantize"] = {}
    scale: FloatRange = FloatRange(low=0.25, high=1.75)
    sensitivity: bool = True
    probe_ratio: float = Field(0.5, gt=0.0, lt=1.0)
    CHOICES = ("importance",)  # ``importance: l2`` fixes the choice

    @model_validator(mode="after")
    def _check(self) -> PruneSpace:
        PRUNE_RATIO.check_range(self.ratio, "ratio")
        if len(set(self.importance)) != len(self.importance):
            raise ValueError(f"importance lists a choice twice: {self.importance}")
        Bounds(0.0, 10.0, lo_open=True).check_range(self.scale, "scale")
        if isinstance(self.groups, dict):
            empty = [g for g, pats in self.groups.items() if not pats]
            if empty:
                raise ValueError(f"prune.groups: group {empty[0]!r} lists no module pattern")
        return self

    @property
    def max_ratio(self) -> float:
        """The largest share of a layer's channels a trial of this space can cut."""
        if not self.groups:
            return self.ratio.high
        return max(self.ratio.high, min(self.ratio.high * self.scale.high, self.max_layer_ratio))

    @property
    def group_names(self) -> list[str]:
        """The groups with a scale of their own (none while ``groups`` is unresolved)."""
        return list(self.groups) if isinstance(self.groups, dict) else []

    def resolved(self, groups: dict[str, list[str]]) -> PruneSpace:
        """This section with ``groups: quantize`` replaced by ``groups`` (the prunable ones of
        the study's precision groups); a section that names its own groups is unchanged."""
        if self.groups != "quantize":
            return self
        return self.model_copy(update={"groups": dict(groups)})

    @property
    def hand_importance(self) -> str:
        """The importance a hand-built pipeline prunes by: L2 group magnitude (torch-pruning's
        ``GroupMagnitudeImportance(p=2)``, its examples' default) where the space allows it."""
        return "l2" if "l2" in self.importance else self.importance[0]

    def hand_pipeline(self) -> dict[str, Any]:
        """The hand-built pipeline's parameters: every group pruned at the global ratio (scale
        1.0), ranked by :attr:`hand_importance`."""
        if not 0 < self.ratio.high:
            return {}
        out: dict[str, Any] = {}
        if len(self.importance) > 1:
            out["prune_importance"] = self.hand_importance
        if self.scale.low != self.scale.high:
            one = min(max(1.0, self.scale.low), self.scale.high)
            out.update({f"prune_scale_{g}": one for g in self.group_names})
        return out

    def sample(self, trial: optuna.Trial) -> PruneConfig:
        """This trial's pruning: Optuna parameters ``prune_ratio`` and ``prune_scale_<group>``.

        Raises:
            ConfigError: ``groups: quantize`` was not resolved against the model first.
        """
        if self.groups == "quantize":
            raise ConfigError(
                "prune.groups 'quantize' is resolved against the model before sampling "
                "(search.study.model_checks.check_model)"
            )
        return PruneConfig(
            ratio=self.ratio.suggest(trial, "prune_ratio"),
            importance=choose(trial, "prune_importance", self.importance),
            max_layer_ratio=self.max_layer_ratio,
            scales={g: self.scale.suggest(trial, f"prune_scale_{g}") for g in self.group_names},
        )


@dataclass(frozen=True)
class PruneConfig:
    """What one trial prunes: ``ratio`` of the channels, ranked by ``importance`` (one of
    :data:`~search.compress.prune.importance.IMPORTANCES`), at most ``max_layer_ratio`` of any
    one layer; with ``scales``, group ``g`` loses ``min(ratio * scales[g], max_layer_ratio)`` of
    its channels, ranked within the group."""

    ratio: float = 0.0
    importance: str = "l2"
    max_layer_ratio: float = 0.9
    scales: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        PRUNE_RATIO.check(self.ratio, "prune_ratio")
        if self.importance not in IMPORTANCES:
            raise ConfigError(
                f"importance must be one of {', '.join(IMPORTANCES)}, but got {self.importance!r}"
            )
        Bounds(0.0, 1.0, lo_open=True).check(self.max_layer_ratio, "max_layer_ratio")
        for g, v in self.scales.items():
            Bounds(0.0, 10.0, lo_open=True).check(v, f"prune_scale_{g}")

    @property
    def group_ratios(self) -> dict[str, float]:
        """Each group's share of channels removed."""
        from search.compress.prune.groups import group_ratios

        return group_ratios(self.ratio, self.scales, max_layer_ratio=self.max_layer_ratio)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def active(self) -> dict[str, Any]:
        """The Optuna parameters this part stands for: ``prune_ratio``, and the importance and
        the groups' scales where something was pruned (at ratio 0 they change nothing)."""
        if not self.ratio:
            return {"prune_ratio": self.ratio}
        scales = {f"prune_scale_{g}": s for g, s in self.scales.items()}
        return {"prune_ratio": self.ratio, "prune_importance": self.importance, **scales}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, example_input: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass at ``example_input``'s shape (torch-pruning)."""
    import torch_pruning as tp

    was_training = model.training
    macs, _ = tp.utils.count_ops_and_params(model.eval(), example_input)
    model.train(was_training)
    return int(macs)


def _modules(model: nn.Module, names: list[str]) -> list[nn.Module]:
    found = dict(model.named_modules())
    missing = [n for n in names if n not in found]
    if missing:
        raise ConfigError(
            f"ignored layer(s) {', '.join(missing)} not found in the model; "
            f"module names look like {', '.join(list(found)[1:4])}"
        )
    return [found[n] for n in names]


def default_ignored(model: nn.Module, example_input: torch.Tensor | None = None) -> list[str]:
    """The output layer: a classifier head must keep its output size.

    With ``example_input`` it is the last Conv or Linear layer that runs in the forward pass
    (a 1x1 conv head counts too); without, the last Linear layer registered.
    """
    from torch import nn

    if example_input is None:
        last = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
        return last[-1:]
    return _last_executed(model, example_input)


def ignored_names(
    model: nn.Module, example_input: torch.Tensor, ignored_layers: list[str] | None
) -> list[str]:
    """The layers that keep their output size: ``ignored_layers``, or the output layer when
    None (:func:`default_ignored`).

    Raises:
        ConfigError: a name that is no module of ``model`` (one line, with examples).
    """
    names = default_ignored(model, example_input) if ignored_layers is None else ignored_layers
    _modules(model, names)
    return names


def prune(model: nn.Module, **options: Any) -> nn.Module:
    """Return a pruned copy of ``model``; options and details as :func:`prune_with_report`."""
    return prune_with_report(model, **options)[0]


def prune_step(
    model: nn.Module,
    cfg: PruneConfig,
    *,
    example_input: torch.Tensor,
    ignored_layers: list[str] | None,
    round_to: int | None,
    plan: PrunePlan | None = None,
    groups: dict[str, list[str]] | None = None,
) -> tuple[nn.Module, PruneReport]:
    """The trial's step: :func:`prune_with_report` with the trial's :class:`PruneConfig`, the
    space's ``groups`` (patterns) and the study's dry-run ``plan``."""
    return prune_with_report(
        model,
        ratio=cfg.ratio,
        example_input=example_input,
        ignored_layers=ignored_layers,
        round_to=round_to,
        importance=cfg.importance,
        max_layer_ratio=cfg.max_layer_ratio,
        plan=plan,
        groups={g: (groups or {})[g] for g in cfg.scales} if cfg.scales else None,
        group_ratios=cfg.group_ratios or None,
    )


def prune_with_report(
    model: nn.Module,
    *,
    ratio: float,
    example_input: torch.Tensor,
    ignored_layers: list[str] | None = None,
    round_to: int | None = 8,
    importance: str = "l2",
    max_layer_ratio: float = 0.9,
    plan: PrunePlan | None = None,
    groups: dict[str, list[str]] | None = None,
    group_ratios: dict[str, float] | None = None,
) -> tuple[nn.Module, PruneReport]:
    """Return a pruned copy of ``model`` with about ``ratio`` of its channels removed, and a
    report of the layers left alone and why. With ``groups`` (name -> module patterns) and
    ``group_ratios``, each group loses its own share, ranked within it, and ``ratio`` applies
    outside every group (:mod:`search.compress.prune.groups`).

    Channels are ranked globally by ``importance`` (:func:`channel_importance`: L1 or L2 group
    magnitude over every coupled layer, or LAMP);
    ``round_to`` keeps channel counts multiples of the target's vector width. The dependency
    graph couples residual adds, concats, splits, grouped convs, gates, attention heads and
    LSTMs (:mod:`search.compress.prune.plan`); what it cannot cut is left alone, with why.
    ``plan`` is the study's dry run (:func:`~search.compress.prune.plan.plan_pruning`; made
    here when None); one with an ``error`` (nothing can be pruned) returns an unchanged copy.

    Raises:
        ConfigError: ``ratio`` outside [0, 1), or an ignored layer that does not exist.
        PruneError: a cut failed although the plan allowed it (names the layers).
    """
    from search.compress.prune import plan as pp

    names = ignored_names(model, example_input, ignored_layers)
    scopes = _scopes(model, ratio, groups, group_ratios)
    most = max([ratio, *scopes.values()])
    if plan is None and most > 0.0:
        plan = pp.plan_pruning(model, example_input, ignored_layers=names, ratio=most)
    alone = {**dict.fromkeys(names, pp.OUTPUT_LAYER), **(plan.left_alone if plan else {})}
    unwrapped = [name for name, _, _ in pp.unwrapped_parameters(model)]
    report = PruneReport(alone, unwrapped, list(plan.rewrites) if plan else [])
    if plan is None or most == 0.0 or plan.error:
        return copy.deepcopy(model).eval(), report
    expected = _output_shape(model, example_input)
    pruned = pp.prune_with_plan(
        model,
        example_input,
        ratio=ratio,
        plan=pp.PrunePlan(left_alone=report.left_alone),
        importance=channel_importance(importance),
        max_pruning_ratio=max_layer_ratio,
        round_to=round_to,
        **({"scopes": scopes} if scopes else {}),
    )
    if (got := _output_shape(pruned, example_input)) != expected:
        why = "list the output layer in the task's ignored_layers"
        raise RuntimeError(f"pruning changed the output shape from {expected} to {got}; {why}")
    return pruned, report


def _scopes(
    model: nn.Module,
    ratio: float,
    groups: dict[str, list[str]] | None,
    group_ratios: dict[str, float] | None,
) -> dict[tuple[str, ...], float]:
    """The checked ratios; each group's as a ranking scope of module names
    (:func:`~search.compress.prune.groups.ratio_scopes`).

    Raises:
        ConfigError: a ratio outside [0, 1).
    """
    from search.compress.prune.groups import ratio_scopes

    PRUNE_RATIO.check(ratio, "prune ratio")
    for g, r in (group_ratios or {}).items():
        PRUNE_RATIO.check(r, f"prune ratio of group {g}")
    return ratio_scopes(model, groups or {}, group_ratios or {})


def _output_shape(model: nn.Module, example_input: torch.Tensor) -> list[tuple[int, ...]]:
    from search.compress.prune.plan import output_shapes

    return output_shapes(model, example_input)


@dataclass
class PruneReport:
    """What pruning did not touch: ``left_alone`` maps a module name to the reason (naming the
    op that forced it); ``unwrapped`` names parameters outside standard layers; ``rewrites``
    the blocks replaced by exact equivalents the library can cut (a C2f as SplitC2f)."""

    left_alone: dict[str, str] = field(default_factory=dict)
    unwrapped: list[str] = field(default_factory=list)
    rewrites: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "left_alone": dict(self.left_alone),
            "unwrapped_parameters": list(self.unwrapped),
        }
        if self.rewrites:
            out["rewrites"] = list(self.rewrites)
        return out


def _last_executed(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    from torch import nn

    order: list[str] = []
    observe(
        model,
        example_input,
        lambda name, _m, _i, _o: order.append(name),
        select=lambda _n, m: isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d),
    )
    return order[-1:]
