"""What the benchmark measures itself: interleaved latency of the candidates, the int8 baseline.

Latencies measured one trial at a time drift with the load of a shared machine (about 10 % here),
which is as large as the differences being compared. So every candidate's session is loaded in
one process and timed round-robin, in short chunks, with the order rotated each round: a burst
of load slows every candidate alike, and the ratios hold.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from search.measure.latency import LatencyStats, summarize


def measure_interleaved(
    paths: dict[str, Path],
    *,
    profile: Any,
    example_input: np.ndarray,
    rounds: int = 20,
    runs_per_round: int = 10,
    warmup_runs: int = 20,
) -> dict[str, LatencyStats]:
    """Latency of every ONNX file in ``paths`` at the profile's first batch size, interleaved.

    Args:
        paths: Candidate name -> ONNX file.
        profile: The hardware profile (providers, threads, batch sizes).
        example_input: One input (batch 1); it is repeated to the first batch size.
        rounds: Round-robin passes over all candidates.
        runs_per_round: Timed runs of one candidate in one pass.
        warmup_runs: Untimed runs of each candidate before the first pass.

    Returns:
        Candidate name -> latency statistics over ``rounds * runs_per_round`` runs.
    """
    from search.measure.runtime import create_session

    if rounds < 1 or runs_per_round < 1:
        raise ValueError(
            f"rounds and runs_per_round must be >= 1, got {rounds=}, {runs_per_round=}"
        )
    bs = profile.batch_sizes[0]
    one = np.asarray(example_input[:1], dtype=np.float32)
    feed_value = np.repeat(one, bs, axis=0)
    sessions = {name: create_session(path, profile) for name, path in paths.items()}
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


def onnx_accuracy(
    path: Path, *, profile: Any, inputs: np.ndarray, labels: np.ndarray, metric: Any
) -> float:
    """The task metric of an ONNX file in ONNX Runtime on the profile's providers."""
    from search.measure import run_batches
    from search.measure.runtime import create_session

    session = create_session(path, profile)
    return float(metric(run_batches(session, inputs.astype(np.float32, copy=False)), labels))


class _Reader:
    """Feeds calibration batches to ONNX Runtime's calibrator."""

    def __init__(self, input_name: str, batches: Iterable[np.ndarray]) -> None:
        self._it = iter([{input_name: b} for b in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def quantize_int8(src: Path, dst: Path, *, calibration: np.ndarray, batch_size: int = 32) -> Path:
    """What users try first: ONNX Runtime 8-bit static QDQ quantization of the whole model.

    ``quant_pre_process`` (shape inference and graph optimization), then ``quantize_static`` in
    QDQ format with per-channel signed 8-bit weights, unsigned 8-bit activations and MinMax
    calibration: the recipe that made all convs run as QLinearConv on the CPU provider
    (signed activations left most convs in float; see shared/facts.md). It calls
    onnxruntime.quantization directly so the benchmark does not depend on the search's own
    quantization step; switching to that step's all-int8 setting is a one-line change here.
    """
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    pre = dst.with_name(dst.stem + ".pre.onnx")
    quant_pre_process(str(src), str(pre))
    name = ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    data = calibration.astype(np.float32, copy=False)
    batches = [data[i : i + batch_size] for i in range(0, len(data), batch_size)]
    quantize_static(
        str(pre),
        str(dst),
        _Reader(name, batches),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    pre.unlink(missing_ok=True)
    return dst
