"""How one worker runs: its threads, artifact store, heartbeat and grace period.

The heartbeat and the grace period have lower bounds because a live worker on a busy machine
is late with its heartbeats: its heartbeat thread waits for the interpreter lock, and every
database round trip of a beat waits again. Measured on 2 cores at load 10-25: single waits for
the lock of 0.5-1.5 s, beats up to 2.5 s late (``benchmarks/heartbeat_load.py``), and live
workers' trials failed as stale with ``--heartbeat 5 --grace 15``. A grace of at least
:data:`MIN_GRACE_S` seconds and :data:`GRACE_BEATS` heartbeats leaves room for that; a dead
worker's trial is then retried half a minute later at the soonest (docs/distributed.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from search.errors import SearchError

MIN_HEARTBEAT_S = 2  # below this, beats cost more than they tell
MAX_HEARTBEAT_S = 600
MIN_GRACE_S = 30  # a live worker's beats came up to a few seconds late at load 25 on 2 cores
MAX_GRACE_S = 86_400
GRACE_BEATS = 3  # a grace shorter than three heartbeats fails a worker for one late beat


def check_heartbeat(heartbeat_s: int, grace_s: int) -> None:
    """Refuse a heartbeat or grace period outside the bounds (see the module docstring).

    Raises:
        SearchError: one line naming the flag, the bound and the value.
    """
    if not MIN_HEARTBEAT_S <= heartbeat_s <= MAX_HEARTBEAT_S:
        raise SearchError(
            f"--heartbeat must lie in [{MIN_HEARTBEAT_S}, {MAX_HEARTBEAT_S}] seconds, but got "
            f"{heartbeat_s}"
        )
    low = max(MIN_GRACE_S, GRACE_BEATS * heartbeat_s)
    if not low <= grace_s <= MAX_GRACE_S:
        raise SearchError(
            f"--grace must lie in [{low}, {MAX_GRACE_S}] seconds with --heartbeat {heartbeat_s} "
            f"(at least {MIN_GRACE_S} s and {GRACE_BEATS} heartbeats, so a busy machine's late "
            f"heartbeats do not make a live worker look dead), but got {grace_s}"
        )


@dataclass(frozen=True)
class WorkerSettings:
    """How one worker runs: threads, where trial files go, heartbeat and grace period.

    Attributes:
        threads: torch threads (None: ``$OMP_NUM_THREADS``, else every CPU this process may use).
        artifacts: Artifact store: a folder (a shared mount for several machines) or
            ``s3://bucket``; None: the study's recorded store, else ``results/<study>/store``.
        heartbeat_s: Seconds between heartbeats of a running trial.
        grace_s: A RUNNING trial without a heartbeat for this long is failed and retried.

    Raises:
        SearchError: heartbeat or grace outside their bounds (:func:`check_heartbeat`).
    """

    threads: int | None = None
    artifacts: str | None = None
    heartbeat_s: int = 10
    grace_s: int = 60

    def __post_init__(self) -> None:
        check_heartbeat(self.heartbeat_s, self.grace_s)
