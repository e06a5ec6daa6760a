"""What a target needs of a hardware profile to measure as it says: :class:`MeasureSpec`.

Frozen standard-library dataclasses, validated where they are built, so the measurement agent can
import them without pydantic or torch. :class:`search.config.Profile` uses the same classes for
its ``providers``, ``threads`` and ``measure`` keys (pydantic validates a YAML file into them, and
their own checks run there too) and gives its spec with ``profile.measure_spec()``. The agent's
client sends ``spec.to_json()``; the agent rebuilds it with :meth:`MeasureSpec.from_json`.

Example:
    >>> spec = MeasureSpec(providers=(ProviderSpec("CPUExecutionProvider"),))
    >>> MeasureSpec.from_json(spec.to_json()) == spec
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from search.measure.ort_options import check_provider_options, check_session_config

# Read by pydantic when a profile is loaded from YAML: an unknown key is an error, as elsewhere.
_PYDANTIC = {"extra": "forbid"}
ARCHES = ("x86_64", "aarch64")


def _within(value: float, lo: float, hi: float, key: str) -> None:
    if not lo <= value <= hi:
        raise ValueError(f"{key} must lie in [{lo}, {hi}], but got {value!r}")


@dataclass(frozen=True)
class ProviderSpec:
    """One ONNX Runtime execution provider and its options, e.g. CUDAExecutionProvider.

    An optional provider is used where the onnxruntime build has it and skipped (and recorded as
    skipped) where it does not; a required one must be there or the study does not start.
    """

    __pydantic_config__ = _PYDANTIC

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    optional: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.endswith("ExecutionProvider"):
            raise ValueError(
                f"unknown provider {self.name!r}: names look like 'CPUExecutionProvider' "
                "(see onnxruntime.get_all_providers())"
            )
        if not isinstance(self.options, dict) or not all(
            isinstance(k, str) and isinstance(v, str | int | float | bool)
            for k, v in self.options.items()
        ):
            raise ValueError(f"options of {self.name} must map names to scalars")
        check_provider_options(self.name, self.options)


@dataclass(frozen=True)
class Threads:
    """ONNX Runtime's intra- and inter-op thread counts (0 lets ONNX Runtime choose)."""

    __pydantic_config__ = _PYDANTIC

    intra_op: int = 1
    inter_op: int = 1

    def __post_init__(self) -> None:
        _within(self.intra_op, 0, 1024, "intra_op")
        _within(self.inter_op, 0, 1024, "inter_op")


