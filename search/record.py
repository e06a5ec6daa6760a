"""The one typed record that flows from a trial to storage to the report, export, bench and
confirmation; and the study's objectives.

A trial builds a :class:`TrialRecord`; the study stores :meth:`TrialRecord.to_json` as the
trial's user attribute ``record`` and tells Optuna :meth:`TrialRecord.objectives`; everything
that reads a stored trial goes through :meth:`TrialRecord.of`. The baseline the study measured
once is a :class:`Measured` record too (user attribute ``baseline``).

The latency objective is :attr:`Measured.latency_paired_ms`: the trial's latency relative to
the uncompressed baseline, timed interleaved with it in the same window
(:mod:`search.measure.paired`), times the baseline's p50 when the study started. It is an
estimate that stays comparable however loaded the machine was; the p50 as measured in the
trial's own window is :attr:`Measured.latency_measured_p50_ms`. Without pairing (a study with no
baseline to pair with) the two are equal.

Example:
    >>> r = Measured(accuracy=0.9, latency_paired_ms=2.0, latency_measured_p50_ms=2.4)
    >>> Measured.from_json(r.to_json()) == r
    True
    >>> Measured.from_json({"accuracy": 0.9, "latency_p50_ms": 2.0}).latency_paired_ms  # old
    2.0
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Self

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

# Maximize the task metric of the exported file on the validation split, minimize its paired
# latency at the profile's first batch size.
ACCURACY = "accuracy"
PAIRED = "latency_paired_ms"
OBJECTIVES = (ACCURACY, PAIRED)
DIRECTIONS: tuple[Literal["maximize", "minimize"], ...] = ("maximize", "minimize")
# Records (and confirmations) stored before 0.2 named the paired objective ``latency_p50_ms``.
_LEGACY_PAIRED = "latency_p50_ms"

JSON = dict[str, Any]


def _plain(value: object) -> Any:
    """JSON-ready (paths and numpy scalars as text/numbers), as the storage keeps it."""
    return json.loads(json.dumps(value, default=str))


@dataclass(frozen=True)
class Measured:
    """What every measured file has: the objectives and the measurement behind them.

    Attributes:
        accuracy: The task metric on the validation split (the objective; named by the task,
            e.g. mAP, in the report).
        test_accuracy: The task metric on the test split, the figure to quote (None when the
            task has no test split of its own).
        latency_paired_ms: The latency objective (ms): relative latency x the baseline's p50.
        latency_measured_p50_ms: The p50 as measured in this window (ms, moves with load).
        latency_p90_ms: The p90 as measured (ms).
        latency_cv: Coefficient of variation of the timed runs.
        latency_relative: Latency relative to the baseline timed in the same rounds.
        latency_relative_ci: Its 95 % interval ``[low, high]``.
        noisy: The paired spread stayed above the profile's ``noise_threshold``.
        busy: Other processes used the cores while it was timed (None: not known).
        peak_memory_mb: Peak resident memory of inference in a fresh process (MB).
        size_mb: Size of the measured file on disk (MB).
        measurement: :meth:`search.measure.Measurement.summary`: providers, device, every
            batch size's latency, load.
    """

    accuracy: float = math.nan
    latency_paired_ms: float = math.nan
    latency_measured_p50_ms: float | None = None
    test_accuracy: float | None = None
    latency_p90_ms: float | None = None
    latency_cv: float | None = None
    latency_relative: float | None = None
    latency_relative_ci: list[float] | None = None
    noisy: bool = False
    busy: bool | None = None
    peak_memory_mb: float | None = None
    size_mb: float | None = None
    measurement: JSON = field(default_factory=dict)

    def to_json(self) -> JSON:
        """The stored form: a JSON object with one key per field."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, data: JSON) -> Self:
        """The record stored as ``data``; unknown keys are ignored, and the objective of records
        written before 0.2 is read from ``latency_p50_ms``."""
        data = dict(data)
        if PAIRED not in data and _LEGACY_PAIRED in data:
            data[PAIRED] = data.pop(_LEGACY_PAIRED)
            data.setdefault("latency_measured_p50_ms", data[PAIRED])
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really ran on."""
        return list(self.measurement.get("providers") or [])

    def objectives(self) -> tuple[float, float]:
        """The values told to Optuna, in :data:`OBJECTIVES` order."""
        return (self.accuracy, self.latency_paired_ms)


@dataclass(frozen=True)
class TrialRecord(Measured):
    """Everything one completed trial did and measured (the user attribute ``record``).

    Attributes:
        config: The trial's :class:`~search.config.TrialConfig` as ``to_dict()``.
        sizes: Parameters and MACs after each step (``{"base"|"prune"|...: {params, macs}}``).
        steps: What each compression step recorded, by step name (``pruning`` left-alone
            layers, ``lowrank`` factorized layers, ...).
        quantize: What quantization did (types, layer types, calibration, notes).
        kernels: How many layers really ran as integer/fp16/float kernels, or why unknown.
        ran: Group -> the precision its layers really ran at.
        val_history: The validation metric after each distillation epoch.
        program: ``model.pt2``'s ``{file, bytes, sha256, ...}`` or ``{error}``.
        student: The digest of the distilled student (None without a student store).
        reused_student: ``{digest, trial}`` of the distillation it reused, or None.
        timings_s: Seconds per step.
        train_device: Where it trained (``cpu``, ``cuda:0 (NVIDIA ...)``).
        artifacts: The folder of its files; ``onnx`` the float export, ``measured_onnx`` the
            file measured.
    """

    config: JSON = field(default_factory=dict)
    sizes: JSON = field(default_factory=dict)
    steps: JSON = field(default_factory=dict)
    quantize: JSON = field(default_factory=dict)
    kernels: JSON = field(default_factory=dict)
    ran: dict[str, str] = field(default_factory=dict)
    val_history: list[float] = field(default_factory=list)
    program: JSON = field(default_factory=dict)
    student: str | None = None
    reused_student: JSON | None = None
    timings_s: dict[str, float] = field(default_factory=dict)
    train_device: str | None = None
    artifacts: str = ""
    onnx: str = ""
    measured_onnx: str = ""

    @classmethod
    def from_json(cls, data: JSON) -> Self:
        """As :meth:`Measured.from_json`; records written before the step registry kept each
        step's part at the top level (``pruning``, ``lowrank_layers``)."""
        data = dict(data)
        if "precision" in data:  # records before per-step configs kept the plan at the top
            config = dict(data.get("config") or {})
            config.setdefault("precision", data.pop("precision"))
            data["config"] = config
        if "steps" not in data:
            steps = {}
            if "pruning" in data:
                steps["prune"] = data.pop("pruning")
            if "lowrank_layers" in data:
                steps["lowrank"] = {"layers": data.pop("lowrank_layers")}
            data["steps"] = steps
        return super().from_json(data)

    @classmethod
    def of(cls, trial: FrozenTrial) -> Self | None:
        """The record of a stored trial, or None when it has none (failed, running, pruned). An
        objective the record lacks is the value the trial told Optuna."""
        data = trial.user_attrs.get("record")
        if not isinstance(data, dict):
            return None
        record = cls.from_json(data)
        told = dict(zip(OBJECTIVES, trial.values or [], strict=False))
        missing = {k: v for k, v in told.items() if math.isnan(getattr(record, k))}
        return dataclasses.replace(record, **missing) if missing else record

    @property
    def measured_file(self) -> str:
        """The path of the file measured (the float export when nothing was quantized)."""
        return self.measured_onnx or self.onnx

    @property
    def precision_plan(self) -> dict[str, str]:
        """Group -> the precision the config asked for."""
        plan = (self.config.get("quantize") or {}).get("precision") or {}
        return {str(g): str(p) for g, p in plan.items()}


