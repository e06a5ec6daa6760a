"""Search spaces (``spaces/*.yaml``) and hardware profiles (``hw_profiles/*.yaml``).

Both are loaded into frozen, validated objects. Unknown keys, wrong types and out-of-range values
are :class:`ConfigError` s whose one-line message names the file, the key and what is allowed.

Example:
    >>> space = load_space("default")
    >>> 0.0 <= space.prune.ratio.low < 1.0
    True
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, ValidationError, create_model, model_validator

from search.compress import steps as registry
from search.compress.quantize.qdq import PrecisionSupport
from search.compress.steps import SampleEnv, Step, StepConfig, sampling_order
from search.core.schema import Strict
from search.core.yaml_input import format_validation_error, read_yaml
from search.errors import ConfigError
from search.measure.spec import MeasureSettings, MeasureSpec, ProviderSpec, Threads

if TYPE_CHECKING:
    import optuna

    from search.compress.distill import DistillConfig, DistillSpace
    from search.compress.lowrank import LowRankConfig, LowRankSpace
    from search.compress.prune.step import PruneConfig, PruneSpace
    from search.compress.quantize.qdq import QuantizeConfig, QuantizeSpace

ROOT = Path(__file__).resolve().parent.parent
SPACES_DIR = ROOT / "spaces"
PROFILES_DIR = ROOT / "hw_profiles"


class EarlyStopSpace(Strict):
    """Stops hopeless trials between distillation epochs.

    Optuna's pruners do not support multi-objective studies, so a trial is stopped (recorded as
    PRUNED) when, after ``min_epochs``, its validation accuracy is more than ``max_accuracy_drop``
    below the baseline's: such a trial cannot reach the useful part of the Pareto front.
    """

    min_epochs: int = Field(2, ge=1)
    max_accuracy_drop: float = Field(0.5, gt=0.0, le=1.0)


class SearchSettings(Strict):
    """How the study samples: the Optuna sampler, and the default number of trials."""

    sampler: Literal["tpe", "gp", "nsga2", "random"] = "tpe"  # see search/study/samplers.py
    trials: int = Field(20, ge=1)
    startup_trials: int = Field(6, ge=1)
    # Prune ratios of the hand-built recipes enqueued as the first trials
    # (search/study/warm_start.py); empty: only the sensitivity pass's seeded trial.
    warm_start: list[float] = []

    @model_validator(mode="after")
    def _check(self) -> SearchSettings:
        bad = [r for r in self.warm_start if not 0.0 <= r < 1.0]
        if bad:
            raise ValueError(f"warm_start prune ratios must be in [0, 1), but got {bad}")
        if len(set(self.warm_start)) != len(self.warm_start):
            raise ValueError(f"warm_start lists a prune ratio twice: {self.warm_start}")
        return self


class SpaceMethods(Strict):
    """What a space does with its sections: each registered step's section samples its part."""

    # The steps this space was built from (the registry when the model class was made).
    steps: ClassVar[tuple[Step, ...]] = ()

    def section(self, name: str) -> Any:
        """The space section of step ``name`` (a :class:`~search.core.schema.Strict` model)."""
        return getattr(self, name)

    def sample(self, trial: optuna.Trial, profile: Profile | None = None) -> TrialConfig:
        """Turn Optuna's suggestions into a :class:`TrialConfig`: each step's section samples
        its own part (:attr:`Step.sample`), and nothing else calls ``trial.suggest_*``.

        Precision choices the profile's provider does not run are filtered out before sampling.
        Steps suggest in :func:`~search.compress.steps.sampling_order` (quantize, prune,
        distill, lowrank: the order the parameters were always suggested in, so seeded samplers
        replay earlier studies).
        """
        quantize = self.section("quantize")
        order = _sensitivity_order(trial) if quantize.encoding == "ordinal" else None
        env = SampleEnv(support=profile.precisions if profile else None, order=order)
        steps = sampling_order(self.steps)
        parts = {s.name: s.sample(self.section(s.name), trial, env) for s in steps}
        return TrialConfig(_steps=self.steps, **parts)


class SpaceBase(SpaceMethods):
    """What every space file has besides the steps' sections: how the study samples and stops
    trials. :class:`Space` adds one section per registered compression step
    (:data:`search.compress.steps.STEPS`), each declared next to its step."""

    description: str = ""
    search: SearchSettings = SearchSettings()
    early_stop: EarlyStopSpace = EarlyStopSpace()
    name: str = "custom"
    path: str = ""


# The order of a space's fields before the step registry: its JSON dump (and so the content
# digest a study recorded, :mod:`search.study.resume`) keeps it; new steps go after low-rank.
_FIELD_ORDER = ("description", "search", "prune", "distill", "early_stop", "quantize", "lowrank")


