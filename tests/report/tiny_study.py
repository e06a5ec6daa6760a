"""A real tiny study for the report tests: the tiny digits task scored by balanced accuracy.

Its metric is not called "accuracy", so a label that ignores the study's metric shows; its
space quantizes three groups, so the study runs the real sensitivity pass and stores it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from search.tasks import Task
from tests.tiny_task import make_task as make_tiny_task

METRIC = "balanced accuracy"
SPACE = """
search: {sampler: random, trials: 2, startup_trials: 1}
prune: {ratio: {low: 0.2, high: 0.5}}
distill: {epochs: 1, batch_size: 16}
lowrank: {apply: [false]}
quantize:
  groups: {stem: [stem], body: [layers], fc: [fc]}
  precisions: [float, int8]
  calibration: [minmax]
  calibration_samples: 16
"""
PROFILE = """
providers: [{name: CPUExecutionProvider}]
threads: {intra_op: 1, inter_op: 1}
round_to: 2
measure: {warmup_runs: 1, warmup_seconds: 0, min_runs: 5, min_seconds: 0, memory_runs: 1}
precisions: {layer: [float, int8], activations: [uint8]}
"""


def balanced_accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Mean recall over the classes present in ``labels``."""
    predicted = outputs.argmax(1)
    return float(np.mean([(predicted[labels == c] == c).mean() for c in np.unique(labels)]))


def make_task(*, seed: int, cache_dir: Path) -> Task:
    task = make_tiny_task(seed=seed, cache_dir=cache_dir)
    task.metric, task.metric_name = balanced_accuracy, METRIC
    return task
