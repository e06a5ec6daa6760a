"""The strict base model every space section and profile part is built from, searched values
(FloatRange/IntRange) and the interval checks shared by sections and trial configs.

They live apart from ``config.py`` so a compression step can declare its own space section next to
its code (``compress/prune/step.py``) and ``config.py`` can import it without a cycle. Nothing here
imports optuna or torch: loading a space stays cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar, cast

from pydantic import BaseModel, ConfigDict, model_validator

from search.errors import ConfigError

if TYPE_CHECKING:
    import optuna


class Strict(BaseModel):
    """Frozen, and unknown keys are errors: a typo in a YAML file never passes silently."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


@dataclass(frozen=True)
class Bounds:
    """An interval of allowed values, e.g. a prune ratio's ``[0.0, 1.0)``.

    Example:
        >>> Bounds(0.0, 1.0, hi_open=True).check(0.5, "prune_ratio")
        0.5
        >>> str(Bounds(0.0, 1.0, lo_open=True))
        '(0.0, 1.0]'
    """

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False

    def __str__(self) -> str:
        return f"{'(' if self.lo_open else '['}{self.lo}, {self.hi}{')' if self.hi_open else ']'}"

    def __contains__(self, value: float) -> bool:
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def check(self, value: float, key: str) -> float:
        """``value``, or a one-line :class:`ConfigError` naming ``key`` and the interval."""
        if value not in self:
            raise ConfigError(f"{key} must lie in {self}, but got {value}")
        return value

    def check_range(self, rng: FloatRange | IntRange, key: str) -> None:
        """Raise ValueError (pydantic turns it into the loader's one-line error) unless the
        whole searched range lies inside."""
        if rng.low not in self or rng.high not in self:
            raise ValueError(f"{key} must lie in {self}, but got low={rng.low}, high={rng.high}")


class FloatRange(Strict):
    """A searched float: ``{low, high, log}``. A plain number in YAML means a fixed value."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> FloatRange:
        if self.low > self.high:
            raise ValueError(f"low <= high must hold, but got low={self.low}, high={self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, but got low={self.low}")
        return self

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        """Optuna's ``suggest_float`` under ``name``; a fixed range is no parameter."""
        if self.low == self.high:
            return self.low
        return trial.suggest_float(name, self.low, self.high, log=self.log)


class IntRange(Strict):
    """A searched integer: ``{low, high, step}``. A plain integer in YAML means a fixed value."""

    low: int
    high: int
    step: int = 1

    @model_validator(mode="after")
    def _check(self) -> IntRange:
        if self.low > self.high:
            raise ValueError(f"low <= high must hold, but got low={self.low}, high={self.high}")
        return self

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        """Optuna's ``suggest_int`` under ``name``; a fixed range is no parameter."""
        if self.low == self.high:
            return self.low
        return trial.suggest_int(name, self.low, self.high, step=self.step)


# What Optuna stores for a categorical choice (its ``CategoricalChoiceType``, named here so the
# module needs no optuna import at run time).
C = TypeVar("C", bound=None | bool | int | float | str)


def choose(trial: optuna.Trial, name: str, choices: list[C]) -> C:
    """A categorical suggestion; a single choice is fixed and not a parameter."""
    if len(choices) == 1:
        return choices[0]
    # Optuna returns one of ``choices``; its overloads type the result per choice type only.
    return cast(C, trial.suggest_categorical(name, choices))


def _fixed_to_range(value: object) -> object:
    """Let a plain number stand for a fixed range, so ``epochs: 2`` works in YAML."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"low": value, "high": value}
    return value


class Section(Strict):
    """A space section: a plain number given for a FloatRange/IntRange field fixes it, and a
    single value given for a field named in ``CHOICES`` (a list of choices) fixes that choice
    (``importance: l2`` is ``importance: [l2]``)."""

    CHOICES: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _numbers_are_fixed(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, info in cls.model_fields.items():
            if name in out and info.annotation in (FloatRange, IntRange):
                out[name] = _fixed_to_range(out[name])
        for name in cls.CHOICES:
            if isinstance(out.get(name), (bool, str)):
                out[name] = [out[name]]
        return out
