"""Axis ranges of the report's figures: the data with a little margin, never past a metric's
bounds (plotly's own autorange stretches one value to 0..2x it: an accuracy axis to 1.75).

Example:
    >>> padded_range([0.875], bounds=UNIT)
    (0.83125, 0.91875)
    >>> padded_range([0.9, 1.0], bounds=UNIT)
    (0.895, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable

Bounds = tuple[float | None, float | None]

UNIT: Bounds = (0.0, 1.0)  # accuracy, mAP, mIoU and the other shares of a whole
NON_NEGATIVE: Bounds = (0.0, None)  # latencies, memory, sizes, hypervolume
OPEN: Bounds = (None, None)
PAD = 0.05  # the margin each side, as a share of the data's span (or of a single value)


def finite(values: Iterable[object]) -> list[float]:
    """The values that are finite numbers (NaN, None and text dropped), as floats."""
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float):
            try:
                v = float(v)  # type: ignore[arg-type]  # numpy scalars
            except (TypeError, ValueError):
                continue
        if math.isfinite(float(v)):
            out.append(float(v))
    return out


def metric_bounds(values: Iterable[object]) -> Bounds:
    """The bounds of the task's metric as the figures read it: [0, 1] when every value seen
    (trials and baseline) lies in it (accuracy and the other shares), else open.

    The study does not record the metric's range; a metric that only happens to lie in [0, 1]
    is drawn within [0, 1], which still holds every value."""
    seen = finite(values)
    return UNIT if seen and all(0.0 <= v <= 1.0 for v in seen) else OPEN


def padded_range(
    values: Iterable[object], *, bounds: Bounds = OPEN, pad: float = PAD
) -> tuple[float, float] | None:
    """``(low, high)`` covering ``values`` with a margin of ``pad`` x their span each side,
    clipped to ``bounds``; one distinct value gets ``pad`` x its size (or x the bounds' width,
    or 1, for zero) each side. ``None`` when there is no finite value."""
    seen = finite(values)
    if not seen:
        return None
    low, high = min(seen), max(seen)
    lo_bound, hi_bound = bounds
    span = high - low
    if span == 0.0:
        width = hi_bound - lo_bound if lo_bound is not None and hi_bound is not None else 1.0
        span = abs(low) or width
    margin = pad * span
    low, high = low - margin, high + margin
    if lo_bound is not None:
        low = max(low, lo_bound)
    if hi_bound is not None:
        high = min(high, hi_bound)
    return low, high
