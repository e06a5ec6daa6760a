"""Numbers as users read them: one formatter for the console, the report and the export README.

Example:
    >>> fmt(0.12345, ".3f")
    '0.123'
    >>> fmt(float("nan"), ".3f")
    '-'
    >>> fmt(2.5, ".2f", "x")
    '2.50x'
"""

from __future__ import annotations

import math
from typing import Any


def is_number(x: Any) -> bool:
    """Whether ``x`` is a finite real number (booleans and NaN are not)."""
    if isinstance(x, bool):
        return False
    try:
        return math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def fmt(x: Any, spec: str, suffix: str = "", *, missing: str = "-") -> str:
    """``x`` formatted with ``spec`` plus ``suffix``, or ``missing`` when it is not a finite
    number (None, NaN, a string)."""
    return f"{float(x):{spec}}{suffix}" if is_number(x) else missing
