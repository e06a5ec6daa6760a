"""The benchmark: every compression method on one task, profile and trial budget, compared.

``python -m search bench --hw cpu --task distorted_digits --trials 20`` runs the float baseline,
8-bit static quantization alone, pruning alone at fixed ratios, random search and the joint
search, re-measures their candidates side by side, and writes ``bench.md`` (table),
``bench.html`` (plot) and ``bench.json`` (the data) under ``results/bench/<task>-<hw>/``.
"""

from __future__ import annotations

from search.bench.metrics import (
    MAX_DROP,
    REF_DROP,
    Point,
    best_size_reduction,
    best_speedup,
    hypervolume,
    pareto_front,
)
from search.bench.run import BenchSpec, run_bench

__all__ = [
    "MAX_DROP",
    "REF_DROP",
    "BenchSpec",
    "Point",
    "best_size_reduction",
    "best_speedup",
    "hypervolume",
    "pareto_front",
    "run_bench",
]
