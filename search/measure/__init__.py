"""What the target sees: the exported file's outputs, latency, memory and providers.

This package imports onnxruntime and numpy only (no torch), so the measurement agent can run
on a target that has no PyTorch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from search.measure.latency import LatencyStats, measure_latency
from search.measure.memory import MemoryStats, measure_peak_memory
from search.measure.runtime import create_session, describe_device


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
    name = session.get_inputs()[0].name
    outs = [
        session.run(None, {name: inputs[i : i + batch_size]})[0]
        for i in range(0, len(inputs), batch_size)
    ]
    return np.concatenate(outs)


def measure_onnx(
    path: Path | str, *, profile: Any, eval_inputs: np.ndarray, latency_input: np.ndarray
) -> Measurement:
    """Run ``path`` on the profile's providers: outputs over ``eval_inputs``, then latency at
    each of the profile's batch sizes (``latency_input`` repeated: the same input every trial),
    then peak memory at the first batch size in a fresh child process.
    """
    session = create_session(path, profile)
    name = session.get_inputs()[0].name
    outputs = run_batches(session, eval_inputs.astype(np.float32, copy=False))
    one = latency_input[:1].astype(np.float32, copy=False)
    latency = [
        measure_latency(session, {name: np.repeat(one, bs, axis=0)}, profile.measure)
        for bs in profile.batch_sizes
    ]
    memory = measure_peak_memory(
        path, feed={name: np.repeat(one, profile.batch_sizes[0], axis=0)}, profile=profile
    )
    return Measurement(
        outputs=outputs,
        latency=latency,
        memory=memory,
        size_bytes=os.path.getsize(path),
        providers=session.get_providers(),
        onnxruntime=ort.__version__,
        device=describe_device(),
    )


__all__ = ["LatencyStats", "Measurement", "MemoryStats", "measure_onnx", "run_batches"]
