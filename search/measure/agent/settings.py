"""How the agent is set up: :class:`AgentSettings`, every number checked against its bounds."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from search.errors import AgentError
from search.measure.agent.limits import check_bound, default_memory_mb
from search.measure.agent.sandbox import Limits
from search.measure.agent.token import check_token


@dataclass(frozen=True)
class AgentSettings:
    """How the agent serves: address, token, where uploads live and how much they may take,
    what one measurement may use, and how many connections it holds. Every number is checked
    against :data:`~search.measure.agent.limits.BOUNDS`."""

    token: str
    host: str = "127.0.0.1"
    port: int = 8765
    max_upload_bytes: int = 256 * 2**20
    work_dir: Path | None = None
    label: str = ""
    # A connection that sends nothing for this long is closed; more than max_connections at
    # once are answered 503, so idle sockets cannot tie up threads or descriptors.
    idle_timeout: float = 10.0
    max_connections: int = 32
    # What one measurement may allocate (beyond what the agent maps) and how long it may run.
    max_memory_bytes: int = field(default_factory=lambda: int(default_memory_mb() * 2**20))
    max_seconds: float = 600.0
    # The most the upload store may hold; idle blobs are evicted first (see store.py).
    max_store_bytes: int = 4096 * 2**20

    def __post_init__(self) -> None:
        check_token(self.token)
        check_bound("max_upload_mb", self.max_upload_bytes / 2**20)
        check_bound("max_memory_mb", self.max_memory_bytes / 2**20)
        check_bound("max_seconds", self.max_seconds)
        check_bound("max_store_mb", self.max_store_bytes / 2**20)
        check_bound("idle_timeout", self.idle_timeout)
        check_bound("max_connections", self.max_connections)
        if self.max_store_bytes < self.max_upload_bytes:
            raise AgentError(
                "--max-store-mb must be at least --max-upload-mb (the store must hold one upload)"
            )

    @property
    def limits(self) -> Limits:
        return Limits(memory_bytes=self.max_memory_bytes, seconds=self.max_seconds)