def space_model(steps: tuple[Step, ...] | None = None) -> type[SpaceMethods]:
    """The space model with one section per step of ``steps`` (default: the registry)."""
    return _space_model(steps or registry.STEPS)


@functools.cache
def _space_model(steps: tuple[Step, ...]) -> type[SpaceMethods]:
    base = {n: (f.annotation, f) for n, f in SpaceBase.model_fields.items()}
    sections: dict[str, Any] = {s.name: (s.space, s.space()) for s in steps}
    fields = {**base, **sections}
    order = [n for n in _FIELD_ORDER if n in fields]
    order += [n for n in fields if n not in order and n not in ("name", "path")] + ["name", "path"]
    model = create_model(
        "Space", __base__=SpaceMethods, __module__=__name__, **{n: fields[n] for n in order}
    )
    model.steps = steps
    return model


if TYPE_CHECKING:

    class Space(SpaceBase):
        """A whole search space file (the built-in steps' sections, typed for the checker)."""

        # Each section defaults to its step's defaults, as in space_model().
        prune: PruneSpace = PruneSpace()
        lowrank: LowRankSpace = LowRankSpace()
        distill: DistillSpace = DistillSpace()
        quantize: QuantizeSpace = QuantizeSpace()

else:
    Space = space_model()


def _sensitivity_order(trial: optuna.trial.BaseTrial) -> list[str] | None:
    """The study's sensitivity order (most sensitive group first), if it has one; a
    ``FixedTrial`` has no study."""
    study = getattr(trial, "study", None)
    sensitivity = study.user_attrs.get("sensitivity") if study is not None else None
    return list(sensitivity["order"]) if sensitivity else None


class TrialConfig:
    """Everything one trial builds from: one part per compression step, in pipeline order.

    Frozen. A part not given is its step's default (the step does nothing). The built-in
    steps' parts are also attributes (``cfg.prune``); any step's is ``cfg.part(name)``.

    Example:
        >>> from search.compress.prune.step import PruneConfig
        >>> cfg = TrialConfig(prune=PruneConfig(ratio=0.3))
        >>> cfg.prune.ratio, cfg.lowrank.apply
        (0.3, False)
        >>> TrialConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    __slots__ = ("_parts",)
    _parts: dict[str, Any]

    def __init__(self, _steps: tuple[Step, ...] | None = None, **parts: StepConfig) -> None:
        steps = _steps or registry.STEPS
        unknown = set(parts) - {s.name for s in steps}
        if unknown:
            raise TypeError(f"no compression step named {sorted(unknown)}")
        built = {s.name: parts[s.name] if s.name in parts else s.config() for s in steps}
        object.__setattr__(self, "_parts", built)

    def __setattr__(self, name: str, value: object) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TrialConfig) and other._parts == self._parts

    def __hash__(self) -> int:
        return hash(repr(self))

    def __repr__(self) -> str:
        return f"TrialConfig({', '.join(f'{k}={v!r}' for k, v in self._parts.items())})"

    def part(self, name: str) -> Any:
        """The config part of step ``name``."""
        return self._parts[name]

    @property
    def parts(self) -> dict[str, Any]:
        """Step name -> its config part, in pipeline order."""
        return dict(self._parts)

    @property
    def prune(self) -> PruneConfig:
        return self._parts["prune"]

    @property
    def lowrank(self) -> LowRankConfig:
        return self._parts["lowrank"]

    @property
    def distill(self) -> DistillConfig:
        return self._parts["distill"]

    @property
    def quantize(self) -> QuantizeConfig:
        return self._parts["quantize"]

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{"prune": {...}, "lowrank": {...}, "distill": {...}, "quantize": {...}}``."""
        return {name: part.to_dict() for name, part in self._parts.items()}

    def active(self) -> dict[str, Any]:
        """The Optuna parameters that acted in this trial, by name, from every step's part
        (:meth:`StepConfig.active`): low-rank's kind and ratio only when it was applied."""
        out: dict[str, Any] = {}
        for part in self._parts.values():
            out.update(part.active())
        return out

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Mapping[str, Any]], steps: tuple[Step, ...] | None = None
    ) -> TrialConfig:
        """The inverse of :meth:`to_dict`; a missing part takes its defaults."""
        steps = steps or registry.STEPS
        parts = {s.name: s.config(**dict(data.get(s.name, {}))) for s in steps}
        return cls(_steps=steps, **parts)


def plan_of(config: Mapping[str, Any] | None) -> dict[str, str]:
    """The per-group precision plan (group -> float/fp16/int8/...) of a recorded trial config.

    Reads ``config["quantize"]["precision"]`` (records whose config is made of per-step parts)
    or ``config["precision"]`` (older, flat records); ``{}`` when there is none.
    """
    if not config:
        return {}
    quantize = config.get("quantize")
    plan = quantize.get("precision") if isinstance(quantize, Mapping) else config.get("precision")
    return {str(g): str(p) for g, p in plan.items()} if isinstance(plan, Mapping) else {}


