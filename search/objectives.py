"""The study's objectives: their names (Optuna metric names, record keys) and directions."""

from __future__ import annotations

# Maximize the task metric of the exported file on the validation split (the test split is only
# recorded, as ``test_accuracy``), minimize its paired p50 latency at the profile's first batch
# size: its latency relative to the baseline timed interleaved in the same window, times the
# baseline's p50 when the study started (``search.context.measurement_record``). The record of
# every trial holds both under these keys; ``latency_measured_p50_ms`` is the p50 as measured.
OBJECTIVES = ("accuracy", "latency_p50_ms")
DIRECTIONS = ("maximize", "minimize")
