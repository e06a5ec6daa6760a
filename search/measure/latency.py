"""Latency of one session: warm-up to a steady state, repeats until count and time, percentiles;
and the one interleaved loop (:func:`time_interleaved`) that paired runs, the front's
confirmation and the benchmark share.

**Steady state before timing** (:func:`warm_up`, every target). The first runs of a session
are slower: ONNX Runtime allocates its arenas, OpenVINO compiles primitives on the first
inference (4-19x the steady time on a 0.1 ms model, still 1.4-2.6x on runs 2-3), cuDNN and
TensorRT pick kernels. A fixed count of warm-up runs is either too short for one provider or
wasted on another, so the warm-up runs until the latency has settled: ``warmup_runs``
throw-away runs (and at least ``warmup_seconds``), then windows of ``steady_window`` runs until
the median of a window lies within ``steady_tolerance`` of the previous window's, on the clock
the runs are timed with; each window that does not agree doubles the next one, since on a
loaded machine bursts of slowed runs (OpenVINO: 150-300 us runs among 89 us ones at load 18,
CPU time included) move the median of 10 runs but not that of 40. It is bounded: after
``warmup_max_runs`` runs or ``warmup_max_seconds`` it stops and says it did not settle
(``steady: false``). The fixed-window rule with these defaults (5 % between windows of 10, at
most 500 runs or 10 s) converged in every one of 24 sessions measured on this project's 2-core
machine at load 7-12, OpenVINO and the CPU provider, 0.1-45 ms models, in 25-105 runs; at load
18 OpenVINO's did not within 500 runs, hence the doubling. The timed runs then check
themselves: the medians of their first and
second half must also agree within ``steady_tolerance`` (``drift``), or the latency is not
steady either. A reference measured alone (the study's baseline) that is not steady is measured
again and, if it stays unsteady, flagged (:func:`search.study.references.measure_baseline`).

Every timed run records wall time and, beside it, the CPU time of the calling thread
(``time.thread_time_ns``). Where ONNX Runtime runs the whole model in the calling thread (the CPU
provider with one intra-op thread, :func:`cpu_timed`), that CPU time is the run's own work:
time the thread spent preempted by other processes is not in it, so it is the latency the run
would have had on a quiet core. On a shared machine this is what keeps a small and a large
model's ratio steady when one of them runs longer than the scheduler's time slice and the other
does not (measured in ``tests/measure/test_paired.py``).
"""

from __future__ import annotations

import dataclasses
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
    # The coefficient of variation of those CPU times: the spread of what the study compares
    # where runs are timed that way (OpenVINO's wall time also holds the yields of a waiting
    # caller: 20 ms wall for 2.3 ms of CPU work at load 13, none of it in other threads).
    cpu_cv: float | None = None
    # How the warm-up went (:func:`warm_up`) and whether the timed runs drifted: ``steady`` is
    # None where no steady-state rule ran (latencies recorded before it existed).
    warmup_runs: int = 0
    steady: bool | None = None
    drift: float | None = None

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class WarmUp:
    """How one warm-up went: ``runs`` untimed runs in ``seconds``; ``steady`` when two windows'
    medians agreed within the tolerance before the bound; ``change`` the last relative
    difference between window medians (None before two windows ran)."""

    runs: int
    seconds: float
    steady: bool
    change: float | None = None


def warm_up(run: Callable[[], object], settings: MeasureSettings, *, clock: str) -> WarmUp:
    """Run ``run`` until its latency has settled (the rule in the module docstring).

    Args:
        run: One inference (:func:`make_runner`).
        settings: ``warmup_runs``/``warmup_seconds`` (throw-away minimum), ``steady_window``,
            ``steady_tolerance``, ``warmup_max_runs`` and ``warmup_max_seconds`` (the bound on
            the windows, after the throw-away runs).
        clock: ``cpu`` (the calling thread's CPU time, :func:`cpu_timed`) or ``wall``.
    """
    now = time.thread_time_ns if clock == "cpu" else time.perf_counter_ns
    start, runs = time.perf_counter(), 0
    while runs < settings.warmup_runs or time.perf_counter() - start < settings.warmup_seconds:
        run()
        runs += 1
    # The bound counts the windows only: the throw-away minimum is finite on its own.
    windows_start, throw_away = time.perf_counter(), runs

    def over() -> bool:
        elapsed = time.perf_counter() - windows_start
        return runs - throw_away >= settings.warmup_max_runs or (
            elapsed >= settings.warmup_max_seconds
        )

    previous: float | None = None
    change: float | None = None
    size = settings.steady_window
    while True:
        window = np.empty(size)
        for i in range(size):
            t0 = now()
            run()
            window[i] = now() - t0
        runs += size
        median = float(np.median(window))
        if previous is not None:
            change = abs(median - previous) / previous if previous > 0 else 0.0
            if change <= settings.steady_tolerance:
                return WarmUp(runs, time.perf_counter() - start, True, change)
            size *= 2  # bursts of preempted runs move a short window's median: look longer
        previous = median
        if over():
            return WarmUp(runs, time.perf_counter() - start, False, change)


