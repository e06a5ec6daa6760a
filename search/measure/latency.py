"""Latency of one session: warm-up by count and time, repeats until count and time, percentiles;
and the one interleaved loop (:func:`time_interleaved`) that paired runs, the front's
confirmation and the benchmark share.

Every timed run records wall time and, beside it, the CPU time of the calling thread
(``time.thread_time_ns``). Where ONNX Runtime runs the whole model in the calling thread (the CPU
provider with one intra-op thread, :func:`cpu_timed`), that CPU time is the run's own work:
time the thread spent preempted by other processes is not in it, so it is the latency the run
would have had on a quiet core. On a shared machine this is what keeps a small and a large
model's ratio steady when one of them runs longer than the scheduler's time slice and the other
does not (measured in ``tests/measure/test_paired.py``).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnxruntime as ort

    from search.measure.spec import MeasureSettings, MeasureSpec


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
    # p50 of the calling thread's CPU time per run (see the module docstring); None where the
    # runs were not timed that way.
    cpu_p50_ms: float | None = None

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(
    times_ms: np.ndarray, batch_size: int, cpu_ms: np.ndarray | None = None
) -> LatencyStats:
    """Percentiles and spread of wall times ``times_ms``; ``cpu_ms`` (the same runs' thread CPU
    times) adds ``cpu_p50_ms``."""
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
        cpu_p50_ms=None if cpu_ms is None else float(np.median(cpu_ms)),
    )


def cpu_timed(spec: MeasureSpec) -> bool:
    """Whether the runs of ``spec``'s sessions are the calling thread's own work, so its CPU
    time measures them: the CPU provider first, one intra-op thread (0 lets ONNX Runtime start
    a pool), sequential execution (always, :func:`~search.measure.runtime.session_options`)."""
    return spec.providers[0].name == "CPUExecutionProvider" and spec.threads.intra_op == 1


def make_runner(
    session: ort.InferenceSession, feed: dict[str, np.ndarray]
) -> Callable[[], object]:
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

    def run() -> object:
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()
        return on_device

    return run


def measure_latency(
    session: ort.InferenceSession,
    feed: dict[str, np.ndarray],
    settings: MeasureSettings,
    *,
    cpu: bool = False,
) -> LatencyStats:
    """Time one run on the same ``feed`` until both the run and time minimums are met.

    Warm-up runs until both ``warmup_runs`` and ``warmup_seconds`` are reached (first runs
    allocate arenas, tune kernels, build TensorRT engines). The garbage collector is paused while
    timing so a collection of the caller's objects cannot land inside one run. With ``cpu``
    the stats carry the thread CPU time's p50 too (see :func:`cpu_timed`).
    """
    batch_size = int(next(iter(feed.values())).shape[0])
    run = make_runner(session, feed)
    start = time.perf_counter()
    done = 0
    while done < settings.warmup_runs or time.perf_counter() - start < settings.warmup_seconds:
        run()
        done += 1
    times: list[float] = []
    cpu_times: list[float] = []
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        while len(times) < settings.max_runs and (
            len(times) < settings.min_runs or time.perf_counter() - start < settings.min_seconds
        ):
            c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
            run()
            times.append((time.perf_counter_ns() - t0) / 1e6)
            cpu_times.append((time.thread_time_ns() - c0) / 1e6)
    finally:
        if gc_was_enabled:
            gc.enable()
    return summarize(np.array(times), batch_size, np.array(cpu_times) if cpu else None)


@dataclass
class Rounds:
    """One runner's timed runs, one array per round: wall times and thread CPU times (ms)."""

    wall: list[np.ndarray]
    cpu: list[np.ndarray]

    def extend(self, other: Rounds) -> Rounds:
        return Rounds(wall=self.wall + other.wall, cpu=self.cpu + other.cpu)


def time_interleaved(
    runners: dict[str, Callable[[], object]],
    *,
    rounds: int,
    runs_per_round: int,
    warmup_runs: int = 10,
) -> dict[str, Rounds]:
    """Time every runner round-robin: the one latency loop of paired runs, confirmation and the
    benchmark.

    Each round times ``runs_per_round`` runs of every runner in turn, the order rotated each
    round so no runner always follows the same neighbour. A burst of load within one round then
    slows all runners alike, which is what keeps their ratios (see
    :mod:`search.measure.paired`) when absolute times move. The garbage collector is paused
    while timing, as in :func:`measure_latency`.

    Args:
        runners: Name -> zero-argument call that runs one inference (:func:`make_runner`).
        rounds: Round-robin passes over all runners (>= 1).
        runs_per_round: Timed runs of one runner in one pass (>= 1).
        warmup_runs: Untimed runs of each runner before the first pass.

    Returns:
        Name -> its :class:`Rounds` (``rounds`` arrays of ``runs_per_round`` times each).

    Raises:
        ValueError: ``rounds`` or ``runs_per_round`` below 1, or no runners.
    """
    if rounds < 1 or runs_per_round < 1 or not runners:
        raise ValueError(
            f"rounds >= 1, runs_per_round >= 1 and a runner must be given, got {rounds=}, "
            f"{runs_per_round=}, {len(runners)} runner(s)"
        )
    for run in runners.values():
        for _ in range(warmup_runs):
            run()
    names = list(runners)
    out = {name: Rounds(wall=[], cpu=[]) for name in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                run, wall, cpu = runners[name], np.empty(runs_per_round), np.empty(runs_per_round)
                for i in range(runs_per_round):
                    c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
                    run()
                    wall[i] = (time.perf_counter_ns() - t0) / 1e6
                    cpu[i] = (time.thread_time_ns() - c0) / 1e6
                out[name].wall.append(wall)
                out[name].cpu.append(cpu)
    finally:
        if gc_was_enabled:
            gc.enable()
    return out
