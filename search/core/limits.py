"""Run a function in a forked child under a memory and a time limit.

Work on a model nobody has measured (the pruning dry run builds torch-pruning's dependency
graph, which ran past 16 GB in two minutes on Swin before the guards) must never take the
machine down. Forking keeps the model in the child without pickling it (nothing the tool loads
runs code); the result comes back as JSON over a pipe. The limit is on address space
(``RLIMIT_AS``), counted above what the process already maps (a CUDA build of torch maps
gigabytes it never touches), so a limit of N bytes leaves the child N more bytes to allocate.
POSIX only.

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


def mapped_bytes() -> int:
    """Address space this process maps now (``VmSize``), 0 where /proc does not say."""
    try:
        for line in open("/proc/self/status").read().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _child(fn: Callable[[], object], write: int, limit: int) -> None:
    """Run ``fn`` under ``limit`` bytes of address space and write the JSON result."""
    code = 0
    try:
        _one_thread()
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


def _read(read: int, pid: int, deadline: float) -> tuple[bytes, bool]:
    """Everything the child writes until it closes the pipe; True when it ran past
    ``deadline`` (it is killed then)."""
    chunks: list[bytes] = []
    with os.fdopen(read, "rb") as f:
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                return b"".join(chunks), True
            ready, _, _ = select.select([f], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(f.fileno(), 1 << 16)
                if not chunk:
                    return b"".join(chunks), False
                chunks.append(chunk)


def run_limited(fn: Callable[[], object], *, memory_bytes: int, timeout_s: float) -> LimitedResult:
    """``fn()`` in a forked child that may allocate ``memory_bytes`` more address space and run
    ``timeout_s`` seconds; ``fn`` must return something JSON can encode. Never raises for what
    happens in the child."""
    read, write = os.pipe()
    start = time.perf_counter()
    limit = mapped_bytes() + memory_bytes
    pid = os.fork()
    if pid == 0:  # the child never returns from here
        os.close(read)
        _child(fn, write, limit)
    os.close(write)
    data, timed_out = _read(read, pid, start + timeout_s)
    _, status, usage = os.wait4(pid, 0)
    seconds, peak = time.perf_counter() - start, usage.ru_maxrss / 1024
    gb = memory_bytes / 2**30
    if timed_out:
        return LimitedResult(False, error=f"timeout after {timeout_s:.0f} s", seconds=seconds)
    if not data:  # killed by a signal, or died without a word (an allocation abort)
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        why = f"killed by signal {sig}" if sig else f"exited {os.WEXITSTATUS(status)}"
        return LimitedResult(False, error=f"{why} (memory limit {gb:.1f} GB?)", seconds=seconds)
    payload = json.loads(data)
    error = payload.get("error", "")
    if error == "out of memory":
        error = f"out of memory (limit {gb:.1f} GB)"
    return LimitedResult(payload["ok"], payload.get("value"), error, seconds, peak)