@dataclass(frozen=True)
class BaselineRecord(Measured):
    """The uncompressed model measured once per study (the user attribute ``baseline``).

    Its ``latency_paired_ms`` is its own latency scale: every trial's relative latency is
    multiplied by it, so a trial's speedup over the baseline is exactly ``1 / relative``.

    Attributes:
        latency_scale_ms: The p50 the study's relative latencies are multiplied by (thread CPU
            time where the runs were timed that way; :func:`search.trial.context.latency_scale`).
        val_accuracy: The PyTorch model's validation metric (the early-stop reference).
        measured_onnx: The file measured (``artifacts/baseline/model.onnx``).
    """

    latency_scale_ms: float | None = None
    val_accuracy: float | None = None
    measured_onnx: str = ""
    # Studies scored before validation-split selection stored no ``test_accuracy``: their
    # metric is on the test split the search selected on.
    scored_on_test: bool = False

    @classmethod
    def from_json(cls, data: JSON) -> Self:
        """As :meth:`Measured.from_json`; a stored baseline without ``test_accuracy`` comes from
        a study scored on the test split (``scored_on_test``)."""
        return super().from_json({**data, "scored_on_test": "test_accuracy" not in data})

    @property
    def clock(self) -> str:
        """How the latencies it scales were timed: ``thread CPU time`` or ``wall time``."""
        first = (self.measurement.get("latency") or [{}])[0]
        return "thread CPU time" if first.get("cpu_p50_ms") is not None else "wall time"

    def speedup(self, latency_ms: float | None) -> float | None:
        """How many times faster than the baseline a (paired) latency is; None when unknown."""
        if latency_ms is None or not latency_ms > 0:
            return None
        return self.latency_paired_ms / latency_ms


def baseline_of(study: optuna.Study) -> BaselineRecord | None:
    """The uncompressed baseline the study measured once (None before it was)."""
    data = study.user_attrs.get("baseline")
    return BaselineRecord.from_json(data) if isinstance(data, dict) else None


def confirmed_figures(study: optuna.Study, number: int) -> JSON | None:
    """Trial ``number``'s figures from the front's confirmation (:mod:`search.study.confirm`)
    with how it was measured, or None when it was not confirmed. The confirmed latency is
    ``latency_paired_ms`` (confirmations before 0.2 wrote ``latency_p50_ms``)."""
    confirmed = study.user_attrs.get("confirmed") or {}
    row = (confirmed.get("trials") or {}).get(str(number))
    if row is None:
        return None
    row = dict(row)
    if PAIRED not in row and _LEGACY_PAIRED in row:
        row[PAIRED] = row.pop(_LEGACY_PAIRED)
    keys = ("at", "rounds", "runs_per_round", "clock", "load", "baseline_measured_p50_ms")
    return {**row, **{k: confirmed.get(k) for k in keys}}


def confirmed_rows(study: optuna.Study) -> dict[str, JSON]:
    """Every confirmed trial's figures by trial number (as text)."""
    confirmed = study.user_attrs.get("confirmed") or {}
    numbers = (confirmed.get("trials") or {}).keys()
    return {n: row for n in numbers if (row := confirmed_figures(study, int(n))) is not None}
