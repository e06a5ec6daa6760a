"""Run a function in a forked child under a memory and a time limit.

Work on a model nobody has measured (the pruning dry run builds torch-pruning's dependency
graph, which ran past 16 GB in two minutes on Swin before the guards) must never take the
machine down. Forking keeps the model in the child without pickling it (nothing the tool loads
runs code); the result comes back as JSON over a pipe. The limit is on address space
(``RLIMIT_AS``), counted above what the process already maps (a CUDA build of torch maps
gigabytes it never touches), so a limit of N bytes leaves the child N more bytes to allocate.
POSIX only.

A child that must not outlive its work (the measurement agent runs clients' models in one) is
started with ``isolate=True``: it leads a process group of its own, dies with the parent thread
that started it (Linux ``PR_SET_PDEATHSIG``), and a timeout kills the whole group, so processes
it started go too. Where an address-space limit cannot be used (CUDA reserves far more address
space than it ever touches), ``resident_bytes`` bounds the resident memory of the child and its
children instead, checked every 0.1 s (so it can be overshot by what they allocate in that time).

Example:
    >>> result = run_limited(lambda: plan_pruning(model, x, ...).to_dict(),
    ...                      memory_bytes=4 << 30, timeout_s=300)
    >>> result.ok, result.value or result.error
"""

from __future__ import annotations

import json
import os
import resource
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class LimitedResult:
    """What came back: ``value`` (the function's JSON-ready result) or a one-line ``error``
    (the exception with file:line, ``out of memory (limit N GB)`` or ``timeout after N s``)."""

    ok: bool
    value: Any = None
    error: str = ""
    seconds: float = 0.0
    peak_rss_mb: float = 0.0  # the child's peak resident set (ru_maxrss of the reaped child)
    limit: str = ""  # which limit stopped the child: "memory", "time" or "" (none did)


def mapped_bytes() -> int:
    """Address space this process maps now (``VmSize``), 0 where /proc does not say."""
    try:
        for line in open("/proc/self/status").read().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _child(fn: Callable[[], object], write: int, limit: int | None, isolate: bool) -> None:
    """Run ``fn`` under ``limit`` bytes of address space and write the JSON result."""
    code = 0
    try:
        if isolate:
            _isolate()
        _one_thread()
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        payload = {"ok": True, "value": fn()}
    except MemoryError:
        payload, code = {"ok": False, "error": "out of memory"}, 3
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        from search.core.errors import describe

        payload, code = {"ok": False, "error": describe(e)}, 4
    try:
        data = json.dumps(payload).encode()
    except (TypeError, ValueError) as e:
        data, code = json.dumps({"ok": False, "error": f"result is not JSON: {e}"}).encode(), 5
    with os.fdopen(write, "wb") as f:
        f.write(data)
    os._exit(code)


def _one_thread() -> None:
    """Run the child's torch work on one thread: the parent's OpenMP worker threads do not
    exist in a forked child, and a parallel region there would wait for them forever (as
    torch's own DataLoader workers do)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _isolate() -> None:
    """Lead a process group of our own (a timeout kills it whole) and die with the thread that
    forked us (Linux only; elsewhere the timeout still holds)."""
    os.setpgid(0, 0)
    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before prctl took hold
        os._exit(1)


def _descendants(pid: int) -> list[int]:
    """``pid`` and the processes below it (from /proc/<pid>/task/<tid>/children)."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return found


def tree_resident_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and its descendants (0 where /proc does not say)."""
    total = 0
    for p in _descendants(pid):
        try:
            with open(f"/proc/{p}/statm") as f:
                total += int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, IndexError, ValueError):
            continue
    return total


def _kill(pid: int, group: bool) -> None:
    try:
        if group:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _read(
    read: int, pid: int, deadline: float, *, group: bool, resident: int | None
) -> tuple[bytes, str]:
    """Everything the child writes until it closes the pipe, and the limit it broke ("time",
    "memory" or ""; it is killed then)."""
    chunks: list[bytes] = []
    with os.fdopen(read, "rb") as f:
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                _kill(pid, group)
                return b"".join(chunks), "time"
            if resident is not None and tree_resident_bytes(pid) > resident:
                _kill(pid, group)
                return b"".join(chunks), "memory"
            wait = min(left, 0.1 if resident is not None else 1.0)
            ready, _, _ = select.select([f], [], [], wait)
            if ready:
                chunk = os.read(f.fileno(), 1 << 16)
                if not chunk:
                    return b"".join(chunks), ""
                chunks.append(chunk)


def run_limited(
    fn: Callable[[], object],
    *,
    memory_bytes: int | None,
    timeout_s: float,
    isolate: bool = False,
    resident_bytes: int | None = None,
) -> LimitedResult:
    """``fn()`` in a forked child that may allocate ``memory_bytes`` more address space (None:
    no address-space limit) and run ``timeout_s`` seconds; ``fn`` must return something JSON
    can encode. With ``isolate`` the child and what it starts die with the caller and on a
    timeout; with ``resident_bytes`` they are killed when their resident memory passes it.
    Never raises for what happens in the child."""
    read, write = os.pipe()
    start = time.perf_counter()
    limit = None if memory_bytes is None else mapped_bytes() + memory_bytes
    pid = os.fork()
    if pid == 0:  # the child never returns from here
        os.close(read)
        _child(fn, write, limit, isolate)
    os.close(write)
    try:
        data, broke = _read(read, pid, start + timeout_s, group=isolate, resident=resident_bytes)
    except BaseException:  # Ctrl-C or a failure here: the child must not outlive the call
        _kill(pid, isolate)
        os.waitpid(pid, 0)
        raise
    if isolate:  # whatever the child left running in its group; before the reaping frees the id
        _kill(pid, True)
    _, status, usage = os.wait4(pid, 0)
    seconds, peak = time.perf_counter() - start, usage.ru_maxrss / 1024
    bound = memory_bytes if memory_bytes is not None else resident_bytes
    gb = (bound or 0) / 2**30
    if broke == "time":
        error = f"timeout after {timeout_s:.0f} s"
        return LimitedResult(False, error=error, seconds=seconds, peak_rss_mb=peak, limit="time")
    if broke == "memory":
        error = f"out of memory (resident memory over {gb:.1f} GB)"
        return LimitedResult(False, error=error, seconds=seconds, peak_rss_mb=peak, limit=broke)
    if not data:  # killed by a signal, or died without a word (an allocation abort)
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        why = f"killed by signal {sig}" if sig else f"exited {os.WEXITSTATUS(status)}"
        return LimitedResult(
            False, error=f"{why} (memory limit {gb:.1f} GB?)", seconds=seconds, peak_rss_mb=peak
        )
    payload = json.loads(data)
    error = payload.get("error", "")
    memory = error == "out of memory"
    if memory:
        error = f"out of memory (limit {gb:.1f} GB)"
    return LimitedResult(
        payload["ok"], payload.get("value"), error, seconds, peak, "memory" if memory else ""
    )
