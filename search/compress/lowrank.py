"""Low-rank factorization by truncated SVD: one layer becomes two cheaper ones.

* ``nn.Linear(n, m)`` -> ``Linear(n, r)`` then ``Linear(r, m)``.
* ``nn.Conv1d/2d/3d``, **channel** SVD: a k-wide conv with ``r`` filters, then a 1-wide conv.
* ``nn.Conv2d`` k x k, **spatial** SVD (Jaderberg et al., as in AIMET): a k x 1 conv with ``r``
  filters, then a 1 x k conv. A 1x1 conv, a Conv1d and a Conv3d always get channel SVD.

The rank of a layer is ``rank_ratio`` times its full rank. The factorized MACs are linear in the
rank, so each layer has a break-even rank at which both forms cost the same; a layer is factorized
only below it. Grouped and depthwise convs are left alone. This module decides which layers and
at which rank; :mod:`search.compress.svd` builds each pair. The new pair is a plain
``nn.Sequential`` of ``nn.Conv2d``/``nn.Linear``: torch-pruning's op counter, the dynamo ONNX
exporter and ``torch.save`` all see ordinary layers, and weight names stay readable
(``layers.0.conv1.0.weight``, ``layers.0.conv1.1.weight``).

The step declares its own space section (:class:`LowRankSpace`) and the part of a trial's config
it runs from (:class:`LowRankConfig`).

Example:
    >>> import torch
    >>> from search.tasks.models import ResNet
    >>> model = ResNet(num_classes=10, widths=(8, 16, 16))
    >>> small, records = factorize(model, example_input=torch.zeros(1, 1, 32, 32),
    ...                            rank_ratio=0.25, kind="channel")
    >>> sum(r.macs_after for r in records) < sum(r.macs_before for r in records)
    True
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from pydantic import Field, model_validator

from search.compress.forward import observe
from search.core.schema import Bounds, FloatRange, Section, choose
from search.errors import ConfigError

if TYPE_CHECKING:
    import optuna
    import torch
    from torch import nn

    from search.compress import svd

# torch (and svd.py, which needs it) is imported inside the functions: config.py imports this
# module for LowRankSpace, and loading a space must stay cheap and possible without torch.

Kind = Literal["channel", "spatial"]
# The share of a layer's full rank that is kept: rank 0 would keep nothing.
RANK_RATIO = Bounds(0.0, 1.0, lo_open=True)


class LowRankGroup(Section):
    """Layers (glob patterns of module names) that share their own searched rank ratio."""

    layers: list[str] = Field(min_length=1)
    rank_ratio: FloatRange

    @model_validator(mode="after")
    def _check(self) -> LowRankGroup:
        RANK_RATIO.check_range(self.rank_ratio, "rank_ratio")
        return self


class LowRankSpace(Section):
    """SVD factorization after pruning: whether, which kind, and how much rank is kept.

    ``apply`` lists the choices the search compares (``[true, false]``: with and without);
    ``rank_ratio`` applies to every layer matched by ``layers`` that no group claims; each entry
    of ``groups`` gets its own searched ratio (parameter ``lowrank_ratio_<group>``).
    """

    apply: list[bool] = Field([True, False], min_length=1)
    kind: list[Kind] = Field(["channel", "spatial"], min_length=1)
    rank_ratio: FloatRange = FloatRange(low=0.1, high=0.9)
    layers: list[str] = ["*"]
    groups: dict[str, LowRankGroup] = {}
    CHOICES = ("apply", "kind")  # ``apply: true`` or ``kind: channel`` fixes the choice

    @model_validator(mode="after")
    def _check(self) -> LowRankSpace:
        RANK_RATIO.check_range(self.rank_ratio, "rank_ratio")
        for name, values in (("apply", self.apply), ("kind", self.kind)):
            if len(set(values)) != len(values):
                raise ValueError(f"{name} lists a choice twice: {values}")
        return self

    def hand_pipeline(self) -> dict[str, Any]:
        """The warm start's low-rank parameters: off, where the space searches on and off (the
        hand-built pipeline prunes, distills and quantizes; it does not factorize)."""
        return {"lowrank": False} if len(self.apply) > 1 and False in self.apply else {}

    def sample(self, trial: optuna.Trial) -> LowRankConfig:
        """This trial's factorization: Optuna parameters ``lowrank``, ``lowrank_kind``,
        ``lowrank_ratio`` and ``lowrank_ratio_<group>`` (a single choice is no parameter).

        Every parameter is suggested even when not applied: a fixed set of parameters keeps
        multivariate TPE modelling them jointly. A space that never applies low-rank
        (``apply: [false]``) suggests none: they would be dimensions that change nothing.
        """
        if self.apply == [False]:
            return LowRankConfig(apply=False)
        return LowRankConfig(
            apply=choose(trial, "lowrank", self.apply),
            kind=choose(trial, "lowrank_kind", self.kind),
            rank_ratio=self.rank_ratio.suggest(trial, "lowrank_ratio"),
            group_ratios={
                name: g.rank_ratio.suggest(trial, f"lowrank_ratio_{name}")
                for name, g in self.groups.items()
            },
        )


@dataclass(frozen=True)
class LowRankConfig:
    """Whether one trial factorizes, which SVD kind, and the rank ratios (overall, per group)."""

    apply: bool = False
    kind: str = "channel"
    rank_ratio: float = 1.0
    group_ratios: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        RANK_RATIO.check(self.rank_ratio, "lowrank_ratio")
        for name, r in self.group_ratios.items():
            RANK_RATIO.check(r, f"lowrank_ratio_{name}")
        if self.kind not in get_args(Kind):
            raise ConfigError(
                f"lowrank_kind must be 'channel' or 'spatial', but got {self.kind!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def active(self) -> dict[str, Any]:
        """The Optuna parameters that acted: ``lowrank``, and its kind and ratios only when
        it was applied (off, they changed nothing)."""
        if not self.apply:
            return {"lowrank": False}
        ratios = {f"lowrank_ratio_{g}": r for g, r in self.group_ratios.items()}
        return {"lowrank": True, "lowrank_kind": self.kind, "lowrank_ratio": self.rank_ratio,
                **ratios}  # fmt: skip


@dataclass(frozen=True)
class LayerRecord:
    """What factorization did (or why it did not) to one Linear or Conv2d layer.

    MACs are for one forward pass at the example input's shape, without bias terms (they do not
    change). ``break_even_rank`` is the smallest rank at which the pair costs at least as much
    as the original; ``skipped`` is empty for a factorized layer, otherwise the reason.
    """

    name: str
    layer: str
    kind: str
    rank: int
    full_rank: int
    break_even_rank: int
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    skipped: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------ a whole model


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _layer_shapes(model: nn.Module, names: list[str], x: torch.Tensor) -> dict[str, list]:
    shapes: dict[str, list] = {n: [] for n in names}

    def hook(name: str, _m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        shapes[name].append((tuple(args[0].shape), tuple(out.shape)))

    observe(model, x, hook, select=lambda name, _m: name in shapes)
    return shapes


def factorize(
    model: nn.Module,
    *,
    example_input: torch.Tensor,
    rank_ratio: float,
    kind: Kind = "channel",
    layers: Sequence[str] = ("*",),
    groups: Sequence[tuple[Sequence[str], float]] = (),
    round_to: int | None = None,
) -> tuple[nn.Module, list[LayerRecord]]:
    """Return a factorized copy of ``model`` and one :class:`LayerRecord` per Linear/ConvNd
    (transposed convs, attention, recurrent and embedding layers the patterns select get a
    record that says why they are not factorized).

    Args:
        model: Left unchanged.
        example_input: Fixes the spatial sizes that MACs depend on.
        rank_ratio: Share of each layer's full rank kept, in (0, 1].
        kind: ``channel`` or ``spatial`` SVD for k x k convs (Linear and 1x1 are unaffected).
        layers: Glob patterns of module names to consider (``layers.*``, ``*conv2``).
        groups: ``(patterns, ratio)`` pairs tried first; the first match sets a layer's ratio.
        round_to: Round ranks to a multiple of this (the target's preferred channel multiple).
    """
    from torch import nn

    RANK_RATIO.check(rank_ratio, "rank_ratio")
    out = copy.deepcopy(model)
    kinds = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    candidates = [name for name, m in out.named_modules() if type(m) in kinds and name]
    shapes = _layer_shapes(out, candidates, example_input)
    records: list[LayerRecord] = []
    for name in candidates:
        layer = cast("svd.Layer", out.get_submodule(name))  # a candidate: Linear or ConvNd
        ratio = next((r for pats, r in groups if _matches(name, pats)), None)
        if ratio is None and _matches(name, layers):
            ratio = rank_ratio
        record, new = _plan(name, layer, kind, ratio, shapes[name], round_to)
        records.append(record)
        if new is not None:
            parent, _, child = name.rpartition(".")
            setattr(out.get_submodule(parent), child, new)
    return out, records + _not_candidates(model, layers)


def _skip_reason(layer: nn.Module) -> str:
    """Why a weighted layer that is not a Linear or a plain ConvNd is never factorized."""
    from torch import nn

    kind = type(layer).__name__
    if isinstance(layer, nn.modules.conv._ConvTransposeNd):
        return f"{kind}: transposed convs are not factorized"
    if isinstance(layer, nn.MultiheadAttention):
        return f"{kind}: q/k/v share one packed in_proj weight (not factorized)"
    if isinstance(layer, nn.RNNBase):
        return f"{kind}: recurrent weights are not factorized"
    if isinstance(layer, nn.Embedding | nn.EmbeddingBag):
        return f"{kind}: a lookup table, not a product"
    return ""


def _not_candidates(model: nn.Module, layers: Sequence[str]) -> list[LayerRecord]:
    """Records of the weighted layers of other types that the patterns select, with why."""
    out = []
    for name, m in model.named_modules():
        reason = _skip_reason(m) if name and _matches(name, layers) else ""
        if reason:
            n = sum(p.numel() for p in m.parameters())
            zeros = dict.fromkeys(("rank", "full_rank", "break_even_rank"), 0)
            macs = {"macs_before": 0, "macs_after": 0, "params_before": n, "params_after": n}
            record = LayerRecord(name, type(m).__name__, "", **zeros, **macs, skipped=reason)
            out.append(record)
    return out


def _plan(
    name: str,
    layer: svd.Layer,
    kind: str,
    ratio: float | None,
    shapes: list,
    round_to: int | None,
) -> tuple[LayerRecord, nn.Module | None]:
    """Decide one layer: factorize it below its break-even rank, else say why not."""
    from torch import nn

    from search.compress import svd

    layer_kind = svd.layer_kind(layer, kind)
    full = svd.full_rank(layer, layer_kind)
    before, per_rank = svd.rank_cost(layer, layer_kind, shapes) if shapes else (0, 0)
    params = svd.params(layer)
    base = {
        "rank": full,
        "full_rank": full,
        "break_even_rank": -(-before // per_rank) if per_rank else 0,
        "macs_before": before,
        "macs_after": before,
        "params_before": params,
        "params_after": params,
    }

    def record(skipped: str = "") -> LayerRecord:
        return LayerRecord(name, type(layer).__name__, layer_kind, **base, skipped=skipped)

    reason = ""
    if ratio is None:
        reason = "not selected by the layers patterns"
    elif getattr(layer, "groups", 1) != 1:
        reason = f"grouped or depthwise conv (groups={layer.groups})"
    elif not shapes:
        reason = "not run by the example input"
    elif layer_kind == "spatial":  # a Conv2d (svd.layer_kind)
        reason = _spatial_unsupported(cast(nn.Conv2d, layer))
    if reason or ratio is None:  # no ratio always has its reason
        return record(reason), None
    rank = svd.rank_for(ratio, full, round_to)
    base["rank"] = rank
    if rank >= base["break_even_rank"]:
        why = f"rank {rank} >= break-even rank {base['break_even_rank']}: would not save MACs"
        return record(why), None
    new = (
        svd.factorize_linear(layer, rank)
        if isinstance(layer, nn.Linear)  # the layer kind "linear"
        else svd.factorize_conv(layer, rank, layer_kind)
    )
    base.update(macs_after=rank * per_rank, params_after=svd.params(new))
    return record(), new


def _spatial_unsupported(layer: nn.Conv2d) -> str:
    from search.compress import svd

    try:
        svd.zero_padding(layer)
    except ValueError as e:
        return str(e)
    return ""


def lowrank_step(
    model: nn.Module,
    cfg: LowRankConfig,
    *,
    space: LowRankSpace,
    example_input: torch.Tensor,
    round_to: int | None,
) -> tuple[nn.Module, list[LayerRecord]]:
    """The trial's step: :func:`factorize` with the space's patterns and the trial's ratios
    (``cfg.group_ratios`` by the space's group names), or nothing when not applied."""
    if not cfg.apply:
        return model, []
    groups = [(g.layers, cfg.group_ratios[name]) for name, g in space.groups.items()]
    return factorize(
        model,
        example_input=example_input,
        rank_ratio=cfg.rank_ratio,
        kind=cfg.kind,  # type: ignore[arg-type]
        layers=space.layers,
        groups=groups,
        round_to=round_to,
    )