@dataclass(frozen=True)
class MeasureSettings:
    """How latency is measured: warm-up by count and time, repeats by count and time; how many
    runs the peak-memory child makes; how a trial is paired with the baseline and when its
    measurement counts as noisy or the machine as busy.

    A trial is timed interleaved with the study's baseline (:mod:`search.measure.paired`):
    ``paired_rounds`` rounds of ``paired_runs`` runs of each. Its spread is the half-width of
    the 95 % confidence interval of the relative latency, as a share of it; above
    ``noise_threshold`` the rounds are repeated (pooled) at most ``max_repeats`` more times, and
    a measurement still above it is marked noisy. The default 0.05 lies above what the shared
    2-core development machine gave without extra load (0.01-0.04 for tiny and small ResNets)
    and below what it gave with four busy processes added (0.04-0.12); a difference of 5 % is
    also about the smallest latency difference worth ranking trials by. The machine counts
    as busy when other processes used more than ``busy_threshold`` of all cores' time during
    the measurement (:mod:`search.measure.load`): 0.10 is more than system daemons use and less
    than one other busy thread on a machine of up to 8 cores. ``confirm_rounds`` is how many
    rounds the front's confirmation times every Pareto trial and the baseline, in each of
    ``confirm_processes`` fresh processes (0: in the measuring process itself); the figures
    pooled over them carry an interval that covers the variation between processes
    (:mod:`search.measure.pooled`). One process's interval was narrower than that variation: a
    front confirmed at 6.2-6.6x read 4.5-4.9x eleven minutes later, and an int8 model's p50 was
    bimodal across processes. Before the confirmation starts it waits at most ``quiet_wait_s``
    seconds for a window in which other processes use at most ``busy_threshold`` of the cores
    (a co-runner that trains moved a paired ratio by 14 %, :mod:`search.measure.pooled`); 0
    does not wait, and a contended confirmation is flagged either way.

    Before anything is timed, each session is warmed up to a steady state
    (:func:`search.measure.latency.warm_up`): ``warmup_runs`` (and ``warmup_seconds``) of
    throw-away runs, then windows of ``steady_window`` runs until two windows' medians agree
    within ``steady_tolerance``, for at most ``warmup_max_runs`` runs or
    ``warmup_max_seconds``.
    """

    __pydantic_config__ = _PYDANTIC

    warmup_runs: int = 10
    warmup_seconds: float = 0.2
    min_runs: int = 50
    min_seconds: float = 1.0
    max_runs: int = 10000
    memory_runs: int = 5
    paired_rounds: int = 30
    paired_runs: int = 5
    noise_threshold: float = 0.05
    max_repeats: int = 2
    busy_threshold: float = 0.10
    confirm_rounds: int = 60
    steady_window: int = 10
    steady_tolerance: float = 0.05
    warmup_max_runs: int = 500
    warmup_max_seconds: float = 10.0
    confirm_processes: int = 3
    quiet_wait_s: float = 0.0

    def __post_init__(self) -> None:
        _within(self.paired_rounds, 1, 10**5, "paired_rounds")
        _within(self.paired_runs, 1, 10**4, "paired_runs")
        _within(self.noise_threshold, 0.0, 10.0, "noise_threshold")
        _within(self.max_repeats, 0, 20, "max_repeats")
        _within(self.busy_threshold, 0.0, 1.0, "busy_threshold")
        _within(self.confirm_rounds, 1, 10**5, "confirm_rounds")
        _within(self.confirm_processes, 0, 32, "confirm_processes")
        _within(self.quiet_wait_s, 0.0, 86400.0, "quiet_wait_s")
        # Upper bounds keep a request to the agent from occupying it for days.
        _within(self.warmup_runs, 0, 10**6, "warmup_runs")
        _within(self.warmup_seconds, 0.0, 600.0, "warmup_seconds")
        _within(self.min_runs, 1, 10**6, "min_runs")
        _within(self.min_seconds, 0.0, 600.0, "min_seconds")
        _within(self.max_runs, 1, 10**7, "max_runs")
        _within(self.memory_runs, 1, 10**4, "memory_runs")
        _within(self.steady_window, 1, 10**4, "steady_window")
        _within(self.steady_tolerance, 0.0, 10.0, "steady_tolerance")
        _within(self.warmup_max_runs, 1, 10**6, "warmup_max_runs")
        _within(self.warmup_max_seconds, 0.0, 3600.0, "warmup_max_seconds")
        if self.max_runs < self.min_runs:
            raise ValueError(f"max_runs >= min_runs must hold, got {self.max_runs=}")


