"""Plain-data scoring of a method's points: Pareto front, hypervolume, best point within a drop.

Every point is ``(accuracy, latency_ms)``. Both objectives are normalized against the float
baseline so the reference point is fixed and means the same for every method and task:
latency becomes the ratio to the baseline's (lower is better, reference 1.0: no speedup), and
accuracy is referenced at ``baseline accuracy - ref_drop``. The hypervolume is divided by its
largest possible value, ``1.0 * ref_drop``, so 0 means "nothing faster than the baseline within
``ref_drop`` accuracy" and 1 means "zero latency at the baseline's accuracy".

Example:
    >>> pts = [Point(accuracy=0.90, latency_ms=0.5)]
    >>> round(hypervolume(pts, base_accuracy=0.90, base_latency_ms=1.0, ref_drop=0.05), 3)
    0.5
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from search.report.hypervolume import hypervolume as area

REF_DROP = 0.05  # accuracy reference: 5 points below the baseline
MAX_DROP = 0.01  # "within 1 % accuracy drop": 1 percentage point below the baseline


@dataclass(frozen=True)
class Point:
    """One measured model of a method: a trial, a fixed-ratio pruning, the int8 baseline."""

    accuracy: float
    latency_ms: float
    size_bytes: int = 0
    label: str = ""
    order: int = 0  # 1-based position in the method's sequence of trials (0: not a trial)
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def dominates(a: Point, b: Point) -> bool:
    """``a`` is at least as good as ``b`` in both objectives and better in one."""
    no_worse = a.accuracy >= b.accuracy and a.latency_ms <= b.latency_ms
    better = a.accuracy > b.accuracy or a.latency_ms < b.latency_ms
    return no_worse and better


def pareto_front(points: Iterable[Point]) -> list[Point]:
    """The non-dominated points, fastest first."""
    pts = list(points)
    front = [p for p in pts if not any(dominates(q, p) for q in pts)]
    return sorted(front, key=lambda p: (p.latency_ms, -p.accuracy))


def near_front(points: Sequence[Point], *, margin: float = 0.1) -> list[Point]:
    """Points no other point beats by more than ``margin`` in latency at equal or better accuracy.

    Latencies measured one trial at a time on a noisy machine can be off by about 10 %, so the
    candidates re-measured side by side are the front plus the points that noise could have
    pushed off it.
    """
    return [
        p
        for p in points
        if not any(
            q.accuracy >= p.accuracy and q.latency_ms < p.latency_ms * (1 - margin) for q in points
        )
    ]


def hypervolume(
    points: Iterable[Point],
    *,
    base_accuracy: float,
    base_latency_ms: float,
    ref_drop: float = REF_DROP,
) -> float:
    """Normalized 2-D hypervolume of ``points`` against the fixed reference point.

    The reference point is (latency ratio 1.0, accuracy ``base_accuracy - ref_drop``); points
    slower than the baseline or below that accuracy add nothing. This is the report's
    :func:`search.report.hypervolume.hypervolume` with that reference, divided by its largest
    possible value (``base_latency_ms * ref_drop``).
    """
    if base_latency_ms <= 0 or ref_drop <= 0:
        raise ValueError(f"base_latency_ms and ref_drop must be > 0, got {base_latency_ms=}")
    return area(
        ((p.accuracy, p.latency_ms) for p in points),
        reference=(base_accuracy - ref_drop, base_latency_ms),
        scale=base_latency_ms * ref_drop,
    )


def eligible(points: Iterable[Point], *, base_accuracy: float, max_drop: float) -> list[Point]:
    """Points whose accuracy is at most ``max_drop`` below the baseline's."""
    return [p for p in points if p.accuracy >= base_accuracy - max_drop - 1e-12]


def best_speedup(
    points: Iterable[Point],
    *,
    base_accuracy: float,
    base_latency_ms: float,
    max_drop: float = MAX_DROP,
) -> tuple[float, Point | None]:
    """The largest latency speedup over the baseline among points within ``max_drop``."""
    ok = eligible(points, base_accuracy=base_accuracy, max_drop=max_drop)
    if not ok:
        return float("nan"), None
    best = min(ok, key=lambda p: (p.latency_ms, -p.accuracy))
    return base_latency_ms / best.latency_ms, best


def best_size_reduction(
    points: Iterable[Point],
    *,
    base_accuracy: float,
    base_size_bytes: int,
    max_drop: float = MAX_DROP,
) -> tuple[float, Point | None]:
    """The largest size reduction (baseline bytes / bytes) among points within ``max_drop``."""
    ok = [
        p
        for p in eligible(points, base_accuracy=base_accuracy, max_drop=max_drop)
        if p.size_bytes > 0
    ]
    if not ok:
        return float("nan"), None
    best = min(ok, key=lambda p: (p.size_bytes, -p.accuracy))
    return base_size_bytes / best.size_bytes, best


def hypervolume_history(
    points: Sequence[Point],
    *,
    base_accuracy: float,
    base_latency_ms: float,
    ref_drop: float = REF_DROP,
) -> list[tuple[int, float]]:
    """``(trials so far, hypervolume)`` after each trial, points taken in their ``order``."""
    pts = sorted((p for p in points if p.order > 0), key=lambda p: p.order)
    out = []
    for i, p in enumerate(pts):
        hv = hypervolume(
            pts[: i + 1],
            base_accuracy=base_accuracy,
            base_latency_ms=base_latency_ms,
            ref_drop=ref_drop,
        )
        out.append((p.order, hv))
    return out
