"""Search spaces (``spaces/*.yaml``) and hardware profiles (``hw_profiles/*.yaml``).

Both are loaded into frozen, validated objects. Unknown keys, wrong types and out-of-range values
are :class:`ConfigError` s whose one-line message names the file, the key and what is allowed.

Example:
    >>> space = load_space("default")
    >>> 0.0 <= space.prune.ratio.low < 1.0
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import optuna
import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from search.compress.lowrank import LowRankSpace
from search.compress.quantize import (
    Precision,
    PrecisionSupport,
    QuantizeSpace,
    check_combination,
)
from search.errors import ConfigError
from search.ranges import FloatRange, IntRange, _bounded, _Section, _Strict

ROOT = Path(__file__).resolve().parent.parent
SPACES_DIR = ROOT / "spaces"
PROFILES_DIR = ROOT / "hw_profiles"


class PruneSpace(_Section):
    """Structured pruning with torch-pruning: the share of channels removed, globally ranked."""

    ratio: FloatRange = FloatRange(low=0.0, high=0.7)
    importance: Literal["l1", "l2"] = "l2"
    max_layer_ratio: float = Field(0.9, gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> PruneSpace:
        _bounded(self.ratio, "ratio", 0.0, 1.0, hi_open=True)
        return self


class DistillSpace(_Section):
    """Knowledge distillation from the frozen, uncompressed teacher after compression."""

    epochs: IntRange = IntRange(low=1, high=3)
    temperature: FloatRange = FloatRange(low=1.0, high=8.0)
    alpha: FloatRange = FloatRange(low=0.0, high=1.0)
    lr: FloatRange = FloatRange(low=1e-3, high=1e-2, log=True)
    batch_size: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _check(self) -> DistillSpace:
        _bounded(self.epochs, "epochs", 1, 1000, hi_open=False)
        _bounded(self.temperature, "temperature", 1e-3, 100.0, hi_open=False)
        _bounded(self.alpha, "alpha", 0.0, 1.0, hi_open=False)
        _bounded(self.lr, "lr", 1e-8, 10.0, hi_open=False)
        return self


class EarlyStopSpace(_Strict):
    """Stops hopeless trials between distillation epochs.

    Optuna's pruners do not support multi-objective studies, so a trial is stopped (recorded as
    PRUNED) when, after ``min_epochs``, its validation accuracy is more than ``max_accuracy_drop``
    below the baseline's: such a trial cannot reach the useful part of the Pareto front.
    """

    min_epochs: int = Field(2, ge=1)
    max_accuracy_drop: float = Field(0.5, gt=0.0, le=1.0)


class SearchSettings(_Strict):
    """How the study samples: the Optuna sampler, and the default number of trials."""

    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    trials: int = Field(20, ge=1)
    startup_trials: int = Field(6, ge=1)


class Space(_Strict):
    """A whole search space file."""

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
        """Turn Optuna's suggestions into a :class:`TrialConfig`; the only caller of suggest_*.

        Precision choices the profile's provider does not run are filtered out before sampling.
        """
        picked: dict[str, str] = {}
        support = profile.precisions if profile else None
        for name, choices in self.quantize.choices(support).items():
            if name == "weights" and picked.get("activations") == "int8":
                # ONNX Runtime has no kernels for int8 activations with uint8 weights.
                choices = [c for c in choices if c == "signed"] or choices
            picked[name] = (
                choices[0] if len(choices) == 1 else trial.suggest_categorical(name, choices)
            )
        check_combination(picked["activations"], picked["weights"])
        return TrialConfig(
            prune_ratio=self.prune.ratio.suggest(trial, "prune_ratio"),
            epochs=self.distill.epochs.suggest(trial, "epochs"),
            temperature=self.distill.temperature.suggest(trial, "temperature"),
            alpha=self.distill.alpha.suggest(trial, "alpha"),
            lr=self.distill.lr.suggest(trial, "lr"),
            batch_size=self.distill.batch_size,
            precision={g: picked[f"precision_{g}"] for g in self.quantize.groups},
            calibration=picked["calibration"],
            activations=picked["activations"],
            weights=picked["weights"],
            # Every low-rank parameter is suggested even when not applied: a fixed set of
            # parameters keeps multivariate TPE modelling them jointly.
            lowrank=_choose(trial, "lowrank", self.lowrank.apply),
            lowrank_kind=_choose(trial, "lowrank_kind", self.lowrank.kind),
            lowrank_ratio=self.lowrank.rank_ratio.suggest(trial, "lowrank_ratio"),
            lowrank_group_ratios={
                name: g.rank_ratio.suggest(trial, f"lowrank_ratio_{name}")
                for name, g in self.lowrank.groups.items()
            },
        )


def _choose(trial: optuna.Trial, name: str, choices: list[Any]) -> Any:
    """A categorical suggestion; a single choice is fixed and not a parameter."""
    return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, choices)


@dataclass(frozen=True)
class TrialConfig:
    """Everything one trial builds from: what to compress and how to fine-tune."""

    prune_ratio: float = 0.0
    epochs: int = 1
    temperature: float = 4.0
    alpha: float = 0.5
    lr: float = 1e-3
    batch_size: int = 64
    # Quantization: group -> float/int8/int4/int16; an empty or all-float plan quantizes nothing.
    precision: dict[str, str] = field(default_factory=dict)
    calibration: str = "minmax"
    activations: str = "uint8"
    weights: str = "signed"
    extra: dict[str, Any] = field(default_factory=dict)
    lowrank: bool = False
    lowrank_kind: str = "channel"
    lowrank_ratio: float = 1.0
    lowrank_group_ratios: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.prune_ratio < 1.0:
            raise ConfigError(f"prune_ratio must lie in [0, 1), but got {self.prune_ratio}")
        bad = {g: p for g, p in self.precision.items() if p not in get_args(Precision)}
        if bad:
            raise ConfigError(f"precision must be one of {get_args(Precision)}, but got {bad}")
        for name, r in {"": self.lowrank_ratio, **self.lowrank_group_ratios}.items():
            if not 0.0 < r <= 1.0:
                key = f"lowrank_ratio_{name}" if name else "lowrank_ratio"
                raise ConfigError(f"{key} must lie in (0, 1], but got {r}")
        if self.lowrank_kind not in ("channel", "spatial"):
            raise ConfigError(
                f"lowrank_kind must be 'channel' or 'spatial', but got {self.lowrank_kind!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------------------- hardware profiles


class ProviderSpec(_Strict):
    """One ONNX Runtime execution provider and its options, e.g. CUDAExecutionProvider."""

    name: str
    options: dict[str, Any] = {}
    # An optional provider is used where the onnxruntime build has it and skipped (and recorded as
    # skipped) where it does not; a required one must be there or the study does not start.
    optional: bool = False

    @model_validator(mode="after")
    def _check(self) -> ProviderSpec:
        if not self.name.endswith("ExecutionProvider"):
            raise ValueError(
                f"unknown provider {self.name!r}: names look like 'CPUExecutionProvider' "
                "(see onnxruntime.get_all_providers())"
            )
        return self


class Threads(_Strict):
    intra_op: int = Field(1, ge=0)
    inter_op: int = Field(1, ge=0)


class MeasureSettings(_Strict):
    """How latency is measured: warm-up by count and time, repeats by count and time."""

    warmup_runs: int = Field(10, ge=0)
    warmup_seconds: float = Field(0.2, ge=0.0)
    min_runs: int = Field(50, ge=1)
    min_seconds: float = Field(1.0, ge=0.0)
    max_runs: int = Field(10000, ge=1)
    memory_runs: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _check(self) -> MeasureSettings:
        if self.max_runs < self.min_runs:
            raise ValueError(f"max_runs >= min_runs must hold, got {self.max_runs=}")
        return self


class Budgets(_Strict):
    """Optional limits; a trial over a budget is infeasible for Optuna's sampler."""

    latency_ms: float | None = Field(None, gt=0)
    memory_mb: float | None = Field(None, gt=0)


