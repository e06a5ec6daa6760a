"""One ONNX file measured on this machine: its outputs, latency, peak memory and size."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from search.measure.latency import LatencyStats, measure_latency
from search.measure.memory import MemoryStats, measure_peak_memory
from search.measure.runtime import create_session, describe_device
from search.measure.spec import MeasureSpec


@dataclass
class Measurement:
    """Raw measurement of one ONNX file; accuracy is computed from ``outputs`` by the caller."""

    outputs: np.ndarray
    latency: list[LatencyStats]
    memory: MemoryStats
    size_bytes: int
    providers: list[str]
    onnxruntime: str
    device: str
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """JSON-ready record of everything but the raw outputs."""
        return {
            "latency": [s.to_dict() for s in self.latency],
            "memory": self.memory.to_dict(),
            "size_bytes": self.size_bytes,
            "providers": self.providers,
            "onnxruntime": self.onnxruntime,
            "device": self.device,
            **self.extra,
        }


def run_batches(session: Any, inputs: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The session's first output over ``inputs`` (N x ...), run ``batch_size`` at a time."""
    name = session.get_inputs()[0].name
    outs = [
        session.run(None, {name: inputs[i : i + batch_size]})[0]
        for i in range(0, len(inputs), batch_size)
    ]
    return np.concatenate(outs)


def measure_onnx(
    path: Path | str,
    *,
    spec: MeasureSpec,
    eval_inputs: np.ndarray,
    latency_input: np.ndarray,
    device_label: str = "",
    timing: Callable[[], contextlib.AbstractContextManager] | None = None,
) -> Measurement:
    """Run ``path`` as ``spec`` says: outputs over ``eval_inputs``, then latency at each of the
    spec's batch sizes (``latency_input`` repeated: the same input every trial), then peak
    memory at the first batch size in a fresh child process.

    ``timing()`` is held around the latency runs only (a study's host lock, so that no other
    worker here trains meanwhile).

    Raises:
        ProviderError: a provider is missing, or the session fell back from one.
    """
    session = create_session(path, spec)
    name = session.get_inputs()[0].name
    outputs = run_batches(session, eval_inputs.astype(np.float32, copy=False))
    one = latency_input[:1].astype(np.float32, copy=False)
    with timing() if timing is not None else contextlib.nullcontext():
        latency = [
            measure_latency(session, {name: np.repeat(one, bs, axis=0)}, spec.measure)
            for bs in spec.batch_sizes
        ]
    memory = measure_peak_memory(
        path, feed={name: np.repeat(one, spec.batch_sizes[0], axis=0)}, spec=spec
    )
    return Measurement(
        outputs=outputs,
        latency=latency,
        memory=memory,
        size_bytes=os.path.getsize(path),
        providers=session.get_providers(),
        onnxruntime=ort.__version__,
        device=describe_device(device_label),
        extra={"measured_by": "local"},
    )
