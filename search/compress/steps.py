"""The step registry: the one list of compression steps the search knows.

Each :class:`Step` names its space section (the YAML key, the :class:`~search.config.TrialConfig`
part and the record key are all ``Step.name``), its section and config types, where in the
trial it acts, the order its Optuna parameters are suggested in, what the distilled student
depends on, the hand-built pipeline's settings (the warm start) and the parameters that acted
in a trial (the report's columns). :class:`~search.config.Space`,
:class:`~search.config.TrialConfig`, the student digest (:mod:`search.trial.students`), the warm
start (:mod:`search.study.warm_start`) and the report's parameter columns all derive from
:data:`STEPS`.

Adding a step is its module, one entry here and its test. A step that acts on the torch model
(``kind="model"``, applied in pipeline order between pruning and distillation, like low-rank)
or trains it (``"train"``) changes the distilled student, so it must declare
``student_inputs``; registering one without is a :class:`RegistryError`, not a silently shared
cached student.

Example:
    >>> [s.name for s in STEPS]
    ['prune', 'lowrank', 'distill', 'quantize']
    >>> [s.name for s in sampling_order()]
    ['quantize', 'prune', 'distill', 'lowrank']
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from search.compress import distill, lowrank
from search.compress.prune import step as prune
from search.compress.quantize import qdq
from search.core.schema import Strict

if TYPE_CHECKING:
    import optuna
    import torch
    from torch import nn

    from search.compress.prune.plan import PrunePlan
    from search.compress.quantize.qdq import PrecisionSupport

JSON = dict[str, Any]
Kind = Literal["model", "train", "onnx"]


class RegistryError(TypeError):
    """A step entry that the search could not use correctly (a programming error)."""


class StepConfig(Protocol):
    """A step's part of a trial config: frozen, JSON-ready, and says which parameters acted."""

    def to_dict(self) -> JSON: ...

    def active(self) -> JSON: ...


@dataclass(frozen=True)
class SampleEnv:
    """What sampling may depend on besides the trial: the profile's precision support (None:
    everything) and the study's sensitivity order (most sensitive group first)."""

    support: PrecisionSupport | None = None
    order: list[str] | None = None


@dataclass(frozen=True)
class ModelEnv:
    """What a model step may use: the example input (shape ``[1, ...]``), the profile's
    ``round_to``, the layers the task keeps whole and the study's pruning dry run."""

    example_input: torch.Tensor
    round_to: int | None = None
    ignored_layers: list[str] = field(default_factory=list)
    prune_plan: PrunePlan | None = None


ModelApply = Callable[[Any, Any, Any, ModelEnv], "tuple[nn.Module, JSON]"]


@dataclass(frozen=True)
class Step:
    """One compression step as the search knows it.

    Attributes:
        name: Its YAML section, config part and record key.
        space: Its space section (a strict pydantic model with defaults).
        config: Its config part type (``config()`` is the part of a trial that skips it).
        kind: ``model`` (transforms the torch model before distillation), ``train`` (the
            distillation) or ``onnx`` (acts on the exported file).
        sample: ``sample(section, trial, env)`` -> its config part; the only place its
            Optuna parameters are suggested.
        sample_rank: Position in the suggestion order (kept stable so seeded samplers replay
            earlier studies).
        student_inputs: For ``model``/``train`` steps, ``student_inputs(section)``: the settings
            of its space section that change the distilled student beyond its config part
            (``{}`` when only the part does); None for steps after distillation.
        apply: For ``model`` steps, ``apply(model, part, section, env)`` -> the new model and a
            JSON record of what it did.
        hand_pipeline: ``hand_pipeline(section, choices)`` -> the Optuna params an engineer's
            hand-built pipeline fixes for this step (the warm start); ``choices`` are the
            quantization choices the profile leaves.
    """

    name: str
    space: type[Strict]
    config: Callable[..., Any]
    kind: Kind
    sample: Callable[[Any, optuna.Trial, SampleEnv], Any]
    sample_rank: int
    student_inputs: Callable[[Any], JSON] | None
    apply: ModelApply | None = None
    hand_pipeline: Callable[[Any, Mapping[str, list[str]] | None], JSON] | None = None

    def __post_init__(self) -> None:
        if self.kind in ("model", "train") and self.student_inputs is None:
            raise RegistryError(
                f"step {self.name!r} changes the model before the student is cached "
                f"(kind={self.kind!r}) but declares no student_inputs: trials would share the "
                "wrong cached student; pass student_inputs=lambda section: {} when only its "
                "config part matters"
            )
        if self.kind == "model" and self.apply is None:
            raise RegistryError(f"model step {self.name!r} needs apply(model, part, ...)")


