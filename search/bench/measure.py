"""What the benchmark measures itself: interleaved latency of the candidates.

Latencies measured one trial at a time drift with the load of a shared machine (about 10 % here),
which is as large as the differences being compared. So every candidate's session is loaded in
one process and timed round-robin, in short chunks, with the order rotated each round: a burst
of load slows every candidate alike, and the ratios hold.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from search.measure.latency import LatencyStats, summarize
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
    feeds = {name: {s.get_inputs()[0].name: feed_value} for name, s in sessions.items()}
    for name, session in sessions.items():
        for _ in range(warmup_runs):
            session.run(None, feeds[name])
    names = list(sessions)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        # Rotate the order so no candidate always runs right after the same neighbour.
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            session, feed, out = sessions[name], feeds[name], times[name]
            for _ in range(runs_per_round):
                t0 = time.perf_counter_ns()
                session.run(None, feed)
                out.append((time.perf_counter_ns() - t0) / 1e6)
    return {name: summarize(np.array(t), bs) for name, t in times.items()}
