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
from search.measure.runtime import check_providers, create_session, describe_device


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
    path: Path | str,
    *,
    profile: Any,
    eval_inputs: np.ndarray,
    latency_input: np.ndarray,
    device_label: str = "",
) -> Measurement:
    """Run ``path`` on the profile's providers: outputs over ``eval_inputs``, then latency at
    each of the profile's batch sizes (``latency_input`` repeated: the same input every trial),
    then peak memory at the first batch size in a fresh child process.

    Raises:
        ProviderError: a provider is missing, or the session fell back from one.
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
        device=describe_device(device_label),
        extra={"measured_by": "local"},
    )


class LocalTarget:
    """Measures on this machine, after checking it can run the profile as written."""

    def __init__(self, profile: Any) -> None:
        self.profile = profile
        check_providers(profile)
        self.where = "here"
        self.device = describe_device()

    def measure(
        self, path: Path | str, *, eval_inputs: np.ndarray, latency_input: np.ndarray
    ) -> Measurement:
        return measure_onnx(
            path, profile=self.profile, eval_inputs=eval_inputs, latency_input=latency_input
        )


def open_target(profile: Any, *, timeout: float = 900.0) -> Any:
    """Where ``profile`` is measured: its agent when it names one, else this machine.

    Either way the providers and architecture are checked first, so a study that cannot be
    measured as the profile says stops with a :class:`ProviderError` before any trial.
    """
    if getattr(profile, "agent", None):
        from search.measure.agent import AgentClient

        return AgentClient.for_profile(profile, timeout=timeout)
    return LocalTarget(profile)


__all__ = [
    "LatencyStats",
    "LocalTarget",
    "Measurement",
    "MemoryStats",
    "measure_onnx",
    "open_target",
    "run_batches",
]
