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
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from search.compress.distill import DistillConfig, DistillSpace
from search.compress.lowrank import LowRankConfig, LowRankSpace
from search.compress.prune import PruneConfig, PruneSpace
from search.compress.quantize import PrecisionSupport, QuantizeConfig, QuantizeSpace
from search.errors import ConfigError
from search.measure.spec import MeasureSettings, MeasureSpec, ProviderSpec, Threads
from search.schema import Strict

if TYPE_CHECKING:
    import optuna

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

    sampler: Literal["tpe", "gp", "nsga2", "random"] = "tpe"  # see search/samplers.py
    trials: int = Field(20, ge=1)
    startup_trials: int = Field(6, ge=1)
    # Prune ratios of the hand-built recipes enqueued as the first trials (search/warm_start.py);
    # empty: only the sensitivity pass's seeded trial.
    warm_start: list[float] = []

    @model_validator(mode="after")
    def _check(self) -> SearchSettings:
        bad = [r for r in self.warm_start if not 0.0 <= r < 1.0]
        if bad:
            raise ValueError(f"warm_start prune ratios must be in [0, 1), but got {bad}")
        if len(set(self.warm_start)) != len(self.warm_start):
            raise ValueError(f"warm_start lists a prune ratio twice: {self.warm_start}")
        return self


class Space(Strict):
    """A whole search space file: one section per compression step, each declared next to its
    step (``compress/<step>.py``), and how the study samples and stops trials."""

    description: str = ""
    search: SearchSettings = SearchSettings()
    prune: PruneSpace = PruneSpace()
    distill: DistillSpace = DistillSpace()
    early_stop: EarlyStopSpace = EarlyStopSpace()
    quantize: QuantizeSpace = QuantizeSpace()
    lowrank: LowRankSpace = LowRankSpace()
    name: str = "custom"
    path: str = ""

    def sample(self, trial: optuna.Trial, profile: Profile | None = None) -> TrialConfig:
        """Turn Optuna's suggestions into a :class:`TrialConfig`: each step's section samples
        its own part, and nothing else calls ``trial.suggest_*``.

        Precision choices the profile's provider does not run are filtered out before sampling.
        The order (quantize, prune, distill, lowrank) is the order the parameters were always
        suggested in, so seeded samplers replay earlier studies.
        """
        order = _sensitivity_order(trial) if self.quantize.encoding == "ordinal" else None
        support = profile.precisions if profile else None
        quantize = self.quantize.sample(trial, support, order=order)
        prune = self.prune.sample(trial)
        distill = self.distill.sample(trial)
        lowrank = self.lowrank.sample(trial)
        return TrialConfig(prune=prune, lowrank=lowrank, distill=distill, quantize=quantize)


def _sensitivity_order(trial: Any) -> list[str] | None:
    """The study's sensitivity order (most sensitive group first), if it has one; a
    ``FixedTrial`` has no study."""
    study = getattr(trial, "study", None)
    sensitivity = study.user_attrs.get("sensitivity") if study is not None else None
    return list(sensitivity["order"]) if sensitivity else None


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial builds from: one part per compression step, in pipeline order."""

    prune: PruneConfig = field(default_factory=PruneConfig)
    lowrank: LowRankConfig = field(default_factory=LowRankConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{"prune": {...}, "lowrank": {...}, "distill": {...}, "quantize": {...}}``."""
        return {f.name: getattr(self, f.name).to_dict() for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> TrialConfig:
        """The inverse of :meth:`to_dict`; a missing part takes its defaults."""
        parts = {f.name: f.default_factory for f in fields(cls)}  # type: ignore[misc]
        return cls(**{name: make(**dict(data.get(name, {}))) for name, make in parts.items()})


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
    threads: Threads = Threads()
    batch_sizes: list[int] = Field([1], min_length=1)
    round_to: int | None = Field(8, ge=1)
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
        )


# ---------------------------------------------------------------------------------- loading


def _resolve(name_or_path: str, folder: Path, what: str, flag: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or "/" in name_or_path:
        if not candidate.is_file():
            raise ConfigError(f"{what} file {name_or_path} does not exist")
        return candidate
    path = folder / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml"))) or "none"
        raise ConfigError(
            f"unknown {what} {name_or_path!r}: choose one of {known} "
            f"or pass a YAML file path to {flag}"
        )
    return path


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot be read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (YAML is UTF-8 text)") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not a {kind}")
    return data


def _fields(kind: Any) -> list[str] | None:
    """Field names of a pydantic model or a dataclass (a profile's measurement parts)."""
    if dataclasses.is_dataclass(kind):
        return [f.name for f in dataclasses.fields(kind)]
    fields_ = getattr(kind, "model_fields", None)
    return list(fields_) if fields_ is not None else None


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc[:-1]:
        origin = typing.get_origin(current)
        if origin in (list, tuple, dict):  # ``part`` is an index or a key: its item's type
            current = typing.get_args(current)[-1 if origin is dict else 0]
            continue
        names = _fields(current)
        if names is None or part not in names:
            return []
        current = _annotation(current, part)
    names = _fields(current)
    if not names:
        return []
    return sorted(k for k in names if k not in ("path", "name") or current is not model)


def _annotation(kind: Any, name: str) -> Any:
    if dataclasses.is_dataclass(kind):
        return typing.get_type_hints(kind)[name]
    return kind.model_fields[name].annotation


def format_validation_error(path: Path, model: type[BaseModel], err: ValidationError) -> str:
    """One line: the file, the first bad key, what is wrong with it, what is allowed."""
    first = err.errors()[0]
    loc = tuple(p for p in first["loc"] if not str(p).startswith(("function-", "FloatRange")))
    key = ".".join(str(p) for p in loc) or "(top level)"
    if first["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        allowed = ", ".join(_allowed_keys(model, loc))
        return f"{path}: unknown key '{key}'; allowed keys here: {allowed}"
    msg = first["msg"].removeprefix("Value error, ")
    if not loc:  # a check of the whole file: the message names its keys
        return f"{path}: {msg}"
    if first["type"] == "literal_error":
        return f"{path}: {key}: {msg}"
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"{path}: {key}: {msg}{shown}"


def _load(model: type[Strict], path: Path, name: str) -> Any:
    data = _read_yaml(path)
    data.setdefault("name", name)
    data["path"] = str(path)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(path, model, err)) from None


def load_space(name_or_path: str) -> Space:
    """Load ``spaces/<name>.yaml`` (or a YAML path) into a validated :class:`Space`."""
    path = _resolve(name_or_path, SPACES_DIR, "search space", "--space")
    return _load(Space, path, path.stem)


def load_profile(name_or_path: str) -> Profile:
    """Load ``hw_profiles/<name>.yaml`` (or a YAML path) into a validated :class:`Profile`."""
    path = _resolve(name_or_path, PROFILES_DIR, "hardware profile", "--hw")
    return _load(Profile, path, path.stem)


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
