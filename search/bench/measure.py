"""What the benchmark measures itself: every candidate's latency paired with the float baseline,
confirmed in several fresh processes on the target.

Latencies measured one trial at a time drift with the load of a shared machine, and the ratio to
a baseline timed in the same window moves too when the load competes for caches and memory
(a co-runner that trains slowed a float baseline more than its int8 copy:
``../shared/cases/latency-ratio-shifts-under-load``). So after all methods ran, every candidate
that could be on a front is timed again, side by side with the float baseline, as the study's
front confirmation times its Pareto trials (:func:`~search.measure.confirmation.time_files`,
here or on the profile's agent): in ``confirm_processes`` fresh processes (at least three), each
timing all of them interleaved, pooled into one figure per candidate whose interval covers the
variation between the processes and, where the studies' own figures let it be estimated,
between sessions (:mod:`search.measure.pooled`, :func:`widen_by_sessions`). Before it starts
it waits for a quiet machine (``quiet_wait_s``); a window in which other processes used the
cores marks the result ``contended``.

The figure compared is the study's own: the candidate's latency relative to the float baseline
timed in the same rounds, on the clock the study uses for the profile (thread CPU time where ONNX
Runtime runs on the calling thread), scaled by the baseline's wall p50.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from search.bench.metrics import near_front
from search.measure.confirmation import MAX_FILES
from search.measure.load import wait_for_quiet
from search.measure.pooled import MIN_SESSION_PAIRS, session_spread, widened

if TYPE_CHECKING:
    from search.bench.methods import BenchSettings, MethodRun
    from search.measure.target import Target
    from search.trial.context import Context

MIN_PROCESSES = 3  # the bench's speedups come from at least this many fresh processes


@dataclass(frozen=True)
class BenchLatency:
    """One candidate's latency in the bench's confirmation.

    Attributes:
        latency_ms: ``relative * reference_p50_ms``: what the bench compares (ms, batch
            ``batch_size``); the reference's own wall p50 for the reference.
        relative: Median over processes of each process's median round ratio (candidate /
            reference; 1.0 for the reference); ``ci_low``, ``ci_high`` its interval, covering
            every process's 95 % interval and the 95 % prediction interval of a new process,
            widened by the variation between sessions where that was estimated.
        clock: ``cpu`` or ``wall``: what the ratio is taken of.
        p50_ms: The candidate's own wall-time p50 (median over processes; moves with the load).
        reference_p50_ms: The reference's wall-time p50 in the same windows.
        processes: Fresh processes pooled; ``process_relatives`` each one's ratio.
        contended: Other processes used the cores while it was timed.
        process_ci: The interval over the processes alone, where ``ci_low``, ``ci_high`` were
            widened by the variation between sessions (:func:`widen_by_sessions`).
    """

    latency_ms: float
    relative: float
    ci_low: float
    ci_high: float
    clock: str
    p50_ms: float
    reference_p50_ms: float
    batch_size: int
    processes: int = 1
    process_relatives: tuple[float, ...] = ()
    contended: bool | None = None
    process_ci: tuple[float, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["process_relatives"] = list(self.process_relatives)
        out["process_ci"] = list(self.process_ci) if self.process_ci else None
        return out


def widen_by_sessions(
    latency: dict[str, BenchLatency], runs: list[MethodRun]
) -> tuple[dict[str, BenchLatency], dict[str, Any]]:
    """Intervals that cover the variation between sessions, not only between processes: the
    studies measured each of their candidates in another session (the trial's own, paired with
    the study's baseline), which against the confirmation gives the spread between sessions
    (:func:`~search.measure.pooled.session_spread`, :func:`~search.measure.pooled.widened`).

    Returns:
        ``latency`` with widened intervals (``process_ci`` keeps the old ones; the reference
        stays 1.0), and :func:`~search.measure.pooled.session_spread`'s result; nothing is
        widened when it is not estimated.
    """
    pairs: dict[str, tuple[float, float, bool]] = {}
    for run in runs:
        for p in run.points:
            key, before = p.extra["onnx"], p.extra.get("study_relative")
            now = latency.get(key)
            if before and now is not None and now.processes and now.ci_low != now.ci_high:
                pairs[key] = (now.relative, before, bool(p.extra.get("study_busy")))
    info = session_spread(list(pairs.values()))
    if info["spread"] is None:
        return latency, info
    out = {}
    for key, lat in latency.items():
        if lat.ci_low == lat.ci_high == lat.relative:  # the reference, or a single figure
            out[key] = lat
            continue
        low, high = widened(lat.relative, lat.ci_low, lat.ci_high, info["spread"])
        out[key] = dataclasses.replace(
            lat, ci_low=low, ci_high=high, process_ci=(lat.ci_low, lat.ci_high)
        )
    return out, info


def confirm_candidates(
    paths: dict[str, Path],
    *,
    reference: str,
    target: Target,
    latency_input: np.ndarray | None,
    quiet_wait_s: float = 0.0,
) -> tuple[dict[str, BenchLatency], dict[str, Any]]:
    """Latency of every ONNX file in ``paths`` paired with ``reference``, confirmed on
    ``target`` in at least :data:`MIN_PROCESSES` fresh processes (at most ``MAX_FILES - 1``
    candidates per confirmation, each with the reference).

    Args:
        paths: Candidate key -> ONNX file; ``reference`` must be among them.
        reference: The candidate every other is paired with (the float baseline).
        target: Where to time (this machine or the profile's agent).
        latency_input: One input (batch 1), repeated to the first batch size; None: the
            target times a seeded normal array of the model's input shape.
        quiet_wait_s: Seconds to wait for a quiet machine before the first confirmation.

    Returns:
        Candidate key -> :class:`BenchLatency`, and what the confirmation recorded
        (``processes``, ``contended``, ``load`` and ``quiet_wait`` of each part).

    Raises:
        ValueError: ``reference`` is not among ``paths``.
    """
    if reference not in paths:
        raise ValueError(f"reference {reference!r} is not among the candidates")
    spec = target.spec
    settings = dataclasses.replace(
        spec.measure,
        confirm_processes=max(spec.measure.confirm_processes, MIN_PROCESSES),
        quiet_wait_s=0.0,
    )
    # Waited for here, not on the target: an agent answers within its request timeout.
    wait = None
    if quiet_wait_s > 0:
        threshold = spec.measure.busy_threshold
        wait = wait_for_quiet(threshold=threshold, max_wait_s=quiet_wait_s).to_dict()
    others = [k for k in paths if k != reference]
    names = {f"c{i}": k for i, k in enumerate(others)}
    parts: list[dict[str, Any]] = []
    target.spec = dataclasses.replace(spec, measure=settings)
    try:
        keys, chunk = list(names), MAX_FILES - 1
        for i in range(0, max(len(keys), 1), chunk):
            part = {n: paths[names[n]] for n in keys[i : i + chunk]}
            parts.append(
                target.confirm(part, reference=paths[reference], latency_input=latency_input)
            )
    finally:
        target.spec = spec
    summary = {**_summary(parts), "quiet_wait": wait}
    return _latencies(parts, names, reference, spec.batch_sizes[0]), summary


def _latencies(
    parts: list[dict[str, Any]], names: dict[str, str], reference: str, bs: int
) -> dict[str, BenchLatency]:
    ref_p50 = float(np.median([p["reference_p50_ms"] for p in parts]))
    contended = any(p.get("contended") for p in parts)
    processes = min(int(p.get("processes") or 1) for p in parts)
    out = {
        reference: BenchLatency(
            latency_ms=ref_p50,
            relative=1.0,
            ci_low=1.0,
            ci_high=1.0,
            clock=parts[0]["clock"],
            p50_ms=ref_p50,
            reference_p50_ms=ref_p50,
            batch_size=bs,
            processes=processes,
            contended=contended,
        )
    }
    for part in parts:
        for name, p in part["paired"].items():
            out[names[name]] = BenchLatency(
                latency_ms=p["relative"] * ref_p50,
                relative=p["relative"],
                ci_low=p["ci_low"],
                ci_high=p["ci_high"],
                clock=p["clock"],
                p50_ms=p["candidate_p50_ms"],
                reference_p50_ms=ref_p50,
                batch_size=bs,
                processes=int(p.get("processes", 1)),
                process_relatives=tuple(p.get("process_relatives") or ()),
                contended=bool(part.get("contended")),
            )
    return out


def _summary(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "processes": min(int(p.get("processes") or 1) for p in parts),
        "contended": any(p.get("contended") for p in parts),
        "parts": [
            {"load": p.get("load"), "quiet_wait": p.get("quiet_wait"), "rounds": p.get("rounds")}
            for p in parts
        ],
        "device": parts[0].get("device"),
        "measured_by": parts[0].get("measured_by", "here"),
    }


def measured_on(target: Target) -> dict[str, str]:
    """The device and ONNX Runtime that time the files (the target's: a runtime of its own or
    an agent runs another build than this process), for the report's header."""
    import onnxruntime as ort

    info = getattr(target, "info", None)  # a dict (runtime), a method (agent), absent (here)
    info = (info() if callable(info) else info) or {}
    return {
        "device": target.device,
        "onnxruntime": str(info.get("onnxruntime", ort.__version__)),
        "measured_where": target.where,
    }


def candidates(runs: list[MethodRun]) -> dict[str, Path]:
    """Every point that could be on a front, by its ONNX path (the float baseline first)."""
    fixed = ("float", "int8", "prune", "sequential")
    out: dict[str, Path] = {}
    for run in runs:
        keep = run.points if run.name in fixed else near_front(run.points)
        out.update({p.extra["onnx"]: Path(p.extra["onnx"]) for p in keep})
    return out


def confirm_runs(
    spec: BenchSettings, ctx: Context, runs: list[MethodRun]
) -> tuple[dict[str, BenchLatency], dict[str, Any]]:
    """The candidates confirmed on the target in fresh processes, paired with the float
    baseline (:func:`confirm_candidates`)."""
    from search.measure.target import close_target, open_target

    profile = spec.profile
    measure = dataclasses.replace(profile.measure_spec().measure, confirm_rounds=spec.rounds)
    target = open_target(
        dataclasses.replace(profile.measure_spec(), measure=measure),
        agent=profile.agent,
        runtime=profile.runtime,  # a runtime of its own (openvino): an agent started from it
        token_env=profile.agent_token_env,
    )
    try:
        return _confirm_on(spec, ctx, runs, target)
    finally:
        close_target(target)


def _confirm_on(
    spec: BenchSettings, ctx: Context, runs: list[MethodRun], target: Target
) -> tuple[dict[str, BenchLatency], dict[str, Any]]:
    """:func:`confirm_runs` on an open target."""
    from search.core.progress import console
    from search.measure.load import describe_load

    found = candidates(runs)
    console.print(
        f"bench: confirming {len(found)} candidates {target.where} in fresh processes"
        + (
            f" (waiting up to {spec.quiet_wait_s:.0f} s for a quiet machine)"
            if spec.quiet_wait_s
            else ""
        )
    )
    latency, info = confirm_candidates(
        found,
        reference=runs[0].points[0].extra["onnx"],  # the float baseline, as summarize_runs
        target=target,
        latency_input=ctx.task.example_input.numpy(),
        quiet_wait_s=spec.quiet_wait_s,
    )
    loads = "; ".join(describe_load(p["load"] or {}) for p in info["parts"])
    state = "CONTENDED" if info["contended"] else "quiet"
    console.print(f"bench: confirmed in {info['processes']} processes, {state}: {loads}")
    latency, info["sessions"] = widen_by_sessions(latency, runs)
    console.print(f"bench: {sessions_line(info['sessions'])}")
    return latency, info


def sessions_line(sessions: dict[str, Any]) -> str:
    """How the intervals cover the variation between sessions, in words."""
    if sessions.get("spread") is None:
        return (
            f"variation between sessions not estimated ({sessions.get('pairs', 0)} candidates "
            f"measured by the studies, fewer than {MIN_SESSION_PAIRS}): intervals cover the "
            "processes only"
        )
    which = "all, busy ones included" if sessions["busy"] else "those measured quietly"
    return (
        f"between the studies' sessions and this confirmation the ratios moved by "
        f"{100 * math.expm1(sessions['spread']):.0f} % (root mean square over {sessions['pairs']} "
        f"candidates, {which}); every interval widened to cover it"
    )


def unconfirmed(runs: list[MethodRun]) -> tuple[dict[str, BenchLatency], dict[str, Any]]:
    """The study-time latencies (each paired with the baseline when it was measured), for the
    pages written before the final confirmation."""
    base = runs[0].points[0]
    ref_ms = base.latency_ms
    out = {}
    for run in runs:
        for p in run.points:
            rel = p.latency_ms / ref_ms if math.isfinite(ref_ms) and ref_ms > 0 else math.nan
            out[p.extra["onnx"]] = BenchLatency(
                latency_ms=p.latency_ms,
                relative=rel,
                ci_low=rel,
                ci_high=rel,
                clock="study",
                p50_ms=p.latency_ms,
                reference_p50_ms=ref_ms,
                batch_size=1,
                processes=0,
            )
    return out, {"processes": 0, "contended": None, "parts": [], "unconfirmed": True}
