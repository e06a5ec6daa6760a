"""Searched values and the strict base models every space section is built from.

They live apart from ``config.py`` so a compression step can declare its own space section next
to its code (``compress/lowrank.py``) and ``config.py`` can import it without a cycle.
"""

from __future__ import annotations

from typing import Any

import optuna
from pydantic import BaseModel, ConfigDict, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


class FloatRange(_Strict):
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
        if self.low == self.high:
            return self.low
        return trial.suggest_float(name, self.low, self.high, log=self.log)


class IntRange(_Strict):
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
        if self.low == self.high:
            return self.low
        return trial.suggest_int(name, self.low, self.high, step=self.step)


def _fixed_to_range(value: Any) -> Any:
    """Let a plain number stand for a fixed range, so ``epochs: 2`` works in YAML."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"low": value, "high": value}
    return value


class _Section(_Strict):
    @model_validator(mode="before")
    @classmethod
    def _numbers_are_fixed(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        out = dict(data)
        for name, info in cls.model_fields.items():
            ann = info.annotation
            if name in out and ann in (FloatRange, IntRange):
                out[name] = _fixed_to_range(out[name])
        return out


def _bounded(rng: FloatRange | IntRange, key: str, lo: float, hi: float, hi_open: bool) -> None:
    upper_ok = rng.high < hi if hi_open else rng.high <= hi
    if rng.low < lo or not upper_ok:
        close = ")" if hi_open else "]"
        raise ValueError(
            f"{key} must lie in [{lo}, {hi}{close}, but got low={rng.low}, high={rng.high}"
        )
