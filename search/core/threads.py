"""Threads per worker: ``--threads N``, else ``OMP_NUM_THREADS``, else the CPUs this process may
run on (``os.sched_getaffinity``, which honours taskset and cgroup cpusets).
"""

from __future__ import annotations

import os


def cores() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 0  # None when Python cannot tell; resolve_threads then uses 1


def resolve_threads(threads: int | None = None) -> int:
    """Threads for this worker's torch work: ``threads``, else ``$OMP_NUM_THREADS``, else all
    CPUs this process may use."""
    if threads:
        return int(threads)
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return cores() or 1


def apply_threads(n: int) -> None:
    """Limit torch's intra-op pool to ``n`` threads (and tell child processes the same)."""
    import torch

    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
