"""The 2-D hypervolume of (metric up, latency down) points: the one implementation that the
report and the benchmark share.

The report draws the raw area (metric x ms) against a reference it fixes for one study; the
benchmark divides the area by the largest one its reference allows, so methods and tasks compare
on one scale (``scale`` below).

Example:
    >>> round(hypervolume([(0.96, 8.0), (0.90, 2.0)], reference=(0.0, 11.0)), 6)  # 0.9*9+0.06*3
    8.28
    >>> round(hypervolume([(0.90, 0.5)], reference=(0.85, 1.0), scale=0.05 * 1.0), 6)
    0.5
"""

from __future__ import annotations

from collections.abc import Iterable


def hypervolume(
    points: Iterable[tuple[float, float]],
    *,
    reference: tuple[float, float],
    scale: float = 1.0,
) -> float:
    """Area that ``(metric, latency)`` points dominate up to ``reference``, divided by ``scale``.

    The metric is maximized and the latency minimized. A point adds area only where it beats the
    reference in both (metric above ``reference[0]``, latency below ``reference[1]``); dominated
    points add nothing.

    Args:
        points: ``(metric, latency)`` pairs, in any order; units are the caller's (e.g. ms, or
            latency as a ratio to a baseline's).
        reference: ``(metric, latency)`` of the reference point; fixed for a whole history so
            the hypervolume can only rise as points are added.
        scale: Divisor of the area (the benchmark's normalization); must be > 0.

    Raises:
        ValueError: when ``scale`` is not positive.
    """
    if not scale > 0:
        raise ValueError(f"scale must be > 0, but got {scale=}")
    ref_metric, ref_latency = reference
    area, best = 0.0, ref_metric
    # Sweep from fastest to slowest; each point adds the metric it gains over the faster ones.
    for metric, latency in sorted(points, key=lambda p: (p[1], -p[0])):
        if metric > best and latency < ref_latency:
            area += (metric - best) * (ref_latency - latency)
            best = metric
    return area / scale