# ---------------------------------------------------------------------------- hardware profiles


class Budgets(Strict):
    """Optional limits; a trial over a budget is infeasible for Optuna's sampler."""

    latency_ms: float | None = Field(None, gt=0)
    memory_mb: float | None = Field(None, gt=0)


class Profile(Strict):
    """A measurement target: providers in priority order and how to measure on them.

    What a target needs of it to measure is :meth:`measure_spec`; the rest (agent, round_to,
    budgets, precisions) is the search's.
    """

    name: str = ""
    description: str = ""
    # The CPU architecture numbers must come from; None accepts any (a GPU's numbers do not
    # depend much on the host CPU). A mismatch is refused, never measured.
    arch: Literal["x86_64", "aarch64"] | None = None
    providers: list[ProviderSpec]
    # Extra SessionOptions config entries, e.g. {"session.disable_cpu_ep_fallback": "1"}.
    session_config: dict[str, str] = {}
    # URL of a measurement agent on the target (``python -m search agent``); None measures here.
    agent: str | None = None
    # Environment variable that holds the agent's token (never the token itself in a file).
    agent_token_env: str = "SEARCH_AGENT_TOKEN"
    # A runtime of its own (``./setup.sh --target NAME`` makes ``.runtimes/NAME``) for a
    # provider this onnxruntime lacks: the study measures through a local agent started there.
    runtime: Literal["openvino", "qnn"] | None = None
    threads: Threads = Threads()
    batch_sizes: list[int] = Field([1], min_length=1)
    round_to: int | None = Field(8, ge=1)
    # Symbolic input dimensions fixed for the target's sessions, e.g. {batch: 1} (QNN).
    free_dimensions: dict[str, int] = {}
    measure: MeasureSettings = MeasureSettings()
    budgets: Budgets = Budgets()
    precisions: PrecisionSupport = PrecisionSupport()
    path: str = ""

    @model_validator(mode="before")
    @classmethod
    def _legacy_keys(cls, data: Any) -> Any:
        # Profiles written before it was removed name a ``device`` that nothing ever read.
        if isinstance(data, dict) and "device" in data:
            data = {k: v for k, v in data.items() if k != "device"}
        return data

    @model_validator(mode="after")
    def _check(self) -> Profile:
        if self.agent is not None and not self.agent.startswith(("http://", "https://")):
            raise ValueError(f"agent must be an http:// or https:// URL, got {self.agent!r}")
        self.measure_spec()  # the target's own checks (providers, batch sizes), as ValueError
        return self

    @property
    def provider_names(self) -> list[str]:
        return [p.name for p in self.providers]

    def with_agent(self, agent: str | None) -> Profile:
        """This profile measured at ``agent`` (a URL), or on this machine for None.

        Raises:
            ConfigError: ``agent`` is not an http(s) URL.
        """
        try:
            return self.model_validate({**self.model_dump(), "agent": agent})
        except ValidationError:
            raise ConfigError(
                f"--agent must be an http:// URL or 'local', got {agent!r}"
            ) from None

    def measure_spec(self) -> MeasureSpec:
        """What a target (this machine or the agent) needs of this profile to measure."""
        return MeasureSpec(
            name=self.name,
            arch=self.arch,
            providers=tuple(self.providers),
            threads=self.threads,
            session_config=dict(self.session_config),
            batch_sizes=tuple(self.batch_sizes),
            measure=self.measure,
            free_dimensions=dict(self.free_dimensions),
        )


# ---------------------------------------------------------------------------------- loading


def _resolve(name_or_path: str, folder: Path, what: str, flag: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or "/" in name_or_path:
        if not candidate.exists() and not candidate.is_symlink():
            raise ConfigError(f"{what} file {name_or_path} does not exist")
        return candidate  # a folder, a FIFO, a symlink loop: read_yaml says which, in one line
    path = folder / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) or "none"
        raise ConfigError(
            f"unknown {what} {name_or_path!r}: choose one of {known} "
            f"or pass a YAML file path to {flag}"
        )
    return path


def _load(model: type[Strict], path: Path, name: str) -> Any:
    data = read_yaml(path)
    data.setdefault("name", name)
    data["path"] = str(path)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(path, model, err)) from None


def load_space(name_or_path: str) -> Space:
    """Load ``spaces/<name>.yaml`` (or a YAML path) into a validated :class:`Space` with one
    section per registered step."""
    path = _resolve(name_or_path, SPACES_DIR, "search space", "--space")
    return _load(space_model(), path, path.stem)


def load_profile(name_or_path: str) -> Profile:
    """Load ``hw_profiles/<name>.yaml`` (or a YAML path) into a validated :class:`Profile`."""
    path = _resolve(name_or_path, PROFILES_DIR, "hardware profile", "--hw")
    return _load(Profile, path, path.stem)


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