def drift(times: np.ndarray) -> float:
    """Relative difference between the medians of the first and second half of ``times``
    (0.0 for fewer than 4 runs): how far the timed runs themselves still moved."""
    t = np.asarray(times, dtype=np.float64)
    if len(t) < 4:
        return 0.0
    first, second = np.median(t[: len(t) // 2]), np.median(t[len(t) // 2 :])
    return float(abs(second - first) / first) if first > 0 else 0.0


def summarize(
    times_ms: np.ndarray, batch_size: int, cpu_ms: np.ndarray | None = None
) -> LatencyStats:
    """Percentiles and spread of wall times ``times_ms``; ``cpu_ms`` (the same runs' thread CPU
    times) adds ``cpu_p50_ms`` and ``cpu_cv``."""
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
        cpu_cv=None if cpu_ms is None else _cv(np.asarray(cpu_ms, dtype=np.float64)),
    )


def _cv(t: np.ndarray) -> float:
    mean = float(t.mean()) if len(t) else 0.0
    return float(t.std(ddof=1)) / mean if len(t) > 1 and mean > 0 else 0.0


def cpu_timed(spec: MeasureSpec) -> bool:
    """Whether the runs of ``spec``'s sessions are the calling thread's own work, so its CPU
    time measures them: one intra-op thread (0 lets ONNX Runtime start a pool), sequential
    execution (always, :func:`~search.measure.runtime.session_options`), and a first provider
    that computes in the calling thread: the CPU provider, or OpenVINO's with
    ``num_of_threads: 1`` (its inference then runs in the caller alone: measured per thread
    from ``/proc/self/task``, docs/targets.md)."""
    first = spec.providers[0]
    if spec.threads.intra_op != 1:
        return False
    if first.name == "CPUExecutionProvider":
        return True
    return (
        first.name == "OpenVINOExecutionProvider"
        and str(first.options.get("num_of_threads")) == "1"
        and str(first.options.get("device_type", "CPU")).upper() == "CPU"
    )


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

    The warm-up runs until the latency has settled (:func:`warm_up`: first runs allocate
    arenas, compile, tune kernels, build TensorRT engines). The garbage collector is paused while
    timing so a collection of the caller's objects cannot land inside one run. With ``cpu``
    the stats carry the thread CPU time's p50 too (see :func:`cpu_timed`), and the warm-up and
    the drift check use that clock. ``steady`` in the stats: the warm-up settled and the timed
    runs did not drift by more than ``steady_tolerance``.
    """
    batch_size = int(next(iter(feed.values())).shape[0])
    run = make_runner(session, feed)
    warm = warm_up(run, settings, clock="cpu" if cpu else "wall")
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
    moved = drift(np.array(cpu_times if cpu else times))
    stats = summarize(np.array(times), batch_size, np.array(cpu_times) if cpu else None)
    return dataclasses.replace(
        stats,
        warmup_runs=warm.runs,
        steady=warm.steady and moved <= settings.steady_tolerance,
        drift=moved,
    )


@dataclass
class Rounds:
    """One runner's timed runs, one array per round: wall times and thread CPU times (ms)."""

    wall: list[np.ndarray]
    cpu: list[np.ndarray]
    # The runner's warm-up before its first round (None: a fixed count, or none, was run).
    warmup: WarmUp | None = None

    def extend(self, other: Rounds) -> Rounds:
        return Rounds(wall=self.wall + other.wall, cpu=self.cpu + other.cpu, warmup=self.warmup)


def time_interleaved(
    runners: dict[str, Callable[[], object]],
    *,
    rounds: int,
    runs_per_round: int,
    warmup_runs: int = 10,
    settings: MeasureSettings | None = None,
    clock: str = "wall",
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
        warmup_runs: Untimed runs of each runner before the first pass (without ``settings``).
        settings: With it, each runner is warmed up to a steady state instead
            (:func:`warm_up` on ``clock``), and its :class:`Rounds` say how that went.
        clock: ``cpu`` or ``wall``: the clock of the steady-state rule.

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
    warmed = _warm_all(runners, warmup_runs=warmup_runs, settings=settings, clock=clock)
    names = list(runners)
    out = {name: Rounds(wall=[], cpu=[], warmup=warmed[name]) for name in names}
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


def _warm_all(
    runners: dict[str, Callable[[], object]],
    *,
    warmup_runs: int,
    settings: MeasureSettings | None,
    clock: str,
) -> dict[str, WarmUp | None]:
    """Warm each runner up: to a steady state with ``settings``, else ``warmup_runs`` runs."""
    warmed: dict[str, WarmUp | None] = {}
    for name, run in runners.items():
        if settings is not None:
            warmed[name] = warm_up(run, settings, clock=clock)
            continue
        for _ in range(warmup_runs):
            run()
        warmed[name] = None
    return warmed
