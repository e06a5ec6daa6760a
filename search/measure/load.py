"""Was the machine busy while we measured? Load average and other processes' CPU time.

Latency measured while other processes use the cores is slower and noisier (a float baseline
read 2.89 ms, cv 76 %, under load against 0.94 ms quiet). :class:`LoadWatch` names such a
window: around a measurement it reads ``/proc/stat`` (CPU time of all processes on all cores)
and this process's own CPU time (:func:`os.times`, all its threads); what the cores spent on
anything else, as a share of ``wall time x cores``, is ``other_cpu``. The 1-minute load average
(``/proc/loadavg``) is recorded beside it; it lags by about a minute, so it alone cannot say
what happened during a one-second window. Where ``/proc`` is missing (not Linux), nothing is
known and nothing is claimed: ``other_cpu`` and ``busy`` are None.

Example:
    >>> with LoadWatch(threshold=0.10) as watch:
    ...     pass  # measure here
    >>> watch.load.busy in (True, False, None)
    True
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

_STAT = Path("/proc/stat")
MIN_WINDOW_S = 0.25
_LOADAVG = Path("/proc/loadavg")


@dataclass(frozen=True)
class Load:
    """The machine's load during one measurement window.

    Attributes:
        loadavg: 1-, 5- and 15-minute load averages at the end of the window (None: unknown).
        cores: Cores ``/proc/stat`` accounts for.
        seconds: Wall time of the window (at least ``MIN_WINDOW_S``).
        other_cpu: Share (0-1) of all cores' time that other processes used in the window.
        busy: ``other_cpu`` above the threshold (None: unknown).
        threshold: The threshold ``busy`` was judged by.
    """

    loadavg: tuple[float, float, float] | None
    cores: int
    seconds: float
    other_cpu: float | None
    busy: bool | None
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["loadavg"] = list(self.loadavg) if self.loadavg else None
        return out

    def describe(self) -> str:
        """One line: ``load average 1.52 on 2 cores; other processes used 48 % of the CPU``."""
        avg = f"load average {self.loadavg[0]:.2f}" if self.loadavg else "load average unknown"
        other = (
            f"other processes used {self.other_cpu:.0%} of the CPU time"
            if self.other_cpu is not None
            else "other processes' CPU time unknown"
        )
        return f"{avg} on {self.cores} cores; {other}"


def _busy_seconds() -> tuple[float, int] | None:
    """CPU seconds all processes have spent on all cores since boot, and the core count."""
    try:
        lines = _STAT.read_text().splitlines()
    except OSError:
        return None
    fields = lines[0].split()
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal (guest time is already in user).
    ticks = [int(v) for v in fields[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    cores = sum(1 for line in lines if line.startswith("cpu") and line[3:4].isdigit())
    return busy / os.sysconf("SC_CLK_TCK"), max(cores, 1)


def loadavg() -> tuple[float, float, float] | None:
    """The 1-, 5- and 15-minute load averages, or None where ``/proc/loadavg`` is missing."""
    try:
        a, b, c = _LOADAVG.read_text().split()[:3]
    except (OSError, ValueError):
        return None
    return float(a), float(b), float(c)


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


class LoadWatch:
    """Context manager that measures the machine's load while its body runs; read ``.load``.

    Args:
        threshold: ``busy`` when other processes used more than this share of all cores' time.
    """

    def __init__(self, *, threshold: float = 0.10) -> None:
        self.threshold = threshold
        self.load: Load | None = None

    def __enter__(self) -> LoadWatch:
        self._start = (time.perf_counter(), _busy_seconds(), _own_seconds())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        wall0, busy0, own0 = self._start
        # /proc/stat counts 10 ms ticks: too coarse to judge a shorter window, so a short one is
        # stretched by sleeping (other processes' use goes on being counted; ours stops).
        time.sleep(max(MIN_WINDOW_S - (time.perf_counter() - wall0), 0.0))
        wall, busy1, own = time.perf_counter() - wall0, _busy_seconds(), _own_seconds() - own0
        other = busy = None
        cores = busy1[1] if busy1 else os.cpu_count() or 1
        if busy0 is not None and busy1 is not None and wall > 0:
            # Clock ticks are coarse (10 ms): a short window can read slightly below zero.
            other = min(max((busy1[0] - busy0[0] - own) / (wall * cores), 0.0), 1.0)
            busy = other > self.threshold
        self.load = Load(
            loadavg=loadavg(),
            cores=cores,
            seconds=round(wall, 3),
            other_cpu=None if other is None else round(other, 3),
            busy=busy,
            threshold=self.threshold,
        )


def describe_load(load: dict[str, Any]) -> str:
    """:meth:`Load.describe` of a recorded ``Load.to_dict()`` (what a record keeps)."""
    avg = load.get("loadavg")
    return Load(
        loadavg=tuple(avg) if avg else None,
        cores=int(load.get("cores") or 0),
        seconds=float(load.get("seconds") or 0.0),
        other_cpu=load.get("other_cpu"),
        busy=load.get("busy"),
        threshold=float(load.get("threshold") or 0.0),
    ).describe()


@dataclass(frozen=True)
class QuietWait:
    """What :func:`wait_for_quiet` found: whether a quiet window came, after how long, and the
    share of the cores other processes used in the last window (None: unknown)."""

    quiet: bool | None
    waited_s: float
    other_cpu: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wait_for_quiet(*, threshold: float, max_wait_s: float, window_s: float = 1.0) -> QuietWait:
    """Sleep in windows of ``window_s`` until one in which other processes used at most
    ``threshold`` of all cores' time, or until ``max_wait_s`` have passed.

    The co-runners that move a paired ratio (training, streaming memory) show as other
    processes' CPU time; where ``/proc`` is missing nothing is known and nothing is waited for.
    """
    start = time.perf_counter()
    last: Load | None = None
    while True:
        with LoadWatch(threshold=threshold) as watch:
            time.sleep(window_s)
        last = watch.load
        assert last is not None
        waited = time.perf_counter() - start
        if last.busy is None or not last.busy or waited >= max_wait_s:
            quiet = None if last.busy is None else not last.busy
            return QuietWait(quiet=quiet, waited_s=round(waited, 1), other_cpu=last.other_cpu)
