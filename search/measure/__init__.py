"""What the target sees: the exported file's outputs, latency, memory and providers.

This package imports onnxruntime and numpy only (no torch, no pydantic), so the measurement agent
can run on a target that has no PyTorch. This file only hands names on.
"""

from search.measure.latency import LatencyStats
from search.measure.measurement import Measurement, measure_onnx, run_all, run_batches
from search.measure.memory import MemoryStats
from search.measure.spec import MeasureSettings, MeasureSpec, ProviderSpec, Threads
from search.measure.target import LocalTarget, Target, open_target

__all__ = [
    "LatencyStats",
    "LocalTarget",
    "MeasureSettings",
    "MeasureSpec",
    "Measurement",
    "MemoryStats",
    "ProviderSpec",
    "Target",
    "Threads",
    "measure_onnx",
    "open_target",
    "run_all",
    "run_batches",
]
