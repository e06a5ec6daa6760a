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

from search.errors import ConfigError
from search.schema import Bounds, FloatRange, Section

if TYPE_CHECKING:
    import optuna
    import torch
    from torch import nn

# torch and torch-pruning are imported inside the functions: config.py imports this module for
# PruneSpace, and loading a space must stay cheap and possible without torch.

_IMPORTANCE = {"l1": 1, "l2": 2}
# The share of channels removed: 1.0 would remove every channel.
PRUNE_RATIO = Bounds(0.0, 1.0, hi_open=True)


class PruneSpace(Section):
    """Structured pruning with torch-pruning: the share of channels removed, globally ranked."""

    ratio: FloatRange = FloatRange(low=0.0, high=0.7)
    importance: Literal["l1", "l2"] = "l2"
    max_layer_ratio: float = Field(0.9, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> PruneSpace:
        PRUNE_RATIO.check_range(self.ratio, "ratio")
        return self

    def sample(self, trial: optuna.Trial) -> PruneConfig:
        """This trial's pruning: Optuna parameter ``prune_ratio``."""
        return PruneConfig(
            ratio=self.ratio.suggest(trial, "prune_ratio"),
            importance=self.importance,
            max_layer_ratio=self.max_layer_ratio,
        )


@dataclass(frozen=True)
class PruneConfig:
    """What one trial prunes: ``ratio`` of the channels, ranked by L1 or L2 group magnitude,
    at most ``max_layer_ratio`` of any one layer."""

    ratio: float = 0.0
    importance: str = "l2"
    max_layer_ratio: float = 0.9

    def __post_init__(self) -> None:
        PRUNE_RATIO.check(self.ratio, "prune_ratio")
        if self.importance not in _IMPORTANCE:
            raise ConfigError(f"importance must be l1 or l2, but got {self.importance!r}")
        Bounds(0.0, 1.0, lo_open=True).check(self.max_layer_ratio, "max_layer_ratio")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
) -> tuple[nn.Module, PruneReport]:
    """The trial's step: :func:`prune_with_report` with the trial's :class:`PruneConfig`."""
    return prune_with_report(
        model,
        ratio=cfg.ratio,
        example_input=example_input,
        ignored_layers=ignored_layers,
        round_to=round_to,
        importance=cfg.importance,
        max_layer_ratio=cfg.max_layer_ratio,
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
) -> tuple[nn.Module, PruneReport]:
    """Return a pruned copy of ``model`` with about ``ratio`` of its channels removed, and a
    report of the layers left alone and why.

    Channels are ranked globally by group magnitude (L1 or L2 over every coupled layer).
    ``round_to`` keeps channel counts multiples of the target's preferred vector width:
    unaligned counts can run slower than the unpruned model. Residual adds, depthwise and
    grouped convs and squeeze-excitation gates are coupled by the dependency graph; attention
    layers keep their head count (head widths shrink evenly); parameters outside standard layers
    (position embeddings, class tokens) are pruned along their channel dimension.
    """
    import torch
    import torch_pruning as tp

    PRUNE_RATIO.check(ratio, "prune ratio")
    pruned = copy.deepcopy(model).eval()
    names = default_ignored(pruned, example_input) if ignored_layers is None else ignored_layers
    plan = plan_pruning(pruned, ignored_layers=names)
    if ratio == 0.0:
        return pruned, plan.report
    with torch.no_grad():
        expected = pruned(example_input).shape
    pruner = tp.pruner.MetaPruner(
        pruned,
        example_input,
        importance=tp.importance.GroupMagnitudeImportance(p=_IMPORTANCE[importance]),
        pruning_ratio=ratio,
        max_pruning_ratio=max_layer_ratio,
        global_pruning=True,
        ignored_layers=_modules(pruned, list(plan.report.left_alone)),
        round_to=round_to,
        num_heads=plan.num_heads,
        unwrapped_parameters=plan.unwrapped,
        # torch-pruning 1.6.1 declares these as mutable defaults and writes into them; fresh
        # dicts keep one trial's modules from leaking into (and staying alive in) the next.
        in_channel_groups={},
        out_channel_groups={},
    )
    pruner.step()
    with torch.no_grad():
        got = pruned.eval()(example_input).shape
    if got != expected:
        raise RuntimeError(
            f"pruning changed the output shape from {tuple(expected)} to {tuple(got)}; "
            "list the output layer in the task's ignored_layers"
        )
    return pruned, plan.report


@dataclass
class PruneReport:
    """What pruning did not touch: ``left_alone`` maps a module name to the reason."""

    left_alone: dict[str, str] = field(default_factory=dict)
    unwrapped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {"left_alone": dict(self.left_alone), "unwrapped_parameters": list(self.unwrapped)}


@dataclass
class _Plan:
    report: PruneReport
    num_heads: dict[nn.Module, int]
    unwrapped: list[tuple[nn.Parameter, int]]


# Linear layers that project queries, keys and values, by the names common implementations use.
_QKV_NAMES = ("qkv", "in_proj", "query", "key", "value", "q_proj", "k_proj", "v_proj")


def plan_pruning(model: nn.Module, *, ignored_layers: list[str]) -> _Plan:
    """Decide what torch-pruning must be told about ``model`` before it may cut channels."""
    import torch_pruning as tp
    from torch import nn

    report = PruneReport()
    _modules(model, ignored_layers)  # a clear error for a misspelt name
    for name in ignored_layers:
        report.left_alone[name] = "output layer: must keep its output size"
    num_heads: dict[nn.Module, int] = {}
    for name, m in model.named_modules():
        heads = getattr(m, "num_heads", None)
        if not isinstance(heads, int) or heads < 1:
            continue
        if isinstance(m, nn.MultiheadAttention):
            num_heads[m] = heads
            continue
        projections = [
            child
            for child_name, child in m.named_children()
            if child_name in _QKV_NAMES and isinstance(child, nn.Linear)
        ]
        if projections:
            num_heads.update(dict.fromkeys(projections, heads))
        elif name not in report.left_alone:
            # Cutting channels without knowing how they split into heads would mix heads.
            report.left_alone[name] = "attention layout not recognised: heads cannot be kept"
    unwrapped: list[tuple[nn.Parameter, int]] = []
    standard = set(tp.pruner.function.PrunerBox) - {tp.ops.OPTYPE.ELEMENTWISE}
    for mod_name, m in model.named_modules():
        if tp.ops.module2type(m) in standard:
            continue
        for p_name, p in m.named_parameters(recurse=False):
            dims = [i for i, s in enumerate(p.shape) if s > 1]
            if dims:
                # The channel dimension of an embedding-like parameter is its last one.
                unwrapped.append((p, dims[-1]))
                report.unwrapped.append(f"{mod_name}.{p_name}" if mod_name else p_name)
    return _Plan(report=report, num_heads=num_heads, unwrapped=unwrapped)


def _last_executed(model: nn.Module, example_input: torch.Tensor) -> list[str]:
    import torch
    from torch import nn

    order: list[str] = []
    names = {m: n for n, m in model.named_modules()}
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(names[mod]))
        for m in model.modules()
        if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d)
    ]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example_input)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return order[-1:]
