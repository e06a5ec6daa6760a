"""The benchmark over several sampler seeds: mean and spread per method, and the targets.

Plain data in, plain data out: :func:`aggregate` turns the per-run rows of
:func:`search.bench.report.summarize_runs` into one row per method; :func:`targets` checks the
default search against sequential, the single techniques and random search on the means.

Example:
    >>> stats([1.0, 2.0, 3.0])["mean"], stats([1.0, 2.0, 3.0])["std"]
    (2.0, 1.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

SINGLE = ("int8", "prune")  # the single techniques


def stats(values: Iterable[float | None]) -> dict[str, Any]:
    """Mean, sample standard deviation (ddof 1; 0 for one value), min and max of the finite
    ``values`` and the 95 % confidence interval of the mean (Student's t with ``n - 1``
    degrees of freedom; the mean itself for one value); ``n`` counts them and ``of`` counts all
    (a seed without a point within the accuracy drop has no best speedup)."""
    from search.measure.pooled import t975

    every = [v for v in values]
    finite = [float(v) for v in every if v is not None and math.isfinite(v)]
    if not finite:
        nan = float("nan")
        return {
            "mean": nan,
            "std": nan,
            "min": nan,
            "max": nan,
            "ci_low": nan,
            "ci_high": nan,
            "n": 0,
            "of": len(every),
        }
    mean = float(np.mean(finite))
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
    half = t975(len(finite) - 1) * std / math.sqrt(len(finite)) if len(finite) > 1 else 0.0
    return {
        "mean": mean,
        "std": std,
        "min": min(finite),
        "max": max(finite),
        "ci_low": mean - half,
        "ci_high": mean + half,
        "n": len(finite),
        "of": len(every),
    }


def value_at(history: Sequence[Sequence[float]], x: float) -> float:
    """The hypervolume of a ``[(x, hypervolume), ...]`` history (x ascending) at ``x``: the last
    value at or before it, 0 before the first."""
    return next((hv for hx, hv in reversed(history) if hx <= x), 0.0)


def mean_curve(histories: Sequence[Sequence[Sequence[float]]], trials: int) -> list[float]:
    """Mean hypervolume over seeds after 1, 2, ..., ``trials`` trials."""
    if not histories:
        return []
    return [float(np.mean([value_at(h, n) for h in histories])) for n in range(1, trials + 1)]


def aggregate(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method (in first-seen order): mean and spread over its seeds of the
    hypervolume, the best speedup within the drop and the wall time, and the mean
    hypervolume curve over trial count."""
    by: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by.setdefault(row["method"], []).append(row)
    out = []
    for method, runs in by.items():
        trials = runs[0]["trials"]
        out.append(
            {
                "method": method,
                "title": runs[0]["title"],
                "trials": trials,
                "seeds": [r["seed"] for r in runs],
                "hypervolume": stats(r["hypervolume"] for r in runs),
                # No point within the drop: the user keeps the float model (speedup 1).
                "best_speedup": stats(_or_one(r["best_speedup"]) for r in runs),
                "best_size_reduction": stats(r["best_size_reduction"] for r in runs),
                "wall_s": stats(r["wall_s"] for r in runs),
                "distillations": stats(r.get("distillations") for r in runs),
                "hv_by_trial": mean_curve(
                    [r["hv_history"] for r in runs if r["hv_history"]], trials
                ),
            }
        )
    return out


def _or_one(speedup: float) -> float:
    return speedup if math.isfinite(speedup) else 1.0


def _target(name: str, value: float, bar: float) -> dict[str, Any]:
    return {"target": name, "value": value, "bar": bar, "met": bool(value >= bar)}


def targets(methods: Sequence[dict[str, Any]], *, joint: Sequence[str], random_n: int) -> list:
    """Issue 18's targets on the means, for every joint method (the first is the default):

    - best speedup within the drop >= 1.25x that of ``sequential`` and >= 1.5x that of the
      best single technique (int8 alone, pruning alone);
    - hypervolume after N >= random search after ``random_n`` trials, and >= ``sequential``'s.

    ``value`` is the ratio (speedups) or the ratio of hypervolumes; ``met`` is ``value >= bar``.
    """
    by = {m["method"]: m for m in methods}
    seq = by["sequential"]
    single = max((by[s]["best_speedup"]["mean"] for s in SINGLE if s in by), default=math.nan)
    rand = by.get(f"random@{random_n}")
    out = []
    for name in joint:
        m = by[name]
        speed, hv = m["best_speedup"]["mean"], m["hypervolume"]["mean"]
        out.append(
            _target(
                f"{name}: best speedup / sequential's", speed / seq["best_speedup"]["mean"], 1.25
            )
        )
        out.append(_target(f"{name}: best speedup / best single technique's", speed / single, 1.5))
        if rand is not None:
            out.append(
                _target(f"{name}: hypervolume / random@{random_n}'s", _ratio(hv, rand), 1.0)
            )
        out.append(_target(f"{name}: hypervolume / sequential's", _ratio(hv, seq), 1.0))
    return out


def _ratio(hv: float, other: dict[str, Any]) -> float:
    ref = other["hypervolume"]["mean"]
    return hv / ref if ref > 0 else math.inf if hv > 0 else math.nan
