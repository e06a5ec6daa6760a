"""How the agent keeps careless or hostile connections from tying it up.

- Every read waits at most ``idle_timeout`` seconds, and the request line plus headers (the
  head) must arrive within that time too, so a client that sends nothing, or trickles a byte at
  a time, is cut off.
- Upload bodies are read into memory, at most ``upload_budget`` bytes of them at once (twice
  the largest upload); another upload meanwhile is answered 503 and retried by the client.
- At most ``max_connections`` are served at once. A new connection beyond that takes the place
  of the oldest one still sending its head (an idle socket never blocks a real client); when
  every slot is busy with real requests it is answered 503.
- A client that goes away mid-answer is not the agent's failure: no traceback on its console.

:data:`BOUNDS` are the ranges of the agent's numeric settings (flags and :class:`AgentSettings
<search.measure.agent.server.AgentSettings>` alike): a value outside is one line, never a
server that cannot work (a negative timeout) or cannot be bounded (a memory limit above the
machine's memory).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

from search.errors import AgentError


def physical_mb() -> float:
    """This machine's memory in MiB (0 where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20
    except (ValueError, OSError):
        return 0.0


def default_memory_mb() -> float:
    """What one measurement may allocate by default: half the machine's memory, at most 4 GiB
    (enough for the default 256 MiB upload: a float model's session peaks near 4x its file)."""
    return min(4096.0, physical_mb() / 2) if physical_mb() else 4096.0


# name -> (lowest, highest, unit); highest None: the machine's memory.
BOUNDS: dict[str, tuple[float, float | None, str]] = {
    "max_upload_mb": (0.001, 16384, "MiB"),
    "max_memory_mb": (64, None, "MiB"),
    "max_seconds": (1, 86400, "s"),
    "max_store_mb": (1, 10**8, "MiB"),
    "idle_timeout": (0.1, 3600, "s"),
    "max_connections": (1, 1024, ""),
}


def check_bound(name: str, value: float) -> float:
    """``value`` if it lies within :data:`BOUNDS` ``[name]``, else one line naming the range.

    Raises:
        AgentError: out of range, or not a finite number.
    """
    low, high, unit = BOUNDS[name]
    high = high if high is not None else max(low, physical_mb())
    if not (isinstance(value, int | float) and low <= value <= high):  # NaN fails both
        flag = "--" + name.replace("_", "-")
        raise AgentError(
            f"{flag} must lie in [{low:g}, {high:g}]{' ' + unit if unit else ''}, got {value!r}"
        )
    return value


BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Content-Length: 42\r\nConnection: close\r\n\r\n"
    b'{"error": "too many connections; retry"}\n'
)
# What socketserver hands a server (its typeshed types): a TCP server's request is the
# connection's socket (a datagram and its socket only on UDP servers); the client's address is
# (host, port), plus flow info and scope id on IPv6.
_Request = socket.socket | tuple[bytes, socket.socket]
_Address = tuple[str | int, ...]


class ConnectionLimits:
    """Mixin for a ``ThreadingHTTPServer`` (listed first); needs ``settings.max_connections``."""

    daemon_threads = True
    # A burst of connections waits in the listen queue to be served or answered at once,
    # instead of the kernel holding it back for seconds (the default queue holds 5).
    request_queue_size = 128
    settings: Any
    counts: dict[str, int]

    def init_limits(self, max_connections: int, *, upload_budget: int) -> None:
        self.slots = threading.BoundedSemaphore(max_connections)
        self.upload_budget = upload_budget
        self.receiving = 0  # bytes of upload bodies being read now
        self.receiving_lock = threading.Lock()
        self.heads: dict[
            socket.socket, float
        ] = {}  # connections still sending their head -> since
        self.heads_lock = threading.Lock()

    def handle_error(self, request: _Request, client_address: _Address) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, OSError):
            print(f"agent: error serving {client_address[0]}: {error!r}", flush=True)

    @contextlib.contextmanager
    def receive(self, length: int) -> Iterator[bool]:
        """Room in memory for an upload body of ``length`` bytes: yields False when bodies
        being read already hold ``upload_budget`` (the caller answers 503), so parallel
        uploads cannot exhaust the agent's memory."""
        with self.receiving_lock:
            room = not self.receiving or self.receiving + length <= self.upload_budget
            self.receiving += length if room else 0
        try:
            yield room
        finally:
            if room:
                with self.receiving_lock:
                    self.receiving -= length

    def _evict_idlest(self) -> bool:
        with self.heads_lock:
            if not self.heads:
                return False
            victim = min(self.heads, key=self.heads.__getitem__)
            del self.heads[victim]
        with contextlib.suppress(OSError):
            victim.shutdown(socket.SHUT_RDWR)
        return True

    def process_request(self, request: _Request, client_address: _Address) -> None:
        free = self.slots.acquire(blocking=False)
        if not free and self._evict_idlest():
            free = self.slots.acquire(timeout=1.0)  # the evicted handler ends at once
        if not free:  # every slot busy with a real request: answer from this thread, close
            self.counts["refused"] += 1
            with contextlib.suppress(OSError):
                conn = cast(socket.socket, request)  # a TCP server: the request is its socket
                conn.settimeout(1.0)
                conn.sendall(BUSY)
            self.shutdown_request(request)  # type: ignore[attr-defined]
            return
        try:
            super().process_request(request, client_address)  # type: ignore[misc]
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: _Request, client_address: _Address) -> None:
        try:
            super().process_request_thread(request, client_address)  # type: ignore[misc]
        finally:
            with self.heads_lock:
                self.heads.pop(cast(socket.socket, request), None)
            self.slots.release()


class HeadDeadline:
    """Mixin for a ``BaseHTTPRequestHandler`` (listed first): the idle timeout on every read and
    on the whole head; ``head_done()`` lifts the deadline once the head is in."""

    server: Any
    connection: Any

    @property
    def timeout(self) -> float:  # read by StreamRequestHandler.setup for every socket read
        return self.server.settings.idle_timeout

    def handle_one_request(self) -> None:
        self.late = False
        with self.server.heads_lock:
            self.server.heads[self.connection] = time.monotonic()
        self._deadline = threading.Timer(self.timeout, self._cut)
        self._deadline.daemon = True
        self._deadline.start()
        try:
            super().handle_one_request()  # type: ignore[misc]
        finally:
            self.head_done()

    def head_done(self) -> None:
        """The head is in: no deadline, and no longer the first to make room."""
        self._deadline.cancel()
        with self.server.heads_lock:
            self.server.heads.pop(self.connection, None)

    def _cut(self) -> None:
        self.late = True  # nothing is answered on a connection cut for being too slow
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