@dataclass(frozen=True)
class MeasureSpec:
    """Providers in priority order, threads, session config entries, batch sizes and measurement
    settings: everything a target reads of a profile.

    Raises:
        ValueError: one line, when a value is out of range or the providers are unusable.
    """

    providers: tuple[ProviderSpec, ...]
    name: str = "remote"
    # The CPU architecture numbers must come from; None accepts any.
    arch: str | None = None
    threads: Threads = field(default_factory=Threads)
    # Extra SessionOptions config entries, e.g. {"session.disable_cpu_ep_fallback": "1"}.
    session_config: dict[str, str] = field(default_factory=dict)
    batch_sizes: tuple[int, ...] = (1,)
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    # Symbolic input dimensions fixed when a session is built (ONNX Runtime's free dimension
    # overrides), e.g. {"batch": 1} for a provider that takes static shapes only (QNN).
    free_dimensions: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.providers:
            raise ValueError("providers must name at least one execution provider")
        if all(p.optional for p in self.providers):
            raise ValueError("at least one provider must be required (optional: false)")
        if self.arch is not None and self.arch not in ARCHES:
            raise ValueError(f"arch must be one of {ARCHES} or null, but got {self.arch!r}")
        if not self.batch_sizes:
            raise ValueError("batch_sizes must name at least one batch size")
        for b in self.batch_sizes:
            _within(b, 1, 4096, "batch size")
        if not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.session_config.items()
        ):
            raise ValueError("session_config must map text keys to text values")
        check_session_config(self.session_config, [p.name for p in self.providers])
        for name, size in self.free_dimensions.items():
            if not isinstance(name, str) or isinstance(size, bool) or not isinstance(size, int):
                raise ValueError("free_dimensions must map dimension names to sizes")
            _within(size, 1, 4096, f"free dimension {name!r}")

    @property
    def provider_names(self) -> list[str]:
        return [p.name for p in self.providers]

    @property
    def required(self) -> list[str]:
        """Providers that must be there: a missing one stops the study before any work."""
        return [p.name for p in self.providers if not p.optional]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data; :meth:`from_json` gives the same spec back. ``free_dimensions`` is
        left out when empty, so agents of earlier versions accept the spec."""
        extra = {"free_dimensions": dict(self.free_dimensions)} if self.free_dimensions else {}
        return {
            "name": self.name,
            "arch": self.arch,
            "providers": [
                {"name": p.name, "options": dict(p.options), "optional": p.optional}
                for p in self.providers
            ],
            "threads": _plain(self.threads),
            "batch_sizes": list(self.batch_sizes),
            "measure": _plain(self.measure),
            "session_config": dict(self.session_config),
            **extra,
        }

    @classmethod
    def from_json(cls, data: object) -> MeasureSpec:
        """Validate JSON data (from a client, so untrusted) into a spec.

        Raises:
            ValueError: one line naming the first bad key.
        """
        if not isinstance(data, dict):
            raise ValueError("profile must be a JSON object")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"profile has unknown key(s) {sorted(unknown)}")
        providers = data.get("providers") or []
        batch_sizes = data.get("batch_sizes") or [1]
        config = data.get("session_config") or {}
        free = data.get("free_dimensions") or {}
        if not isinstance(free, dict):
            raise ValueError("free_dimensions must be a JSON object")
        if not isinstance(providers, list) or not isinstance(batch_sizes, list):
            raise ValueError("providers and batch_sizes must be lists")
        if not isinstance(config, dict):
            raise ValueError("session_config must be a JSON object")
        arch = data.get("arch")
        return cls(
            name=str(data.get("name", "remote")),
            arch=arch if isinstance(arch, str) or arch is None else str(arch),
            providers=tuple(_typed(ProviderSpec, p, "provider") for p in providers),
            threads=_typed(Threads, data.get("threads") or {}, "threads"),
            session_config={str(k): str(v) for k, v in config.items()},
            free_dimensions={str(k): _number(v, int, "free dimension") for k, v in free.items()},
            batch_sizes=tuple(_number(b, int, "batch size") for b in batch_sizes),
            measure=_typed(MeasureSettings, data.get("measure") or {}, "measure"),
        )


def _plain(obj: Threads | MeasureSettings) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _number(value: object, kind: type, key: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{key} must be a number, got {value!r}")
    if kind is int and int(value) != value:
        raise ValueError(f"{key} must be an integer, got {value!r}")
    return kind(value)


def _typed(cls: type, data: object, what: str) -> Any:
    """``cls(**data)`` after checking JSON types: numbers for numbers, text for text."""
    if not isinstance(data, dict):
        raise ValueError(f"{what} must be a JSON object, got {data!r}")
    kinds = {f.name: f.type for f in fields(cls)}
    unknown = set(data) - set(kinds)
    if unknown:
        raise ValueError(f"{what} has unknown key(s) {sorted(unknown)}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        kind = kinds[key]
        if kind in ("int", "float"):
            out[key] = _number(value, int if kind == "int" else float, key)
        elif kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false, got {value!r}")
            out[key] = value
        elif kind == "str":
            if not isinstance(value, str):
                raise ValueError(f"{key} must be text, got {value!r}")
            out[key] = value
        else:
            if not isinstance(value, dict):
                raise ValueError(f"{key} must be a JSON object, got {value!r}")
            out[key] = dict(value)
    return cls(**out)
