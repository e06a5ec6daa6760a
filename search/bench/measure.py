"""What the benchmark measures itself: every candidate's latency paired with the float baseline.

Latencies measured one trial at a time drift with the load of a shared machine (about 10 % here),
which is as large as the differences being compared. So every candidate's session is loaded in
one process and timed round-robin, in short chunks, with the order rotated each round
(:func:`~search.measure.latency.time_interleaved`): a burst of load slows every candidate alike.

The figure compared is the study's own: the candidate's latency *relative to the float baseline
timed in the same rounds* (:func:`~search.measure.paired.relative_latency`), on the clock the
study uses for the profile (thread CPU time where ONNX Runtime runs on the calling thread,
:func:`~search.measure.latency.cpu_timed`; wall time elsewhere), scaled by the baseline's wall
p50. Ratios of separate wall-time p50s did not hold still: one file (prune 0.5 + int8) read
4.59x-6.81x faster than the baseline in four re-measurements of one session on this 2-core
machine, a spread as large as the gaps the bench judges.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from search.measure.latency import (
    Rounds,
    cpu_timed,
    make_runner,
    summarize,
    time_interleaved,
)
from search.measure.paired import relative_latency
from search.measure.runtime import create_session
from search.measure.spec import MeasureSpec


@dataclass(frozen=True)
class BenchLatency:
    """One candidate's latency in the bench's shared window.

    Attributes:
        latency_ms: ``relative * reference_p50_ms``: what the bench compares (ms, batch
            ``batch_size``); the reference's own wall p50 for the reference.
        relative: Median over rounds of the candidate's / reference's round medians (1.0 for
            the reference); ``ci_low``, ``ci_high`` its 95 % order-statistic interval.
        clock: ``cpu`` or ``wall``: what the ratio is taken of.
        p50_ms, cv, runs: The candidate's own wall-time p50, coefficient of variation and timed
            runs (these move with the load; the ratio should not).
        reference_p50_ms: The reference's wall-time p50 in the same window.
    """

    latency_ms: float
    relative: float
    ci_low: float
    ci_high: float
    clock: str
    p50_ms: float
    cv: float
    runs: int
    reference_p50_ms: float
    batch_size: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_interleaved(
    paths: dict[str, Path],
    *,
    reference: str,
    spec: MeasureSpec,
    example_input: np.ndarray,
    rounds: int = 20,
    runs_per_round: int = 10,
    warmup_runs: int = 20,
) -> dict[str, BenchLatency]:
    """Latency of every ONNX file in ``paths`` paired with ``reference``, at the spec's first
    batch size, all timed interleaved in this process.

    Args:
        paths: Candidate name -> ONNX file; ``reference`` must be among them.
        reference: The candidate every other is paired with (the float baseline).
        spec: The profile's measurement spec (providers, threads, batch sizes).
        example_input: One input (batch 1); it is repeated to the first batch size.
        rounds: Round-robin passes over all candidates.
        runs_per_round: Timed runs of one candidate in one pass.
        warmup_runs: Untimed runs of each candidate before the first pass.

    Returns:
        Candidate name -> :class:`BenchLatency` over ``rounds * runs_per_round`` runs.

    Raises:
        ValueError: ``rounds`` or ``runs_per_round`` below 1, or ``reference`` not in ``paths``.
    """
    if rounds < 1 or runs_per_round < 1:
        raise ValueError(
            f"rounds and runs_per_round must be >= 1, got {rounds=}, {runs_per_round=}"
        )
    if reference not in paths:
        raise ValueError(f"reference {reference!r} is not among the candidates")
    bs = spec.batch_sizes[0]
    one = np.asarray(example_input[:1], dtype=np.float32)
    feed_value = np.repeat(one, bs, axis=0)
    sessions = {name: create_session(path, spec) for name, path in paths.items()}
    runners = {
        name: make_runner(s, {s.get_inputs()[0].name: feed_value}) for name, s in sessions.items()
    }
    # The study's paired runs and confirmation use the same loop (search.measure.latency).
    times = time_interleaved(
        runners, rounds=rounds, runs_per_round=runs_per_round, warmup_runs=warmup_runs
    )
    return _paired(times, reference=reference, clock="cpu" if cpu_timed(spec) else "wall", bs=bs)


def _paired(
    times: dict[str, Rounds], *, reference: str, clock: str, bs: int
) -> dict[str, BenchLatency]:
    """Each runner's :class:`BenchLatency` from its timed rounds, paired with ``reference``."""
    paired = relative_latency(times, reference=reference, clock=clock)
    own = {name: summarize(np.concatenate(t.wall), bs) for name, t in times.items()}
    ref_p50 = own[reference].p50_ms
    out = {}
    for name, stats in own.items():
        p = paired.get(name)
        relative, low, high = (p.relative, p.ci_low, p.ci_high) if p else (1.0, 1.0, 1.0)
        out[name] = BenchLatency(
            latency_ms=relative * ref_p50,
            relative=relative,
            ci_low=low,
            ci_high=high,
            clock=clock,
            p50_ms=stats.p50_ms,
            cv=stats.cv,
            runs=stats.runs,
            reference_p50_ms=ref_p50,
            batch_size=bs,
        )
    return out