class Profile(_Strict):
    """A measurement target: providers in priority order and how to measure on them."""

    name: str = ""
    description: str = ""
    device: Literal["cpu", "cuda", "arm", "jetson"] = "cpu"
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

    @model_validator(mode="after")
    def _check(self) -> Profile:
        if not self.providers:
            raise ValueError("providers must name at least one execution provider")
        if any(b < 1 for b in self.batch_sizes):
            raise ValueError(f"batch_sizes must be positive, got {self.batch_sizes}")
        if self.agent is not None and not self.agent.startswith(("http://", "https://")):
            raise ValueError(f"agent must be an http:// or https:// URL, got {self.agent!r}")
        if all(p.optional for p in self.providers):
            raise ValueError("at least one provider must be required (optional: false)")
        return self

    @property
    def provider_names(self) -> list[str]:
        return [p.name for p in self.providers]

    @property
    def required_providers(self) -> list[str]:
        return [p.name for p in self.providers if not p.optional]


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
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not a {kind}")
    return data


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc[:-1]:
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return []
        ann = fields[part].annotation
        current = ann
    fields = getattr(current, "model_fields", None)
    if not fields:
        return []
    return sorted(k for k in fields if k not in ("path", "name") or current is not model)


def format_validation_error(path: Path, model: type[BaseModel], err: ValidationError) -> str:
    """One line: the file, the first bad key, what is wrong with it, what is allowed."""
    first = err.errors()[0]
    loc = tuple(p for p in first["loc"] if not str(p).startswith(("function-", "FloatRange")))
    key = ".".join(str(p) for p in loc) or "(top level)"
    if first["type"] == "extra_forbidden":
        allowed = ", ".join(_allowed_keys(model, loc))
        return f"{path}: unknown key '{key}'; allowed keys here: {allowed}"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "literal_error":
        return f"{path}: {key}: {msg}"
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"{path}: {key}: {msg}{shown}"


def _load(model: type[_Strict], path: Path, name: str) -> Any:
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
