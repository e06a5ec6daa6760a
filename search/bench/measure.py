"""What the benchmark measures itself: interleaved latency of the candidates.

Latencies measured one trial at a time drift with the load of a shared machine (about 10 % here),
which is as large as the differences being compared. So every candidate's session is loaded in
one process and timed round-robin, in short chunks, with the order rotated each round: a burst
of load slows every candidate alike, and the ratios hold.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from search.measure.latency import LatencyStats, make_runner, summarize, time_interleaved
from search.measure.runtime import create_session
from search.measure.spec import MeasureSpec


def measure_interleaved(
    paths: dict[str, Path],
    *,
    spec: MeasureSpec,
    example_input: np.ndarray,
    rounds: int = 20,
    runs_per_round: int = 10,
    warmup_runs: int = 20,
) -> dict[str, LatencyStats]:
    """Latency of every ONNX file in ``paths`` at the spec's first batch size, interleaved.

    Args:
        paths: Candidate name -> ONNX file.
        spec: The profile's measurement spec (providers, threads, batch sizes).
        example_input: One input (batch 1); it is repeated to the first batch size.
        rounds: Round-robin passes over all candidates.
        runs_per_round: Timed runs of one candidate in one pass.
        warmup_runs: Untimed runs of each candidate before the first pass.

    Returns:
        Candidate name -> latency statistics over ``rounds * runs_per_round`` runs.
    """
    if rounds < 1 or runs_per_round < 1:
        raise ValueError(
            f"rounds and runs_per_round must be >= 1, got {rounds=}, {runs_per_round=}"
        )
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
    return {name: summarize(np.concatenate(t.wall), bs) for name, t in times.items()}
