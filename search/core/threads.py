"""Threads per worker: ``--threads N``, else ``OMP_NUM_THREADS``, else the cores this process can
really use: the CPUs it may run on (``os.sched_getaffinity``: taskset, cgroup cpusets), capped
by a cgroup CPU quota (``cpu.max``), less what other processes keep busy.

Why the load counts: on a 2-core machine kept busy by other work, two torch threads per process
ran 2.5-28x slower than one (a digits teacher 930 s against 212 s, a user's trial 725 s against
25 s; shared/facts.md), because each thread waits for a core another process holds. The choice
is made once, when a run starts, from a short look at ``/proc/stat``, and said in one line.

Example:
    >>> choice = choose_threads(3)
    >>> choice.threads, choice.why
    (3, '--threads 3')
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

# How long the start-up look at the other processes' load lasts (seconds).
LOAD_WINDOW_S = 0.5


def cores() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 0  # None when Python cannot tell; choose_threads then uses 1


def cgroup_quota() -> float | None:
    """The CPU quota of this process's cgroup in cores (cgroup v2 ``cpu.max`` or v1
    ``cpu.cfs_quota_us``/``cpu.cfs_period_us``, the smallest along the path), or None when
    there is none or it cannot be read."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        if controllers not in ("", "cpu", "cpu,cpuacct", "cpuacct,cpu"):
            continue
        root = Path("/sys/fs/cgroup") if controllers == "" else Path("/sys/fs/cgroup/cpu,cpuacct")
        folder = root / rel.lstrip("/")
        while True:
            quota = _quota_in(folder, v2=controllers == "")
            if quota is not None:
                quotas.append(quota)
            if folder == root or root not in folder.parents:
                break
            folder = folder.parent
    return min(quotas) if quotas else None


def _quota_in(folder: Path, *, v2: bool) -> float | None:
    try:
        if v2:
            limit, period = (folder / "cpu.max").read_text().split()[:2]
            return None if limit == "max" else int(limit) / int(period)
        limit_us = int((folder / "cpu.cfs_quota_us").read_text())
        period_us = int((folder / "cpu.cfs_period_us").read_text())
        return None if limit_us <= 0 else limit_us / period_us
    except (OSError, ValueError):
        return None


def usable_cores() -> float:
    """Cores this process may use: its CPU affinity, capped by its cgroup's quota."""
    n = float(cores() or 1)
    quota = cgroup_quota()
    return min(n, quota) if quota is not None else n


def _busy_ticks(cpus: set[int] | None) -> tuple[int, int]:
    """(non-idle ticks of the CPUs ``cpus`` (all when None) from /proc/stat, this process's
    own CPU ticks)."""
    busy = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        ticks = [int(f) for f in fields]
        busy += sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)  # - idle, iowait
    own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    return busy, int(own[11]) + int(own[12])  # utime, stime


def others_busy(window_s: float = LOAD_WINDOW_S) -> float | None:
    """Cores that other processes kept busy over the next ``window_s`` seconds, on the CPUs this
    process may run on; None where /proc cannot be read (not Linux)."""
    cpus = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    try:
        busy0, own0 = _busy_ticks(cpus)
        time.sleep(window_s)
        busy1, own1 = _busy_ticks(cpus)
    except (OSError, ValueError, IndexError):
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return max(0.0, ((busy1 - busy0) - (own1 - own0)) / hz / window_s)


@dataclass(frozen=True)
class ThreadChoice:
    """How many torch threads this worker uses, and why (one line for the console)."""

    threads: int
    why: str


def choose_threads(threads: int | None = None, *, workers: int = 1) -> ThreadChoice:
    """Threads for this worker's torch work: ``threads`` (``--threads``), else
    ``$OMP_NUM_THREADS``, else the usable cores (:func:`usable_cores`) less the cores other
    processes keep busy (:func:`others_busy`, rounded to the nearest core), shared among
    ``workers`` workers started together; at least 1."""
    if threads:
        return ThreadChoice(int(threads), f"--threads {threads}")
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return ThreadChoice(int(env), f"OMP_NUM_THREADS={env}")
    usable = usable_cores()
    busy = others_busy()
    free = usable if busy is None else max(usable - busy, 0.0)
    n = max(1, math.floor(free / max(workers, 1) + 0.5))
    shown = f"{usable:g}" if usable == int(usable) else f"{usable:.1f}"
    load = "" if busy is None else f", other processes kept {busy:.1f} of them busy"
    each = f", shared by {workers} workers" if workers > 1 else ""
    return ThreadChoice(n, f"{shown} usable core(s){load}{each}")


def resolve_threads(threads: int | None = None) -> int:
    """:func:`choose_threads`' number alone."""
    return choose_threads(threads).threads


def apply_threads(n: int) -> None:
    """Limit torch's intra-op pool to ``n`` threads (and tell child processes the same)."""
    import torch

    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
