"""How the per-group precision plan becomes Optuna parameters (the space's ``quantize.encoding``).

- ``categorical``: one categorical parameter ``precision_<group>`` per group; any plan can be
  sampled, at the price of one dimension per group (5 on the digits ResNet, 2^5 float/int8
  plans).
- ``ordinal``: one integer parameter ``quantized_groups`` = k in [0, number of groups]: the k
  least sensitive groups (the study's sensitivity pass,
  :mod:`search.compress.quantize.sensitivity`) run at the lowest precision the profile allows (int8
  on CPUs), the others stay float. One ordered dimension instead of several unordered ones, which a
  Gaussian process or TPE models far more easily; plans that skip a less sensitive group for a more
  sensitive one are not reachable. This is the "bit-allocation by sensitivity rank" of HAWQ-style
  mixed precision.

Without a sensitivity pass (an agent-measured profile, ``sensitivity: false``) the ordinal
encoding quantizes the groups in the order the space lists them.

Example:
    >>> ordinal_plan(2, groups=["stem", "mid", "fc"], order=["fc", "stem", "mid"],
    ...              precision="int8")
    {'stem': 'int8', 'mid': 'int8', 'fc': 'float'}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

Encoding = Literal["categorical", "ordinal"]
ORDINAL_PARAM = "quantized_groups"
# Lower index = fewer bits (fp16 before int16: on GPUs it is the next step after int8).
BY_BITS = ["int4", "int8", "fp16", "int16"]


def lowest_precision(choices: Sequence[str]) -> str | None:
    """The quantized precision with the fewest bits among ``choices`` (None if only float)."""
    return next((p for p in BY_BITS if p in choices), None)


def least_sensitive_first(groups: Sequence[str], order: Sequence[str] | None) -> list[str]:
    """``groups`` from least to most sensitive.

    ``order`` is the sensitivity pass's order (most sensitive first); groups it does not name
    come last, in the space's order. Without an order, the space's order itself.
    """
    if not order:
        return list(groups)
    known = [g for g in reversed(order) if g in groups]
    return known + [g for g in groups if g not in known]


def ordinal_plan(
    count: int, *, groups: Sequence[str], order: Sequence[str] | None, precision: str
) -> dict[str, str]:
    """The plan of ordinal value ``count``: the ``count`` least sensitive groups at
    ``precision``, the others float.

    Raises:
        ValueError: when ``count`` is not in ``[0, len(groups)]``.
    """
    if not 0 <= count <= len(groups):
        raise ValueError(f"0 <= count <= {len(groups)} must hold, but got {count=}")
    chosen = set(least_sensitive_first(groups, order)[:count])
    return {g: precision if g in chosen else "float" for g in groups}


def ordinal_seed(sensitivity: Mapping[str, Any], *, tolerance: float) -> dict[str, int]:
    """Optuna params of the seeded trial under the ordinal encoding: as many groups as lost at
    most ``tolerance`` alone in the sensitivity pass (they are the least sensitive ones)."""
    drops = [info["drop"] for info in sensitivity["groups"].values()]
    return {ORDINAL_PARAM: sum(1 for d in drops if d <= tolerance)}