def _prune(
    model: nn.Module, part: prune.PruneConfig, section: prune.PruneSpace, env: ModelEnv
) -> tuple[nn.Module, JSON]:
    student, report = prune.prune_step(
        model,
        part,
        example_input=env.example_input,
        ignored_layers=env.ignored_layers or None,
        round_to=env.round_to,
        plan=env.prune_plan,
        groups=section.groups if isinstance(section.groups, dict) else None,
    )
    return student, {**report.to_dict(), "group_ratios": part.group_ratios}


def _lowrank(
    model: nn.Module, part: lowrank.LowRankConfig, section: lowrank.LowRankSpace, env: ModelEnv
) -> tuple[nn.Module, JSON]:
    # After pruning (it needs the unfactorized graph), before distillation (which repairs what
    # the truncation lost).
    student, layers = lowrank.lowrank_step(
        model, part, space=section, example_input=env.example_input, round_to=env.round_to
    )
    return student, {"layers": [r.to_dict() for r in layers]}


STEPS: tuple[Step, ...] = (
    Step(
        name="prune",
        space=prune.PruneSpace,
        config=prune.PruneConfig,
        kind="model",
        sample=lambda s, trial, env: s.sample(trial),
        sample_rank=1,
        # Which layers a group's scale prunes is in the space (its patterns), not the config.
        student_inputs=lambda s: {"groups": s.groups} if s.groups else {},
        apply=_prune,
        hand_pipeline=lambda s, choices: s.hand_pipeline(),
    ),
    Step(
        name="lowrank",
        space=lowrank.LowRankSpace,
        config=lowrank.LowRankConfig,
        kind="model",
        sample=lambda s, trial, env: s.sample(trial),
        sample_rank=3,
        # Which layers are factorized (patterns, groups) is in the space, not the config.
        student_inputs=lambda s: s.model_dump(mode="json"),
        apply=_lowrank,
        hand_pipeline=lambda s, choices: s.hand_pipeline(),
    ),
    Step(
        name="distill",
        space=distill.DistillSpace,
        config=distill.DistillConfig,
        kind="train",
        sample=lambda s, trial, env: s.sample(trial),
        sample_rank=2,
        student_inputs=lambda s: {},
        hand_pipeline=lambda s, choices: s.hand_pipeline(),
    ),
    Step(
        name="quantize",
        space=qdq.QuantizeSpace,
        config=qdq.QuantizeConfig,
        kind="onnx",
        sample=lambda s, trial, env: s.sample(trial, env.support, order=env.order),
        sample_rank=0,
        student_inputs=None,
        hand_pipeline=lambda s, choices: s.hand_pipeline(choices),
    ),
)


def step(name: str, steps: tuple[Step, ...] | None = None) -> Step:
    """The registered step ``name``.

    Raises:
        KeyError: no step has that name.
    """
    for s in steps or STEPS:
        if s.name == name:
            return s
    raise KeyError(f"no compression step {name!r}; steps: {[s.name for s in steps or STEPS]}")


def sampling_order(steps: tuple[Step, ...] | None = None) -> list[Step]:
    """The steps in the order their parameters are suggested."""
    return sorted(steps or STEPS, key=lambda s: s.sample_rank)


def model_steps(steps: tuple[Step, ...] | None = None) -> list[Step]:
    """The steps that transform the torch model before distillation, in pipeline order."""
    return [s for s in steps or STEPS if s.kind == "model"]


def student_steps(steps: tuple[Step, ...] | None = None) -> list[Step]:
    """The steps whose part (and declared space settings) the distilled student depends on."""
    return [s for s in steps or STEPS if s.student_inputs is not None]
