"""How one worker runs: its threads, artifact store, heartbeat and grace period."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerSettings:
    """How one worker runs: threads, where trial files go, heartbeat and grace period.

    Attributes:
        threads: torch threads (None: ``$OMP_NUM_THREADS``, else every CPU this process may use).
        artifacts: Artifact store: a folder (a shared mount for several machines) or
            ``s3://bucket``; None: the study's recorded store, else ``results/<study>/store``.
        heartbeat_s: Seconds between heartbeats of a running trial.
        grace_s: A RUNNING trial without a heartbeat for this long is failed and retried.
    """

    threads: int | None = None
    artifacts: str | None = None
    heartbeat_s: int = 10
    grace_s: int = 60
