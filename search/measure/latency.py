"""Latency of one session: warm-up by count and time, repeats until count and time, percentiles."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Latency in milliseconds over ``runs`` timed runs at ``batch_size``."""

    batch_size: int
    runs: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    std_ms: float
    cv: float
    min_ms: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(times_ms: np.ndarray, batch_size: int) -> LatencyStats:
    t = np.asarray(times_ms, dtype=np.float64)
    mean = float(t.mean())
    std = float(t.std(ddof=1)) if len(t) > 1 else 0.0
    p50, p90, p99 = (float(v) for v in np.percentile(t, [50, 90, 99]))
    return LatencyStats(
        batch_size=batch_size,
        runs=len(t),
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        mean_ms=mean,
        std_ms=std,
        cv=std / mean if mean > 0 else 0.0,
        min_ms=float(t.min()),
    )


def measure_latency(session: Any, feed: dict[str, np.ndarray], settings: Any) -> LatencyStats:
    """Time ``session.run`` on the same ``feed`` until both the run and time minimums are met."""
    batch_size = int(next(iter(feed.values())).shape[0])
    start = time.perf_counter()
    done = 0
    while done < settings.warmup_runs or time.perf_counter() - start < settings.warmup_seconds:
        session.run(None, feed)
        done += 1
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < settings.max_runs and (
        len(times) < settings.min_runs or time.perf_counter() - start < settings.min_seconds
    ):
        t0 = time.perf_counter_ns()
        session.run(None, feed)
        times.append((time.perf_counter_ns() - t0) / 1e6)
    return summarize(np.array(times), batch_size)
