"""Each measurement the agent makes runs in a forked child bounded in memory and time.

A client's model decides what ONNX Runtime allocates and how long it runs: a 228-byte model can
ask for gigabytes (``ConstantOfShape``, ``Expand``, ``Tile``) and a ``Loop`` can run for days. So
the agent never builds a session itself: :func:`run_bounded` forks a child
(:func:`search.core.limits.run_limited`) that works in its own scratch folder, leads its own
process group and dies with the agent. The child may allocate ``memory_bytes`` more address
space (``RLIMIT_AS``) where only CPU-side providers run; on GPU providers (CUDA reserves far more
address space than it touches) the resident memory of the child and the processes it starts is
checked every 0.1 s instead. Past ``seconds`` the group is killed. The agent answers:

===== =====================================================================================
413   the model needed more memory than ``--max-memory-mb`` allows
408   the measurement ran past ``--max-seconds`` and was stopped
422   a provider of the profile is missing here, or the session fell back from it
400   ONNX Runtime could not run the model on the given inputs (the client's doing)
507   the disk is full
500   the measuring process died some other way (the agent itself is fine)
===== =====================================================================================

Measurements run one at a time (latency is only comparable on a quiet machine): a request that
finds another running waits :data:`BUSY_WAIT_S` seconds for its turn, then is answered 503 with
``Retry-After`` (the seconds the running one may still take); the client retries.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search.core.errors import first_line
from search.core.limits import run_limited
from search.errors import ProviderError

BUSY_WAIT_S = 10.0
# Providers that reserve no more address space than they use: RLIMIT_AS bounds them.
ADDRESS_SPACE_OK = frozenset(
    {"CPUExecutionProvider", "XnnpackExecutionProvider", "ACLExecutionProvider",
     "ArmNNExecutionProvider", "DnnlExecutionProvider"}
)  # fmt: skip
# What ONNX Runtime and the C++ library say when an allocation fails under the limit.
_NO_MEMORY = ("failed to allocate", "bad_alloc", "bad allocation", "cannot allocate memory",
              "out of memory", "memoryerror")  # fmt: skip


@dataclass(frozen=True)
class Limits:
    """What one measurement may use: ``memory_bytes`` more than the agent maps, ``seconds``."""

    memory_bytes: int
    seconds: float

    def to_dict(self) -> dict[str, float]:
        return {"max_memory_mb": self.memory_bytes / 2**20, "max_seconds": self.seconds}


@dataclass
class Outcome:
    """The answer to one bounded measurement: its HTTP ``status`` and JSON ``body``, how long
    it ran and the child's peak resident memory."""

    status: int
    body: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    peak_mb: float = 0.0


def status_of(e: BaseException) -> int:
    """The HTTP status of a failure while measuring: 413 out of memory, 507 a full disk, 400
    what the request's content makes fail (a value, a type, a model ONNX Runtime cannot run),
    500 anything else."""
    text = f"{type(e).__name__}: {e}".lower()
    if isinstance(e, MemoryError) or any(word in text for word in _NO_MEMORY):
        return 413
    if isinstance(e, TimeoutError):  # the client stopped sending half-way
        return 408
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return 507
    if isinstance(e, ValueError | TypeError | KeyError | IndexError | AttributeError):
        return 400
    if type(e).__module__.startswith("onnxruntime"):  # InvalidArgument, Fail, InvalidGraph
        return 400
    return 500


def _in_child(work: Callable[[], dict[str, Any]], scratch: Path) -> dict[str, Any]:
    """Run ``work`` in ``scratch`` and turn what happens into (status, body)."""
    os.chdir(scratch)  # anything ONNX Runtime writes on its own lands here, and is removed
    # ONNX Runtime logs a failing kernel on stderr; the agent prints one line per refusal.
    log = os.open(scratch / "stderr.log", os.O_WRONLY | os.O_CREAT, 0o600)
    os.dup2(log, 2)
    os.close(log)
    try:
        return {"status": 200, "body": work()}
    except ProviderError as e:
        return {"status": 422, "body": {"error": str(e), "type": "ProviderError"}}
    except (Exception, MemoryError) as e:  # noqa: BLE001 - reported to the client
        status, text = status_of(e), str(e)
        at = text.lower().find("failed to allocate")  # ONNX Runtime's words, past its source path
        what = first_line(text[at:]) if status == 413 and at >= 0 else first_line(e)
        return {"status": status, "body": {"error": f"{type(e).__name__}: {what}"}}


def run_bounded(
    work: Callable[[], dict[str, Any]], *, limits: Limits, scratch: Path, providers: list[str]
) -> Outcome:
    """``work()`` (JSON-ready result) in a child bounded by ``limits``, working in ``scratch``
    on ``providers``; never raises for what happens in the child."""
    cpu_only = set(providers) <= ADDRESS_SPACE_OK
    base = _resident_self()
    result = run_limited(
        lambda: _in_child(work, scratch),
        memory_bytes=limits.memory_bytes if cpu_only else None,
        resident_bytes=None if cpu_only else base + limits.memory_bytes,
        timeout_s=limits.seconds,
        isolate=True,
    )
    took = {"seconds": round(result.seconds, 3), "peak_mb": round(result.peak_rss_mb, 1)}
    mb = limits.memory_bytes / 2**20
    if result.ok:
        status, body = result.value["status"], result.value["body"]
        if status == 413:
            body["error"] = (
                f"over the agent's memory limit of {mb:.0f} MiB (--max-memory-mb): {body['error']}"
            )
    elif result.limit == "memory" or "out of memory" in result.error:
        status = 413
        body = {"error": f"the measurement needed more than the agent's {mb:.0f} MiB "
                f"(--max-memory-mb) and was stopped"}  # fmt: skip
    elif result.limit == "time":
        status = 408
        body = {"error": f"the measurement ran past the agent's limit of {limits.seconds:g} s "
                "(--max-seconds) and was stopped"}  # fmt: skip
    else:
        status = 500
        body = {"error": f"the measuring process died ({result.error}); the agent is fine"}
    if status != 200:
        body.update(took, limits=limits.to_dict())
    return Outcome(status, body, result.seconds, result.peak_rss_mb)


def _resident_self() -> int:
    """This process's resident memory (a forked child starts with it counted as its own)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0
