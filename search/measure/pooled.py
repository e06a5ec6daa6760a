"""One confirmation timed in several fresh processes, pooled into one figure per model with an
interval that covers the variation between the processes.

Why several processes: the interval of one process's paired ratio
(:func:`~search.measure.paired.median_ci`, over its rounds) says how well that process knows
its own median, not what the next process will read. Between processes the ratio moved more
than within one (facts: a front confirmed at 6.2-6.6x re-confirmed at 4.5-4.9x eleven minutes
later; an int8 model's p50 was bimodal across processes while its float baseline was stable):
memory layout, which core, and what else ran then differ from one process to the next.

How they are pooled, per model, from ``k`` processes each with its ratio ``r_i`` and 95 %
interval ``[lo_i, hi_i]``:

- the figure is the median of the ``r_i`` (one odd process cannot move it);
- the interval is the smallest one that holds every ``[lo_i, hi_i]`` and the 95 % prediction
  interval for one more process, ``exp(mean(log r) +- t(0.975, k-1) * s * sqrt(1 + 1/k))``
  with ``s`` the sample standard deviation of ``log r_i`` (a ratio varies by a factor, so on a
  log scale; Student's t because ``s`` is estimated from ``k`` values). So it covers the
  processes measured and what a new one is expected to read;
- ``s`` is at least the median of the ``s`` of the models timed in the same processes: with
  three processes, three values can agree by chance (the CI run of stop 32: a trial's interval
  came out +-3 % and the next confirmation, seconds later, landed outside it), while the
  models beside it, timed in the same processes, show the spread a new process brings.

Between sessions: processes in one session do not see what moves every ratio from one session
to the next (the OpenVINO bench of stop 32 re-confirmed an hour later 5-41 % faster against
its baseline, and 61 of 77 candidates left their intervals). Each model a study measured has a
ratio from another session, the trial's own. :func:`session_spread` takes
``d = log(confirmed ratio / earlier ratio)`` over the models measured in both, and its root mean
square ``s`` (the mean shift counts: a session moves them all) as the spread of a later
session's ratio about the confirmed one; :func:`widened` makes an interval's half-width on the
log scale ``sqrt(h**2 + (1.96 * s)**2)``, ``h`` its own. On that OpenVINO bench ``s`` was 0.15
(12 quiet pairs), and 76 of its 77 candidates re-confirmed inside the widened intervals (16
inside the processes-only ones; ``benchmarks/session_spread.py``). This is conservative: ``d``
already holds both sessions' process noise, which ``h`` counts again, and most of a session's
move is common to all models (there the re-confirmation moved the 77 candidates by -0.18 +-
0.05 on the log scale, mean +- standard deviation), so a comparison between two models moves
less than either interval says.

A process whose window was busy (other processes used more than the threshold of the cores,
:class:`~search.measure.load.LoadWatch`) makes the pooled result ``contended``.

Example:
    >>> low, high = prediction_interval([0.50, 0.52, 0.51])
    >>> round(low, 3), round(high, 3)
    (0.461, 0.565)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

# Student's t, two-sided 95 %, by degrees of freedom (1-30); beyond: the normal 1.96 upwards.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
         2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
         2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


def t975(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom (``df`` >= 1)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df


def log_spread(values: Sequence[float]) -> float | None:
    """Sample standard deviation of ``log(values)`` (None for fewer than two values)."""
    if len(values) < 2:
        return None
    return float(np.std(np.log(np.asarray(values, dtype=np.float64)), ddof=1))


def prediction_interval(
    values: Sequence[float], *, min_spread: float = 0.0
) -> tuple[float, float]:
    """95 % prediction interval for one more positive ratio, from ``values`` on a log scale,
    taking their log standard deviation as at least ``min_spread``; with one value, that value
    on both ends (nothing is known of the spread).

    Raises:
        ValueError: no values, or one that is not positive.
    """
    if not values or min(values) <= 0:
        raise ValueError(f"prediction_interval needs positive values, got {list(values)}")
    logs = np.log(np.asarray(values, dtype=np.float64))
    k = len(logs)
    if k == 1:
        return float(values[0]), float(values[0])
    spread = max(float(np.std(logs, ddof=1)), min_spread)
    half = t975(k - 1) * spread * math.sqrt(1 + 1 / k)
    mean = float(np.mean(logs))
    return math.exp(mean - half), math.exp(mean + half)


MIN_SESSION_PAIRS = 5  # models measured in both sessions before a spread is estimated


def session_spread(pairs: Sequence[tuple[float, float, bool]]) -> dict[str, Any]:
    """The spread between sessions from ``(confirmed ratio, earlier ratio, earlier was busy)``
    per model: the earlier measurements taken on a quiet machine when there are at least
    :data:`MIN_SESSION_PAIRS` of them, all otherwise (a busy one moves more).

    Returns:
        ``{"spread", "pairs", "busy"}``: ``s`` (None with fewer than
        :data:`MIN_SESSION_PAIRS` pairs: not estimated), how many pairs gave it, and whether
        busy earlier measurements were among them.
    """
    valid = [
        (now, before, busy)
        for now, before, busy in pairs
        if math.isfinite(now) and math.isfinite(before) and now > 0 and before > 0
    ]
    quiet = [math.log(now / before) for now, before, busy in valid if not busy]
    busy = len(quiet) < MIN_SESSION_PAIRS
    shifts = [math.log(now / before) for now, before, _ in valid] if busy else quiet
    if len(shifts) < MIN_SESSION_PAIRS:
        return {"spread": None, "pairs": len(shifts), "busy": None}
    return {
        "spread": math.sqrt(float(np.mean(np.square(shifts)))),
        "pairs": len(shifts),
        "busy": busy,
    }


def widened(relative: float, low: float, high: float, spread: float) -> tuple[float, float]:
    """``[low, high]`` about ``relative`` widened to cover a shift between sessions of log
    standard deviation ``spread`` (see the module); unchanged for ``spread`` 0."""
    wide = 1.96 * spread
    down = math.hypot(math.log(relative / low), wide)
    up = math.hypot(math.log(high / relative), wide)
    return relative * math.exp(-down), relative * math.exp(up)


def pool_paired(
    per_process: Sequence[dict[str, Any]], *, min_spread: float = 0.0
) -> dict[str, Any]:
    """One model's :meth:`~search.measure.paired.PairedLatency.to_dict` from each process ->
    the pooled one (same keys, plus ``processes`` and ``process_relatives``); ``min_spread``:
    the least log standard deviation between processes to assume (see the module)."""
    rel = [float(p["relative"]) for p in per_process]
    low, high = prediction_interval(rel, min_spread=min_spread)
    low = min([low] + [float(p["ci_low"]) for p in per_process])
    high = max([high] + [float(p["ci_high"]) for p in per_process])
    relative = float(np.median(rel))
    first = per_process[0]
    return {
        "relative": relative,
        "clock": first["clock"],
        "ci_low": low,
        "ci_high": high,
        "rounds": sum(int(p["rounds"]) for p in per_process),
        "runs_per_round": first["runs_per_round"],
        "candidate_p50_ms": float(np.median([p["candidate_p50_ms"] for p in per_process])),
        "reference_p50_ms": float(np.median([p["reference_p50_ms"] for p in per_process])),
        "attempts": sum(int(p.get("attempts", 1)) for p in per_process),
        "spread": (high - low) / 2 / relative if relative > 0 else 0.0,
        "confidence": first.get("confidence", 0.95),
        "processes": len(per_process),
        "process_relatives": rel,
    }


def pool_load(loads: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The processes' :meth:`~search.measure.load.Load.to_dict` windows as one: the largest
    share other processes used, busy when any window was."""
    shares = [x["other_cpu"] for x in loads if x.get("other_cpu") is not None]
    flags = [x["busy"] for x in loads if x.get("busy") is not None]
    last = loads[-1]
    return {
        "loadavg": last.get("loadavg"),
        "cores": last.get("cores"),
        "seconds": round(sum(float(x.get("seconds") or 0.0) for x in loads), 3),
        "other_cpu": max(shares) if shares else None,
        "busy": any(flags) if flags else None,
        "threshold": last.get("threshold"),
    }


