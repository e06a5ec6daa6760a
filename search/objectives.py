"""The study's objectives: their names (Optuna metric names, record keys) and directions."""

from __future__ import annotations

# Maximize the task metric of the exported file, minimize its p50 latency at the profile's first
# batch size. The record of every trial holds both under these keys.
OBJECTIVES = ("accuracy", "latency_p50_ms")
DIRECTIONS = ("maximize", "minimize")
