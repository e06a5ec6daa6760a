"""Paired latency: a candidate timed interleaved with a reference, as a ratio with its interval.

Why a ratio: on a shared machine the absolute p50 of a model moves with the load (facts: a
baseline read 2.89 ms under load against 0.94 ms quiet), so two trials measured minutes apart
compare the load as much as the models. Timed in alternating rounds in the same window
(:func:`~search.measure.latency.time_interleaved`), candidate and reference see the same load,
and the ratio of their round medians stays put (``tests/measure/test_paired.py`` measures both
under a background load). Where the run is the calling thread's own work (the CPU provider with
one intra-op thread: :func:`~search.measure.latency.cpu_timed`) the ratio is taken of the
runs' thread CPU times, ``clock="cpu"``: wall-time ratios break when one model runs longer than
the scheduler's time slice and the other does not (measured here: 0.13 quiet, 0.03-0.08 under
four busy processes, while the CPU-time ratio read 0.27 and 0.28-0.29). Elsewhere (GPUs, a
thread pool) it is taken of wall times, ``clock="wall"``.
Each round gives one ratio, ``median(candidate) / median(reference)``;
the estimate is the median of the rounds' ratios and its interval the distribution-free
order-statistic confidence interval of that median (binomial ranks; no normality assumed), so a
few preempted rounds move neither.

The study's latency objective is this ratio times the baseline's p50 recorded when the study
started (:func:`search.trial.context.measurement_record`): a constant scale in milliseconds, so
trials measured under different loads stay comparable and the objective still reads as a
latency.

Example:
    >>> import numpy as np
    >>> from search.measure.latency import Rounds
    >>> times = {"trial": Rounds([np.full(5, 0.5)] * 9, [np.full(5, 0.4)] * 9),
    ...          "baseline": Rounds([np.full(5, 1.0)] * 9, [np.full(5, 1.0)] * 9)}
    >>> round(relative_latency(times, reference="baseline", clock="wall")["trial"].relative, 3)
    0.5
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any

import numpy as np

from search.measure.latency import Rounds, time_interleaved
from search.measure.load import Load, LoadWatch

if TYPE_CHECKING:
    from search.measure.spec import MeasureSettings

CONFIDENCE = 0.95


@dataclass(frozen=True)
class PairedLatency:
    """A candidate's latency relative to a reference timed in the same window.

    Attributes:
        relative: Median over rounds of (candidate round median / reference round median);
            0.5 means twice as fast as the reference.
        clock: ``cpu`` (thread CPU time of each run) or ``wall``: what the ratio is taken of.
        ci_low, ci_high: ``CONFIDENCE`` interval of ``relative`` (order statistics of the
            rounds' ratios).
        rounds: Rounds the ratio is taken over (pooled over all attempts).
        runs_per_round: Timed runs of each model in one round.
        candidate_p50_ms, reference_p50_ms: Absolute p50 of each over all its runs in the
            window: these move with the load, the ratio should not.
        attempts: How many times the rounds were timed (1 + repeats for a noisy spread).
        steady: Both reached a steady state in their warm-up before the rounds
            (:func:`~search.measure.latency.warm_up`); None where no steady-state rule ran.
        processes: Fresh processes the figure is pooled over (:mod:`search.measure.pooled`);
            1: one window of one process.
        process_relatives: Each process's own ratio, when pooled.
    """

    relative: float
    clock: str
    ci_low: float
    ci_high: float
    rounds: int
    runs_per_round: int
    candidate_p50_ms: float
    reference_p50_ms: float
    attempts: int = 1
    steady: bool | None = None
    processes: int = 1
    process_relatives: tuple[float, ...] = ()

    @property
    def spread(self) -> float:
        """Half-width of the confidence interval as a share of ``relative`` (0.05 = +-5 %)."""
        return (self.ci_high - self.ci_low) / 2 / self.relative if self.relative > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = {**asdict(self), "spread": self.spread, "confidence": CONFIDENCE}
        out["process_relatives"] = list(self.process_relatives)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairedLatency:
        """The inverse of :meth:`to_dict` (derived keys are dropped)."""
        out = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        if "process_relatives" in out:
            out["process_relatives"] = tuple(out["process_relatives"])
        return cls(**out)


def median_ci(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Distribution-free confidence interval of the median of ``values``.

    With ``n`` values sorted, the interval is ``[x_(k), x_(n-k+1)]`` for the largest ``k`` with
    ``P(Binomial(n, 1/2) <= k - 1) <= (1 - confidence) / 2`` (e.g. the 6th and 15th of 20).
    Fewer than 6 values cannot reach 95 %: the interval is then their range.
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = len(x)
    if n == 0:
        raise ValueError("median_ci needs at least one value")
    tail, cdf, k = (1.0 - confidence) / 2, 0.0, 0
    for j in range(n):
        cdf += math.comb(n, j) / 2.0**n
        if cdf > tail:
            break
        k = j + 1
    k = max(k, 1)
    return float(x[k - 1]), float(x[n - k])


def relative_latency(
    times: dict[str, Rounds], *, reference: str, clock: str = "wall", attempts: int = 1
) -> dict[str, PairedLatency]:
    """Every other runner's latency relative to ``reference``, round by round.

    Args:
        times: Name -> :class:`~search.measure.latency.Rounds`, as
            :func:`~search.measure.latency.time_interleaved` returns (the same rounds for all).
        reference: The name whose round medians divide the others'.
        clock: ``cpu`` or ``wall``: which of the runs' times the ratio is taken of.
        attempts: Recorded in the result (how many timings were pooled into ``times``).

    Raises:
        ValueError: ``reference`` is not among ``times``, or an unknown ``clock``.
    """
    if reference not in times:
        raise ValueError(f"reference {reference!r} is not among the timed runners {list(times)}")
    if clock not in ("cpu", "wall"):
        raise ValueError(f"clock must be 'cpu' or 'wall', got {clock!r}")
    ref = np.array([np.median(r) for r in getattr(times[reference], clock)])
    ref_warm = times[reference].warmup
    out = {}
    for name, rounds in times.items():
        if name == reference:
            continue
        ratios = np.array([np.median(r) for r in getattr(rounds, clock)]) / ref
        low, high = median_ci(ratios)
        warm = rounds.warmup
        steady = None if warm is None or ref_warm is None else warm.steady and ref_warm.steady
        out[name] = PairedLatency(
            relative=float(np.median(ratios)),
            clock=clock,
            ci_low=low,
            ci_high=high,
            rounds=len(ratios),
            runs_per_round=len(rounds.wall[0]),
            candidate_p50_ms=float(np.median(np.concatenate(rounds.wall))),
            reference_p50_ms=float(np.median(np.concatenate(times[reference].wall))),
            attempts=attempts,
            steady=steady,
        )
    return out


def time_paired(
    runners: dict[str, Callable[[], object]],
    *,
    reference: str,
    settings: MeasureSettings,
    clock: str = "wall",
    rounds: int | None = None,
) -> tuple[dict[str, Rounds], dict[str, PairedLatency], Load]:
    """Time ``runners`` interleaved and pair each with ``reference``, repeating while noisy.

    ``settings`` is a :class:`~search.measure.spec.MeasureSettings`: ``rounds`` (default
    ``paired_rounds``) rounds of ``paired_runs`` runs; while any candidate's spread is above
    ``noise_threshold`` the rounds are timed again, at most ``max_repeats`` more times, and
    pooled (more rounds narrow the interval; no attempt's rounds are thrown away). The load is
    watched over the whole window. ``clock`` as in :func:`relative_latency`.

    Returns:
        The pooled times, each candidate's :class:`PairedLatency`, and the window's load.
    """
    rounds = rounds or settings.paired_rounds
    per_round = settings.paired_runs
    with LoadWatch(threshold=settings.busy_threshold) as watch:
        times = time_interleaved(
            runners, rounds=rounds, runs_per_round=per_round, settings=settings, clock=clock
        )
        attempts = 1
        paired = relative_latency(times, reference=reference, clock=clock)
        while attempts <= settings.max_repeats and any(
            p.spread > settings.noise_threshold for p in paired.values()
        ):
            more = time_interleaved(
                runners, rounds=rounds, runs_per_round=per_round, warmup_runs=0
            )
            times = {name: times[name].extend(more[name]) for name in times}
            attempts += 1
            paired = relative_latency(times, reference=reference, clock=clock, attempts=attempts)
    assert watch.load is not None
    return times, paired, watch.load
