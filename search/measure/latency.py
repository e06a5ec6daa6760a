"""Latency of one session: warm-up by count and time, repeats until count and time, percentiles."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
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
    # 1.4826 * median absolute deviation / median: the spread of typical runs. On a shared
    # machine a few preempted runs inflate ``cv`` while p50 and this stay put.
    robust_cv: float = 0.0

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
        robust_cv=float(1.4826 * np.median(np.abs(t - p50)) / p50) if p50 > 0 else 0.0,
    )


def make_runner(session: Any, feed: dict[str, np.ndarray]) -> Callable[[], Any]:
    """A zero-argument call that runs ``session`` once on ``feed``.

    On CUDA and TensorRT the inputs are copied to the device once and the outputs stay there
    (I/O binding), so the timing is the model's, not the PCIe or unified-memory copies'. This
    path is written against onnxruntime-gpu's documented API but has not run on a GPU here.
    """
    from search.measure.runtime import GPU_PROVIDERS

    first = session.get_providers()[0]
    if first not in GPU_PROVIDERS:
        return lambda: session.run(None, feed)
    import onnxruntime as ort

    device_id = 0
    for name, opts in session.get_provider_options().items():
        if name == first and "device_id" in opts:
            device_id = int(opts["device_id"])
    binding = session.io_binding()
    # The device copies must outlive the binding, so keep references in the closure.
    on_device = {
        name: ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(value), "cuda", device_id)
        for name, value in feed.items()
    }
    for name, value in on_device.items():
        binding.bind_ortvalue_input(name, value)
    for out in session.get_outputs():
        binding.bind_output(out.name, "cuda", device_id)

    def run() -> Any:
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return on_device

    return run


def measure_latency(session: Any, feed: dict[str, np.ndarray], settings: Any) -> LatencyStats:
    """Time one run on the same ``feed`` until both the run and time minimums are met.

    Warm-up runs until both ``warmup_runs`` and ``warmup_seconds`` are reached (first runs
    allocate arenas, tune kernels, build TensorRT engines). The garbage collector is paused while
    timing so a collection of the caller's objects cannot land inside one run.
    """
    batch_size = int(next(iter(feed.values())).shape[0])
    run = make_runner(session, feed)
    start = time.perf_counter()
    done = 0
    while done < settings.warmup_runs or time.perf_counter() - start < settings.warmup_seconds:
        run()
        done += 1
    times: list[float] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        while len(times) < settings.max_runs and (
            len(times) < settings.min_runs or time.perf_counter() - start < settings.min_seconds
        ):
            t0 = time.perf_counter_ns()
            run()
            times.append((time.perf_counter_ns() - t0) / 1e6)
    finally:
        if gc_was_enabled:
            gc.enable()
    return summarize(np.array(times), batch_size)