def pool_timings(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several :func:`~search.measure.confirmation.time_files` results (one per fresh process,
    the same models) -> one, in the same format, with ``processes``, ``per_process`` (each
    process's ratios and load), ``contended`` and ``min_spread`` (the median log standard
    deviation between processes over the models, the least each model's interval assumes).

    Raises:
        ValueError: no results, or results that timed different models.
    """
    if not results:
        raise ValueError("pool_timings needs at least one process's result")
    names = set(results[0]["paired"])
    if any(set(r["paired"]) != names for r in results):
        raise ValueError("the processes timed different models")
    load = pool_load([r["load"] for r in results])
    per_model = {n: [float(r["paired"][n]["relative"]) for r in results] for n in names}
    spreads = [s for s in map(log_spread, per_model.values()) if s is not None]
    floor = float(np.median(spreads)) if spreads else 0.0
    return {
        "clock": results[0]["clock"],
        "rounds": sum(int(r["rounds"]) for r in results),
        "runs_per_round": results[0]["runs_per_round"],
        "load": load,
        "reference_p50_ms": float(np.median([r["reference_p50_ms"] for r in results])),
        "device": results[0]["device"],
        "paired": {
            n: pool_paired([r["paired"][n] for r in results], min_spread=floor)
            for n in sorted(names)
        },
        "min_spread": floor,
        "processes": len(results),
        "per_process": [
            {
                "relative": {n: r["paired"][n]["relative"] for n in sorted(names)},
                "load": r["load"],
            }
            for r in results
        ],
        "contended": bool(load["busy"]),
    }
